"""One log line and the metrics of each finished operation, whichever entry point ran it.

Never the prompt or the document: counts, costs and names only (the input is logged, apart, only when
prompt logging is on).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from llm_gateway.errors import GatewayError
from llm_gateway.interfaces import RequestContext
from llm_gateway.models import Attempt, CompletionRequest, CompletionResult, Usage
from llm_gateway.observability import metrics as operator_metrics

# The provider routes and the operation their requests count under (dimension Operation).
OPERATION_ROUTES = {
    "/v1/chat/completions": "completion",
    "/v1/completions": "completion",
    "/v1/messages": "completion",
    "/v1/extractions": "extraction",
    "/v1/summaries": "summarization",
    "/v1/embeddings": "embeddings",
}


def completion(
    logger: Logger,
    metrics: Metrics,
    result: CompletionResult,
    *,
    tenant: str,
    ctx: RequestContext | None = None,
    cacheable: bool = True,
) -> None:
    """``cacheable``: whether the request could have been a cache hit (:func:`looks_up_cache`); only those
    count as cache hits or misses."""
    logger.info(
        "completion",
        tenant=tenant,
        provider=result.provider,
        model=result.model,
        input_tokens=result.usage.input_tokens,
        output_tokens=result.usage.output_tokens,
        cost_usd=result.cost_usd,
        latency_ms=result.latency_ms,
        attempts=len(result.attempts),
        cached=result.cached,
    )
    metrics.add_metric(name="Completions", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="FallbackAttempts", unit=MetricUnit.Count, value=len(result.attempts) - 1)
    count(
        "completion",
        ctx,
        tenant,
        {"provider": result.provider, "model": result.model, "cost_usd": result.cost_usd}
        | {"latency_ms": result.latency_ms, "cached": result.cached if cacheable else None},
        attempts=result.attempts,
        usage=result.usage,
    )


def extraction(
    logger: Logger, metrics: Metrics, result: Mapping[str, Any], *, tenant: str, ctx: RequestContext | None = None
) -> None:
    logger.info(
        "extraction",
        tenant=tenant,
        schema=result["schema"],
        provider=result["provider"],
        model=result["model"],
        asks=result["asks"],
        attempts=len(result["attempts"]),
        cost_usd=result["cost_usd"],
        cached=result["cached"],
    )
    metrics.add_metric(name="Extractions", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="ExtractionReasks", unit=MetricUnit.Count, value=result["asks"] - 1)
    count("extraction", ctx, tenant, result)


def summary(
    logger: Logger, metrics: Metrics, result: Mapping[str, Any], *, tenant: str, ctx: RequestContext | None = None
) -> None:
    logger.info(
        "summary",
        tenant=tenant,
        strategy=result["strategy"],
        degraded=result["degraded"],
        chunks=result["chunks"],
        calls=result["calls"],
        cached_calls=result["cached_calls"],
        provider=result["provider"],
        model=result["model"],
        attempts=len(result["attempts"]),
        cost_usd=result["cost_usd"],
        latency_ms=result["latency_ms"],
    )
    metrics.add_metric(name="Summaries", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="SummaryChunks", unit=MetricUnit.Count, value=result["chunks"])
    count("summarization", ctx, tenant, {**result, "cached": None})
    if result["degraded"]:
        metrics.add_metric(name="DegradedSummaries", unit=MetricUnit.Count, value=1)


def count(
    operation: str,
    ctx: RequestContext | None,
    tenant: str,
    result: Mapping[str, Any],
    *,
    attempts: Sequence[Attempt | Mapping[str, Any]] | None = None,
    usage: Usage | Mapping[str, Any] | None = None,
) -> None:
    """The operator metrics of a finished operation (:mod:`llm_gateway.observability.metrics`); a result
    they cannot read is logged at debug level, never raised: the answer matters more than its metric."""
    try:
        operator_metrics.request(outcome(operation, ctx, tenant, result, attempts=attempts, usage=usage))
    except Exception:
        logging.getLogger("llm_gateway").debug("operation metrics failed", exc_info=True)


def outcome(
    operation: str,
    ctx: RequestContext | None,
    tenant: str,
    result: Mapping[str, Any],
    *,
    attempts: Sequence[Attempt | Mapping[str, Any]] | None = None,
    usage: Usage | Mapping[str, Any] | None = None,
) -> operator_metrics.RequestOutcome:
    """A finished operation as the operator metrics see it (results are objects or their JSON form)."""
    found = result.get("usage") if usage is None else usage
    spent = found if isinstance(found, Usage) else Usage.model_validate(found or {})
    cached = result.get("cached")
    return operator_metrics.RequestOutcome(
        operation=operation,
        tenant=tenant,
        key_id=ctx.tags.get("key_id", "") if ctx is not None else "",
        request_id=ctx.request_id if ctx is not None else "",
        attempts=[
            a if isinstance(a, Attempt) else Attempt.model_validate(a)
            for a in (result.get("attempts") or () if attempts is None else attempts)
        ],
        latency_ms=result.get("latency_ms"),
        cost_usd=float(result.get("cost_usd") or 0.0),
        input_tokens=spent.input_tokens,
        output_tokens=spent.output_tokens,
        cached=cached,
        saved_usd=saved_by_cache(result.get("model"), spent) if cached else 0.0,
        provider=result.get("provider"),
        model=result.get("model"),
    )


def looks_up_cache(request: CompletionRequest) -> bool:
    """Whether the gateway looks this request up in the cache (deterministic or forced, not ``no_cache``)."""
    from llm_gateway.accounting.cache import is_cacheable_request

    return is_cacheable_request(request) and not (request.cache and request.cache.no_cache)


def failure(operation: str, err: GatewayError, *, tenant: str = "", key_id: str = "", request_id: str = "") -> None:
    """An operation that ended in an error answer: counted by code, with the attempts it made."""
    attempts = [a for a in err.attempts if isinstance(a, Attempt)]
    spent = sum((a.usage for a in attempts), Usage())
    ended = operator_metrics.RequestOutcome(
        operation,
        tenant,
        key_id,
        request_id,
        attempts=attempts,
        cost_usd=round(sum(a.cost_usd for a in attempts), 10),
        input_tokens=spent.input_tokens,
        output_tokens=spent.output_tokens,
        error_code=err.code,
    )
    operator_metrics.request(ended)


def saved_by_cache(model: str | None, usage: Usage) -> float:
    """What a cache hit would have cost: its usage at the catalog's prices (a price change is a new
    catalog version, so a hit is always priced as it was stored)."""
    from llm_gateway.wiring import services

    spec = services().catalog.find(model) if model else None
    return spec.cost(usage) if spec is not None else 0.0


def result_headers(result: Mapping[str, Any]) -> dict[str, str]:
    """The ``x-gateway-*`` headers of an answer: who answered, at what cost, after how many attempts."""
    headers = {
        "x-gateway-provider": result.get("provider") or "none",
        "x-gateway-model": result.get("model") or "none",
        "x-gateway-cost-usd": f"{result.get('cost_usd') or 0.0:.10f}",
        "x-gateway-attempts": str(len(result.get("attempts") or ())),
    }
    if "cached" in result:
        headers["x-gateway-cache"] = "hit" if result["cached"] else "miss"
    if "strategy" in result:
        headers["x-gateway-strategy"] = str(result["strategy"])
        headers["x-gateway-degraded"] = "true" if result.get("degraded") else "false"
    return headers


def completion_headers(result: CompletionResult) -> dict[str, str]:
    fields = ("provider", "model", "cost_usd", "cached", "attempts")
    return result_headers({name: getattr(result, name) for name in fields})
