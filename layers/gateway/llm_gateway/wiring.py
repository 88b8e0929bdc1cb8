"""Composition root: build the gateway from settings (providers, router, retry policy) and keep it per process.

Provider keys may change under a warm process (a key filled into the secret after a cold start, a
rotation): every call checks them again, which costs a dict lookup while Powertools' cache holds them
(``credentials.KEY_CACHE_SECONDS``), and the providers and router are rebuilt when they changed. The
cache, ledger, budgets and breaker are kept across such rebuilds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx

from llm_gateway.accounting.build import Accounting, build_accounting
from llm_gateway.catalog import Catalog, default_catalog
from llm_gateway.config import Settings, settings
from llm_gateway.errors import ProviderKeysUnavailableError
from llm_gateway.gateway import Gateway
from llm_gateway.providers import PROVIDER_NAMES, Provider, adapter_class
from llm_gateway.providers.credentials import provider_key
from llm_gateway.routing.retry import RetryPolicy
from llm_gateway.routing.router import Router
from llm_gateway.runtime import http_client

log = logging.getLogger("llm_gateway.wiring")

# After a failed key refresh, a warm gateway keeps its last keys this long before asking again, so
# that a Secrets Manager outage costs one slow fetch per interval rather than one per request.
KEY_RETRY_S = 30.0

ProviderKeys = Mapping[str, str | None]


def provider_keys(config: Settings) -> dict[str, str | None]:
    """Each callable provider's key now (environment first, then SSM, then the secret; cached remotely)."""
    try:
        return {name: provider_key(config, name) for name in PROVIDER_NAMES if config.base_url(name) is not None}
    except Exception as exc:  # Powertools' GetSecretError/GetParameterError, timeouts, a secret that is not JSON
        log.warning("provider keys could not be read", extra={"error_type": type(exc).__name__})
        raise ProviderKeysUnavailableError(
            "the provider keys could not be read from Secrets Manager or SSM; retry shortly"
        ) from None


def configured_providers(config: Settings, keys: ProviderKeys | None = None) -> dict[str, Provider]:
    """Providers that can be called: a key is set (or, for a self-hosted server, a base URL)."""
    keys = provider_keys(config) if keys is None else keys
    providers: dict[str, Provider] = {}
    for name in PROVIDER_NAMES:
        base_url = config.base_url(name)
        if base_url is None:
            continue
        key = keys.get(name)
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
    keys: ProviderKeys | None = None,
    accounting: Accounting | None = None,
) -> Gateway:
    catalog = catalog or default_catalog()
    providers = configured_providers(config, keys)
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
    # Cache, ledger, budgets, breaker: on when configured.
    accounting = accounting or build_accounting(config, catalog)
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


@dataclass(frozen=True)
class _Built:
    config: Settings
    keys: ProviderKeys
    accounting: Accounting
    gateway: Gateway


_lock = threading.Lock()
_built: _Built | None = None
_quiet_until = 0.0  # monotonic time before which a failed key refresh is not retried


def default_gateway() -> Gateway:
    """The process-wide gateway, built on first use and rebuilt when the provider keys change.

    Raises ProviderKeysUnavailableError (503, retryable) when the keys cannot be read and no gateway
    was built yet; a warm gateway keeps its last keys through a failed refresh.
    """
    global _built, _quiet_until
    config = settings()
    with _lock:
        current = _built if _built is not None and _built.config is config else None
        if current is not None and time.monotonic() < _quiet_until:
            return current.gateway
        try:
            keys = provider_keys(config)
        except ProviderKeysUnavailableError:
            if current is None:
                raise
            _quiet_until = time.monotonic() + KEY_RETRY_S
            return current.gateway
        if current is not None and current.keys == keys:
            return current.gateway
        accounting = current.accounting if current is not None else build_accounting(config, default_catalog())
        gateway = build_gateway(config, keys=keys, accounting=accounting)
        if current is not None:
            log.info("provider keys changed; providers rebuilt", extra={"providers": sorted(gateway.providers)})
        _built = _Built(config=config, keys=keys, accounting=accounting, gateway=gateway)
        return gateway


def reset() -> None:
    """Forget cached settings and gateway (tests and the local harness change the environment)."""
    import sys

    from llm_gateway import aws, catalog, config, resources

    global _built, _quiet_until
    with _lock:
        _built = None
        _quiet_until = 0.0
    config.settings.cache_clear()
    catalog.default_catalog.cache_clear()
    resources.shared_dir.cache_clear()
    aws.reset_clients()  # AWS_ENDPOINT_URL and credentials may have changed
    if (momento := sys.modules.get("llm_gateway.accounting.cache.momento")) is not None:
        momento.reset_clients()
