"""Composition root: build the gateway once per process from settings (providers, router, retry policy)."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import httpx

from .accounting import build_accounting
from .catalog import Catalog, default_catalog
from .config import Settings, settings
from .credentials import provider_key
from .gateway import Gateway
from .providers import PROVIDER_NAMES, Provider, adapter_class
from .retry import RetryPolicy
from .routing import Router
from .runtime import http_client


def configured_providers(config: Settings) -> dict[str, Provider]:
    """Providers that can be called: a key is set (or, for a self-hosted server, a base URL)."""
    providers: dict[str, Provider] = {}
    for name in PROVIDER_NAMES:
        base_url = config.base_url(name)
        if base_url is None:
            continue
        key = provider_key(config, name)
        if key is None and name != "openai_compatible":
            continue
        providers[name] = adapter_class(name)(
            base_url=base_url, api_key=key, connect_timeout_s=config.connect_timeout_s
        )
    return providers


def build_gateway(
    config: Settings,
    *,
    catalog: Catalog | None = None,
    client: Callable[[], httpx.AsyncClient] = http_client,
    retry: RetryPolicy | None = None,
) -> Gateway:
    catalog = catalog or default_catalog()
    providers = configured_providers(config)
    router = Router(
        catalog,
        providers.keys(),
        default_tier=config.default_tier,
        default_max_tokens=config.default_max_tokens,
        auto_fallback=config.auto_fallback,
    )
    retry = retry or RetryPolicy(
        max_attempts=config.max_attempts_per_model,
        base_delay_s=config.backoff_base_s,
        max_delay_s=config.backoff_max_s,
        max_retry_after_s=config.max_retry_after_s,
    )
    accounting = build_accounting(config, catalog)  # cache, ledger, budgets, breaker: on when configured
    return Gateway(
        catalog=catalog,
        router=router,
        providers=providers,
        retry=retry,
        client=client,
        request_timeout_s=config.request_timeout_s,
        cache=accounting.cache,
        usage=accounting.usage,
        budget=accounting.budget,
        breaker=accounting.breaker,
    )


@cache
def default_gateway() -> Gateway:
    """The process-wide gateway, built on first use (keys fetched then, and cached)."""
    return build_gateway(settings())


def reset() -> None:
    """Forget cached settings and gateway (tests and the local harness change the environment)."""
    import sys

    from . import aws, catalog, config, resources

    default_gateway.cache_clear()
    config.settings.cache_clear()
    catalog.default_catalog.cache_clear()
    resources.shared_dir.cache_clear()
    aws.reset_clients()  # AWS_ENDPOINT_URL and credentials may have changed
    if (momento := sys.modules.get("llm_gateway.cache.momento")) is not None:
        momento.reset_clients()
