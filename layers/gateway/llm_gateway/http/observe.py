"""One log line and the metrics of each finished operation, whichever entry point ran it.

Never the prompt or the document: counts, costs and names only (the input is logged, apart, only when
prompt logging is on).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from llm_gateway.models import CompletionResult


def completion(logger: Logger, metrics: Metrics, result: CompletionResult, *, tenant: str) -> None:
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
    metrics.add_metric(name="CostUSD", unit=MetricUnit.NoUnit, value=result.cost_usd)
    metrics.add_metric(name="FallbackAttempts", unit=MetricUnit.Count, value=len(result.attempts) - 1)


def extraction(logger: Logger, metrics: Metrics, result: Mapping[str, Any], *, tenant: str) -> None:
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
    metrics.add_metric(name="CostUSD", unit=MetricUnit.NoUnit, value=result["cost_usd"])


def summary(logger: Logger, metrics: Metrics, result: Mapping[str, Any], *, tenant: str) -> None:
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
    metrics.add_metric(name="CostUSD", unit=MetricUnit.NoUnit, value=result["cost_usd"])
    if result["degraded"]:
        metrics.add_metric(name="DegradedSummaries", unit=MetricUnit.Count, value=1)


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
