"""Composition root: build the gateway from settings (deployments, router, retry policy) and keep it per process.

Each deployment (quotas/deployments.py) has its own adapter instance and key. Keys may change under a
warm process (a key filled into the secret after a cold start, a rotation): every call checks them
again, which costs a dict lookup while Powertools' cache holds them (``credentials.KEY_CACHE_SECONDS``),
and the deployments and router are rebuilt when any of them changed. The cache, ledger, budgets and
breaker are kept across such rebuilds.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from llm_gateway import aws
from llm_gateway.catalog import Catalog, default_catalog
from llm_gateway.config import Settings
from llm_gateway.errors import ProviderKeysUnavailableError
from llm_gateway.quotas.deployments import ConfiguredDeployments, build_deployments, read_deployment_keys

if TYPE_CHECKING:
    import httpx

    from llm_gateway.accounting.build import Accounting
    from llm_gateway.gateway import Gateway
    from llm_gateway.jobs.store import JobStore
    from llm_gateway.providers.base import Provider
    from llm_gateway.routing.retry import RetryPolicy

log = logging.getLogger("llm_gateway.wiring")

# After a failed key refresh, a warm gateway keeps its last keys this long before asking again, so
# that a Secrets Manager outage costs one slow fetch per interval rather than one per request.
KEY_RETRY_S = 30.0

ProviderKeys = Mapping[str, str | None]


def provider_keys(config: Settings) -> dict[str, str | None]:
    """Each deployment's key now, by deployment id (today's single-key setup: one per callable provider,
    by provider name; environment first, then SSM, then the secret; cached remotely)."""
    try:
        return read_deployment_keys(config)
    except Exception as exc:  # Powertools' GetSecretError/GetParameterError, timeouts, a secret that is not JSON
        log.warning("provider keys could not be read", extra={"error_type": type(exc).__name__})
        raise ProviderKeysUnavailableError(
            "the provider keys could not be read from Secrets Manager or SSM; retry shortly"
        ) from None


def configured_deployments(
    config: Settings, keys: ProviderKeys | None = None, *, catalog: Catalog | None = None
) -> ConfiguredDeployments:
    """Deployments that can be called: a key is set (or, for a self-hosted server, a base URL; for
    Bedrock, a region: the function's role signs its calls). One adapter instance per deployment."""
    keys = provider_keys(config) if keys is None else keys
    known = [spec.id for spec in catalog.models] if catalog is not None else []
    return build_deployments(config, keys, known_models=known)


def configured_providers(config: Settings, keys: ProviderKeys | None = None) -> dict[str, Provider]:
    """Provider -> the adapter of its first deployment, for every provider with at least one deployment."""
    return configured_deployments(config, keys).primary_adapters()


def build_gateway(
    config: Settings,
    *,
    catalog: Catalog | None = None,
    client: Callable[[], httpx.AsyncClient] | None = None,
    retry: RetryPolicy | None = None,
    keys: ProviderKeys | None = None,
    accounting: Accounting | None = None,
) -> Gateway:
    # Imported here: functions that never call a provider (the jobs API, key admin) skip them at cold start.
    from llm_gateway.accounting.build import build_accounting
    from llm_gateway.gateway import Gateway
    from llm_gateway.guardrails.build import build_pipeline
    from llm_gateway.keys.budget import KeyBudgetGuard
    from llm_gateway.routing.retry import RetryPolicy
    from llm_gateway.routing.router import Router
    from llm_gateway.runtime import http_client

    catalog = catalog or default_catalog()
    deployments = configured_deployments(config, keys, catalog=catalog)
    providers = deployments.primary_adapters()  # the providers with at least one deployment
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
        deployments=deployments,
        retry=retry,
        client=client or http_client,
        request_timeout_s=config.request_timeout_s,
        cache=accounting.cache,
        usage=accounting.usage,
        # Tenant budgets, plus a key's own budget when the request carries one (llm_gateway/keys/budget.py).
        budget=KeyBudgetGuard(accounting.budget) if accounting.budget is not None else None,
        breaker=accounting.breaker,
        quotas=accounting.quotas,
        stream_first_byte_timeout_s=config.stream_first_byte_timeout_s,
        stream_idle_timeout_s=config.stream_idle_timeout_s,
        guardrails=build_pipeline(config, client or http_client),
    )


class Services:
    """What the core needs, built from one ``Settings`` and passed down: the composition root.

    The edge builds one per process (:func:`services`) and hands it to the operations; tests build their
    own, with a fixed ``gateway`` or ``catalog`` where they swap a dependency. The gateway is rebuilt when
    the provider keys change; the cache, ledger, budgets and breaker survive such rebuilds.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        catalog: Catalog | None = None,
        gateway: Gateway | None = None,
        job_store: JobStore | None = None,
        read_keys: Callable[[Settings], ProviderKeys] = provider_keys,
    ) -> None:
        self.settings = settings
        self._catalog = catalog
        self._fixed_gateway = gateway
        self._read_keys = read_keys
        self._lock = threading.Lock()
        self._accounting: Accounting | None = None
        self._keys: ProviderKeys | None = None
        self._gateway: Gateway | None = None
        self._quiet_until = 0.0  # monotonic time before which a failed key refresh is not retried
        self._job_store = job_store

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = default_catalog()
        return self._catalog

    @property
    def jobs_configured(self) -> bool:
        """Whether this deployment has the job table and queue (async jobs, hand-offs, deferral)."""
        return self.settings.jobs_configured

    def job_store(self) -> JobStore:
        """The job store; NotConfiguredError (501) when this deployment has no jobs."""
        if self._job_store is None:
            from llm_gateway.jobs.store import store_for  # only functions that use jobs pay for the import

            self._job_store = store_for(self.settings)
        return self._job_store

    def gateway(self) -> Gateway:
        """The gateway, built on first use and rebuilt when the provider keys change.

        Raises ProviderKeysUnavailableError (503, retryable) when the keys cannot be read and no gateway
        was built yet; a warm gateway keeps its last keys through a failed refresh.
        """
        if self._fixed_gateway is not None:
            return self._fixed_gateway
        with self._lock:
            current = self._gateway
            if current is not None and time.monotonic() < self._quiet_until:
                return current
            try:
                keys = self._read_keys(self.settings)
            except ProviderKeysUnavailableError:
                if current is None:
                    raise
                self._quiet_until = time.monotonic() + KEY_RETRY_S
                return current
            if current is not None and self._keys == keys:
                return current
            if self._accounting is None:
                from llm_gateway.accounting.build import build_accounting

                self._accounting = build_accounting(self.settings, self.catalog)
            gateway = build_gateway(self.settings, catalog=self.catalog, keys=keys, accounting=self._accounting)
            if current is not None:
                log.info("provider keys changed; providers rebuilt", extra={"providers": sorted(gateway.providers)})
            self._keys, self._gateway = keys, gateway
            return gateway


_lock = threading.Lock()
_services: Services | None = None


def services() -> Services:
    """The process's services, from the environment on first use. For the edge (handlers) only: below it,
    everything receives what it needs."""
    global _services
    with _lock:
        if _services is None:
            _services = Services(Settings.from_env())
        return _services


def reset() -> None:
    """Forget the process's services and AWS clients (tests and the local harness change the environment)."""
    global _services
    with _lock:
        _services = None
    aws.reset_clients()  # AWS_ENDPOINT_URL and credentials may have changed
    if (momento := sys.modules.get("llm_gateway.accounting.cache.momento")) is not None:
        momento.reset_clients()
