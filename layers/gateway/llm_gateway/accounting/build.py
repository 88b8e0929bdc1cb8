"""Build the cache, usage ledger, budget guard and circuit breaker from settings (used by service.py).

Each is on only when its storage is configured: the cache with CACHE_TABLE (or Momento), the ledger,
budgets and breaker with USAGE_TABLE (breaker state in Momento when selected). Nothing here touches
the network; boto3 and momento are imported when first used.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llm_gateway.accounting.alerts import BudgetAlerts
from llm_gateway.accounting.budgets import DynamoDBBudgetGuard
from llm_gateway.accounting.cache import CacheBackend, CompletionCache
from llm_gateway.accounting.cache.dynamodb import DynamoDBCacheBackend
from llm_gateway.accounting.counters import Counters, powertools_sink
from llm_gateway.accounting.usage import UsageLedger
from llm_gateway.catalog import Catalog
from llm_gateway.config import Settings
from llm_gateway.providers.credentials import provider_key
from llm_gateway.routing.breaker import (
    BreakerStore,
    DynamoDBBreakerStore,
    SharedCircuitBreaker,
)

log = logging.getLogger("llm_gateway.accounting.build")

if TYPE_CHECKING:
    from momento import CacheClient

    from llm_gateway.quotas.tracker import QuotaTracker


@dataclass
class Accounting:
    cache: CompletionCache | None = None
    usage: UsageLedger | None = None
    budget: DynamoDBBudgetGuard | None = None
    breaker: SharedCircuitBreaker | None = None
    quotas: QuotaTracker | None = None


def build_accounting(config: Settings, catalog: Catalog) -> Accounting:
    counters = Counters(powertools_sink())
    usage = (
        UsageLedger(
            config.usage_table,
            queue_url=config.retry_queue_url,
            retention_days=config.usage_retention_days,
            counters=counters,
        )
        if config.usage_table
        else None
    )
    cache_backend = _cache_backend(config)
    cache = (
        CompletionCache(
            cache_backend,
            catalog_version=catalog.fingerprint,
            default_ttl_s=config.cache_ttl_s,
            timeout_s=config.cache_timeout_s,
            default_tier=config.default_tier,
            default_max_tokens=config.default_max_tokens,
            counters=counters,
            on_hit=usage.record_cache_hit if usage is not None else None,
        )
        if cache_backend is not None
        else None
    )
    budget = (
        DynamoDBBudgetGuard(
            config.usage_table,
            default_limit_usd=config.default_budget_usd,
            default_window=config.budget_window,
            fail_open=config.budget_fail_open,
            counters=counters,
            alerts=_alerts(config, counters),
        )
        if config.usage_table
        else None
    )
    breaker_store = _breaker_store(config)
    breaker = (
        SharedCircuitBreaker(
            breaker_store,
            failure_threshold=config.breaker_failures,
            window_s=config.breaker_window_s,
            cooldown_s=config.breaker_cooldown_s,
            auth_cooldown_s=config.breaker_auth_cooldown_s,
            view_stale_s=config.breaker_view_stale_s,
            counters=counters,
        )
        if breaker_store is not None
        else None
    )
    return Accounting(cache=cache, usage=usage, budget=budget, breaker=breaker, quotas=_quotas(config, counters))


def _quotas(config: Settings, counters: Counters) -> QuotaTracker | None:
    """The quota tracker: shared state in QUOTA_TABLE, else per instance (what the headers say)."""
    if config.quota_backend == "off":
        return None
    from llm_gateway.quotas.metrics import QuotaMetrics
    from llm_gateway.quotas.store import DynamoDBQuotaStore
    from llm_gateway.quotas.tracker import QuotaTracker

    return QuotaTracker(
        DynamoDBQuotaStore(config.quota_table) if config.quota_table else None,
        window_s=config.quota_window_s,
        view_ttl_s=config.quota_view_ttl_s,
        boundary_guard_s=config.quota_boundary_guard_s,
        metrics=QuotaMetrics(counters),
    )


def _alerts(config: Settings, counters: Counters) -> BudgetAlerts | None:
    if not (config.usage_table and config.alerts_topic_arn and config.budget_alert_thresholds):
        return None
    return BudgetAlerts(
        config.usage_table, config.alerts_topic_arn, thresholds=config.budget_alert_thresholds, counters=counters
    )


def _cache_backend(config: Settings) -> CacheBackend | None:
    if config.cache_backend == "momento":
        from llm_gateway.accounting.cache.momento import MomentoCacheBackend

        return MomentoCacheBackend(_momento(config), config.momento_cache_name)
    if config.cache_backend == "dynamodb" and config.cache_table:
        return DynamoDBCacheBackend(config.cache_table, overflow_bucket=config.documents_bucket)
    return None


def _breaker_store(config: Settings) -> BreakerStore | None:
    if config.breaker_backend == "momento":
        from llm_gateway.accounting.cache.momento import MomentoBreakerStore

        return MomentoBreakerStore(_momento(config), config.momento_cache_name)
    if config.breaker_backend == "dynamodb" and config.usage_table:
        return DynamoDBBreakerStore(config.usage_table)
    return None


def _momento(config: Settings) -> Callable[[], CacheClient]:
    """A factory: the Momento client (and its key) is created on first use, not while building."""

    def client() -> CacheClient:
        from llm_gateway.accounting.cache.momento import momento_client

        api_key = config.momento_api_key
        if api_key is None and not config.momento_local_endpoint:
            api_key = provider_key(config, "momento")
        return momento_client(
            api_key=api_key,
            endpoint=config.momento_endpoint,
            local_endpoint=config.momento_local_endpoint,
            default_ttl_s=config.cache_ttl_s,
        )

    return client
