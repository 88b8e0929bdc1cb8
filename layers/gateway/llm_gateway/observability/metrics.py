"""The gateway's operator metrics: one EMF document per finished request and one per provider attempt.

Powertools' shared ``Metrics`` object holds one dimension set per flush; these need several, so each
document is an ``EphemeralMetrics`` of its own, flushed at once, with a primary dimension set and extra
ones (``add_dimensions``). Every set starts with ``service`` (Powertools adds it to the primary set).

Dimension sets (what the dashboard and alarms in template.yaml name; tests/unit/test_dashboard.py checks):

* request:  [service, Operation] and [service]: Requests, Errors, Latency, CostUSD, InputTokens,
  OutputTokens, CacheHits, CacheMisses, CostSavedUSD, Fallbacks, Retries, BudgetRejections
* error:    [service, ErrorCode]: Errors
* attempt:  [service, Provider, Model] and [service, Provider]: ProviderCalls, ProviderErrors,
  ProviderLatency, InputTokens, OutputTokens, CostUSD
* stream:   [service, Provider]: TimeToFirstToken
* breaker:  [service, Provider] and [service]: BreakerOpened, BreakerOpenedAuth (core counters, see
  :mod:`llm_gateway.accounting.counters`; the others are [service] only)
* guardrail: [service, Check, Verdict]: GuardrailVerdicts (one per check, stage and model call; the stage
  is a property), from the edge's requests, jobs and uploads alike

Tenant, key and request id are EMF properties (metadata), never dimensions: Logs Insights groups by them,
CloudWatch does not bill a metric per tenant. Each document also carries ``record`` ("request",
"provider_call") and plain scalar copies of its values (``cost_usd``, ``latency_ms``, ``duration_ms``,
``error_code``): the saved Logs Insights queries read those rather than EMF's metric value arrays.
Nothing here may fail a request.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aws_lambda_powertools.metrics import EphemeralMetrics

    from llm_gateway.models import Attempt

log = logging.getLogger("llm_gateway")

SERVICE_DIMENSION = "service"
REQUEST_SETS = (("Operation",), ())
ERROR_SETS = (("ErrorCode",),)
ATTEMPT_SETS = (("Provider", "Model"), ("Provider",))
STREAM_SETS = (("Provider",),)
PROVIDER_COUNT_SETS = (("Provider",), ())
VERDICT_SETS = (("Check", "Verdict"),)
CALLED = frozenset({"success", "error", "truncated"})  # outcomes where a provider was actually called


@dataclass
class RequestOutcome:
    """What one finished request tells the metrics; ``error_code`` is None for a success."""

    operation: str
    tenant: str = ""
    key_id: str = ""
    request_id: str = ""
    attempts: Sequence[Attempt] = ()
    latency_ms: float | None = None
    cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cached: bool | None = None  # None: the operation has no cache lookup of its own
    saved_usd: float = 0.0
    error_code: str | None = None
    provider: str | None = None
    model: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def enabled() -> bool:
    return bool(os.environ.get("POWERTOOLS_METRICS_NAMESPACE"))


def request(outcome: RequestOutcome) -> None:
    """The request's document, its error's (by code) and one per provider attempt."""
    if not enabled():
        return
    try:
        _request(outcome)
    except Exception:  # metrics must never break a request
        log.debug("request metrics failed", exc_info=True)


def first_token(provider: str, model: str, ms: float, *, tenant: str = "", request_id: str = "") -> None:
    _single("TimeToFirstToken", "Milliseconds", ms, {"Provider": provider}, STREAM_SETS,
            tenant=tenant, request_id=request_id, Model=model)  # fmt: skip


def count(name: str, value: float, *, provider: str) -> None:
    """A core counter with a Provider dimension (breaker opens): [service, Provider] and [service]."""
    _single(name, "Count", value, {"Provider": provider}, PROVIDER_COUNT_SETS)


def guardrail_verdict(check: str, stage: str, verdict: str) -> None:
    """One guardrail verdict: a check on one stage (input, output) of one model call."""
    _single("GuardrailVerdicts", "Count", 1, {"Check": check, "Verdict": verdict}, VERDICT_SETS, stage=stage)


def _single(
    name: str,
    unit: str,
    value: float,
    dimensions: Mapping[str, str],
    sets: Sequence[Sequence[str]],
    **properties: Any,
) -> None:
    """One metric in a document of its own; never raises (a metric must not fail a request)."""
    if not enabled():
        return
    try:
        doc = _document(dimensions, sets)
        _properties(doc, **properties)
        doc.add_metric(name=name, unit=unit, value=value)
        doc.flush_metrics()
    except Exception:
        log.debug("metric %s failed", name, exc_info=True)


def _request(outcome: RequestOutcome) -> None:
    failed = outcome.error_code is not None
    called = [a for a in outcome.attempts if a.outcome in CALLED]
    models = {(a.provider, a.model) for a in called}
    doc = _document({"Operation": outcome.operation}, REQUEST_SETS)
    _properties(
        doc,
        record="request",
        tenant=outcome.tenant,
        key_id=outcome.key_id,
        request_id=outcome.request_id,
        provider=outcome.provider,
        model=outcome.model,
        error_code=outcome.error_code,
        cost_usd=outcome.cost_usd,
        latency_ms=outcome.latency_ms,
        **outcome.extra,
    )
    count = {
        "Requests": 1,
        "Errors": int(failed),
        "BudgetRejections": int(outcome.error_code == "budget_exceeded"),
        "Fallbacks": max(len(models) - 1, 0),
        "Retries": len(called) - len(models),
    }
    for name, value in count.items():
        doc.add_metric(name=name, unit="Count", value=value)
    # A failed request's attempts may have cost something too (a stream broken after it began).
    doc.add_metric(name="CostUSD", unit="None", value=outcome.cost_usd)
    doc.add_metric(name="InputTokens", unit="Count", value=outcome.input_tokens)
    doc.add_metric(name="OutputTokens", unit="Count", value=outcome.output_tokens)
    if not failed:
        if outcome.latency_ms is not None:
            doc.add_metric(name="Latency", unit="Milliseconds", value=outcome.latency_ms)
        if outcome.cached is not None:
            doc.add_metric(name="CacheHits", unit="Count", value=int(outcome.cached))
            doc.add_metric(name="CacheMisses", unit="Count", value=int(not outcome.cached))
            doc.add_metric(name="CostSavedUSD", unit="None", value=outcome.saved_usd)
    doc.flush_metrics()
    if outcome.error_code is not None:
        errors = _document({"ErrorCode": outcome.error_code}, ERROR_SETS)
        _properties(errors, tenant=outcome.tenant, key_id=outcome.key_id, Operation=outcome.operation)
        errors.add_metric(name="Errors", unit="Count", value=1)
        errors.flush_metrics()
    for attempt in called:
        _attempt(attempt, outcome)


def _attempt(attempt: Attempt, outcome: RequestOutcome) -> None:
    doc = _document({"Provider": attempt.provider, "Model": attempt.model}, ATTEMPT_SETS)
    _properties(
        doc,
        record="provider_call",
        tenant=outcome.tenant,
        key_id=outcome.key_id,
        request_id=outcome.request_id,
        Operation=outcome.operation,
        outcome=attempt.outcome,
        error_code=attempt.error_code,
        duration_ms=attempt.duration_ms,
        cost_usd=attempt.cost_usd,
    )
    doc.add_metric(name="ProviderCalls", unit="Count", value=1)
    doc.add_metric(name="ProviderErrors", unit="Count", value=int(attempt.outcome != "success"))
    doc.add_metric(name="ProviderLatency", unit="Milliseconds", value=attempt.duration_ms)
    doc.add_metric(name="InputTokens", unit="Count", value=attempt.usage.input_tokens)
    doc.add_metric(name="OutputTokens", unit="Count", value=attempt.usage.output_tokens)
    doc.add_metric(name="CostUSD", unit="None", value=attempt.cost_usd)
    doc.flush_metrics()


def _document(values: Mapping[str, str], sets: Sequence[Sequence[str]]) -> EphemeralMetrics:
    """A document whose primary set is the first of ``sets`` (plus ``service``) and the others extra."""
    from aws_lambda_powertools.metrics import EphemeralMetrics  # lazy: loaded on the first request

    doc = EphemeralMetrics()
    for name in sets[0]:
        doc.add_dimension(name=name, value=values[name] or "unknown")
    service = doc.service
    for extra in sets[1:]:
        dims = {name: values[name] or "unknown" for name in extra}
        if service:
            dims = {SERVICE_DIMENSION: str(service), **dims}
        if dims:
            doc.add_dimensions(**dims)
    return doc


def _properties(doc: EphemeralMetrics, **values: Any) -> None:
    for key, value in values.items():
        if value not in (None, ""):
            doc.add_metadata(key=key, value=value)
