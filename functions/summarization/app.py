"""Summarization function: POST /v1/summaries, S3 uploads under incoming/summarize/, direct invocation.

Thin on purpose: the ``summarization`` operation in the layer does the work. This module decodes the
three kinds of event, encodes the answers, and maps errors in one place each:

* HTTP: the summary (200), or the gateway's JSON error body. A document that cannot be summarized
  before API Gateway's 29-second limit becomes an async job (202 + ``Location: /v1/jobs/{id}``) when
  this deployment has the job queue; otherwise a 504 ``deadline_exceeded`` that is safe to retry.
  ``Prefer: respond-async`` and ``Prefer: defer-on-failure`` work as for every operation (job_http).
* S3: ``incoming/summarize/<path>`` gives ``results/summarize/<path>.json`` (the result with its
  metadata) and ``results/summarize/<path>.txt`` (the summary alone), or on any failure
  ``errors/summarize/<path>.json``; the uploaded document is never moved or deleted. A document too
  long for this invocation is summarized as far as time allows (those calls are cached), then handed to
  the job queue; the job continues from the cache and writes the same objects (``summary_uploads``).
* Direct invocation (Step Functions): the result, or an exception named after the error code
  (``RateLimitedError``, ...) for the state machine's Retry and Catch. A document too long for this
  invocation becomes a job, and the answer is a job reference instead of a summary:
  ``{"object": "job", "id", "status", "operation", "deferred_because"}`` (check ``object``; the sample
  state machine in template.yaml waits for the job). Without a job queue: ``DeadlineExceededError``.

Synchronous HTTP plans ahead (a document that cannot finish is refused before any call, for a quick
202); uploads and direct invocations are resumable (work until the time is up, then hand over).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from llm_gateway import after_response
from llm_gateway.errors import DeadlineExceededError, GatewayError, InvalidRequestError
from llm_gateway.http import framing as api
from llm_gateway.http import prefer as job_http
from llm_gateway.interfaces import RequestContext
from llm_gateway.jobs.submit import submit
from llm_gateway.operations import summary_uploads as uploads
from llm_gateway.operations.extraction import DOCUMENT_SCOPE_TAG
from llm_gateway.operations.summarization.operation import run_summary
from llm_gateway.runtime import run_sync
from llm_gateway.wiring import services

logger = Logger()
metrics = Metrics()
app = APIGatewayRestResolver()

OPERATION = "summarization"
INPUT_PREFIX = uploads.INPUT_PREFIX
S3_TENANT = uploads.UPLOAD_TENANT  # usage from uploads is accounted to this tenant
DIRECT_TENANT = "stepfunctions"
DIRECT_JOB_SOURCE = "stepfunctions"  # an IAM-authorised direct invocation: its job keeps that trust
output_keys = uploads.output_keys
API_GATEWAY_TIMEOUT_MS = 29_000  # a REST API's integration timeout, whatever the function's own


def _context(*, tenant: str, request_id: str, remaining_ms: int | None, trusted: bool) -> RequestContext:
    config = services().settings
    ctx = api.request_context_for(
        tenant=tenant,
        request_id=request_id,
        remaining_ms=remaining_ms,
        margin_s=config.deadline_margin_s,
        operation=OPERATION,
        log_prompts=config.log_prompts,
        defer=after_response.current(),
    )
    if trusted:  # IAM-authorised entry points may read any document in the bucket
        ctx.tags[DOCUMENT_SCOPE_TAG] = "bucket"
    return ctx


def _summarize(payload: dict[str, Any], ctx: RequestContext, *, plan_ahead: bool = False) -> dict[str, Any]:
    if ctx.log_prompts:
        logger.info("summarization input", payload=payload)
    result = run_sync(run_summary(payload, ctx, services(), plan_ahead=plan_ahead))
    logger.info(
        "summary",
        tenant=ctx.tenant,
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
    return result


def _remaining_ms(context: Any) -> int | None:
    return context.get_remaining_time_in_millis() if context is not None else None


# --------------------------------------------------------------------------- HTTP


@app.post("/v1/summaries")
def summaries() -> Response[str]:
    event = app.current_event
    config = services().settings
    tenant = api.tenant_from_request_context(event.raw_event.get("requestContext"))
    payload = api.parse_json_body(api.read_body(event.raw_event), max_bytes=config.max_body_bytes)
    if not isinstance(payload, dict):
        raise InvalidRequestError("the request body must be a JSON object", details={"param": "body"})
    raw = event.raw_event
    if job_http.wants_async(raw, services()):
        job = job_http.submit(
            services(),
            OPERATION,
            payload,
            tenant=tenant,
            request_id=_request_id(),
            deferred=False,
            defer=after_response.current(),
        )
        return _json(*job_http.accepted(raw, job, preference=job_http.RESPOND_ASYNC))
    remaining = _remaining_ms(app.lambda_context)
    remaining = API_GATEWAY_TIMEOUT_MS if remaining is None else min(remaining, API_GATEWAY_TIMEOUT_MS)
    ctx = _context(tenant=tenant, request_id=_request_id(), remaining_ms=remaining, trusted=False)
    try:
        result = _summarize(payload, ctx, plan_ahead=True)
    except DeadlineExceededError as err:
        # Too long to finish before API Gateway gives up: the job queue finishes it (no opt-in needed,
        # the alternative is an error), when this deployment has one.
        if not services().jobs_configured:
            raise
        return _accept_deferred(raw, payload, tenant, err, delayed=False)
    except GatewayError as err:
        if not job_http.should_defer(raw, err, services()):
            raise
        return _accept_deferred(raw, payload, tenant, err, delayed=True)
    headers = {
        "x-gateway-provider": result["provider"] or "none",
        "x-gateway-model": result["model"] or "none",
        "x-gateway-cost-usd": f"{result['cost_usd']:.10f}",
        "x-gateway-attempts": str(len(result["attempts"])),
        "x-gateway-strategy": result["strategy"],
        "x-gateway-degraded": "true" if result["degraded"] else "false",
    }
    return _json(200, result, headers)


def _accept_deferred(
    raw: dict[str, Any], payload: dict[str, Any], tenant: str, err: GatewayError, *, delayed: bool
) -> Response[str]:
    job = job_http.submit(
        services(),
        OPERATION,
        payload,
        tenant=tenant,
        request_id=_request_id(),
        deferred=delayed,
        defer=after_response.current(),
    )
    logger.info("summary deferred", tenant=tenant, job_id=job.job_id, code=err.code)
    metrics.add_metric(name="DeferredSummaries", unit=MetricUnit.Count, value=1)
    preference = job_http.DEFER_ON_FAILURE if delayed else None
    return _json(*job_http.accepted(raw, job, preference=preference, cause=err))


@app.exception_handler(GatewayError)
def gateway_error(err: GatewayError) -> Response[str]:
    if err.http_status >= 500:
        logger.warning("summary failed", code=err.code, error=err.message, attempts=len(err.attempts))
    body = api.error_body(err)
    body["error"]["retryable"] = err.retryable
    if err.attempts:
        body["error"]["attempts"] = [a.model_dump(mode="json") for a in err.attempts]
    headers = {}
    retry_after = err.retry_after
    if retry_after:
        headers["retry-after"] = str(max(1, round(retry_after)))
    return _json(err.http_status, body, headers)


@app.exception_handler(Exception)
def unexpected_error(err: Exception) -> Response[str]:
    api.log_unexpected(logger, err, log_prompts=services().settings.log_prompts)
    return _json(500, {"error": {"code": "internal_error", "message": "internal error"}}, {})


@app.not_found
def not_found(_: Exception) -> Response[str]:
    return _json(404, {"error": {"code": "not_found", "message": f"no route for {app.current_event.path}"}}, {})


def _json(status: int, body: dict[str, Any], headers: dict[str, str]) -> Response[str]:
    return Response(
        status_code=status,
        content_type="application/json",
        body=json.dumps(body, separators=(",", ":"), ensure_ascii=False),
        headers={**headers, "x-request-id": _request_id()},
    )


def _request_id() -> str:
    return str(app.current_event.request_context.request_id or "")


# --------------------------------------------------------------------------- S3 uploads


def _on_s3_record(record: dict[str, Any], context: LambdaContext | None) -> str:
    bucket = record["s3"]["bucket"]["name"]
    key = unquote_plus(record["s3"]["object"]["key"])  # S3 event keys are URL-encoded
    if not uploads.is_upload_key(key):
        return "skipped"  # a "folder" placeholder, or not ours
    upload = uploads.Upload(bucket=bucket, key=key)
    started = uploads.now_iso()
    payload = {"s3": {"bucket": bucket, "key": key}}
    request_id = getattr(context, "aws_request_id", "") or ""
    try:
        ctx = _context(tenant=S3_TENANT, request_id=request_id, remaining_ms=_remaining_ms(context), trusted=True)
        try:
            result = _summarize(payload, ctx)
        except DeadlineExceededError as err:
            if not services().jobs_configured:
                raise
            # The job continues from the cached calls and writes the result objects when it ends.
            job = submit(
                OPERATION,
                payload,
                tenant=S3_TENANT,
                source=uploads.UPLOAD_JOB_SOURCE,
                request_id=request_id,
                store=services().job_store(),
                defer=ctx.defer,
            )
            logger.info("document summary handed to a job", key=key, job_id=job.job_id, progress=err.details)
            metrics.add_metric(name="DeferredSummaries", unit=MetricUnit.Count, value=1)
            return "deferred"
    except GatewayError as err:
        uploads.write_error(upload, err, started=started)
        logger.warning("document summary failed", key=key, code=err.code, attempts=len(err.attempts))
        return "failed"
    except Exception as exc:  # a bug or an AWS failure: still leave a trace next to the document
        logger.error("document summary crashed", key=key)
        api.log_unexpected(
            logger, exc, log_prompts=services().settings.log_prompts
        )  # type and place only: the message may quote the document
        uploads.write_crash(upload, exc, started=started)
        return "failed"
    uploads.write_result(upload, result, started=started)
    return "degraded" if result["degraded"] else "summarized"


def _on_s3_event(event: dict[str, Any], context: LambdaContext | None) -> dict[str, Any]:
    outcomes: dict[str, int] = {}
    for record in event["Records"]:
        if not str(record.get("eventName", "")).startswith("ObjectCreated"):
            continue
        outcome = _on_s3_record(record, context)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes


# --------------------------------------------------------------------------- direct invocation


def _direct_invocation(event: dict[str, Any], context: LambdaContext | None) -> dict[str, Any]:
    """Step Functions (or any IAM caller) sends the payload as plain JSON; errors are raised by name."""
    try:
        payload = dict(event)
        tenant = str(payload.pop("tenant", None) or DIRECT_TENANT)  # IAM-authorised callers name the tenant
        ctx = _context(
            tenant=tenant,
            request_id=getattr(context, "aws_request_id", "") or "",
            remaining_ms=_remaining_ms(context),
            trusted=True,
        )
        try:
            return _summarize(payload, ctx)
        except DeadlineExceededError as err:
            if not services().jobs_configured:
                raise
            job = submit(
                OPERATION,
                payload,
                tenant=tenant,
                source=DIRECT_JOB_SOURCE,
                request_id=ctx.request_id,
                store=services().job_store(),
                defer=ctx.defer,
            )
            logger.info("summary handed to a job", tenant=tenant, job_id=job.job_id, progress=err.details)
            metrics.add_metric(name="DeferredSummaries", unit=MetricUnit.Count, value=1)
            return {
                "id": job.job_id,
                "object": "job",
                "status": job.status,
                "operation": job.operation,
                "deferred_because": err.to_dict(),
            }
    except GatewayError as err:
        raise api.named_error(err) from None


def _is_s3_event(event: dict[str, Any]) -> bool:
    records = event.get("Records")
    return (
        isinstance(records, list)
        and bool(records)
        and all(isinstance(r, dict) and r.get("eventSource") == "aws:s3" for r in records)
    )


@after_response.handler  # ledger writes and cache fills finish after the answer
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if not isinstance(event, dict):
        raise api.named_error(InvalidRequestError("the event must be a JSON object"))
    if "httpMethod" in event and "requestContext" in event:
        return app.resolve(event, context)
    if _is_s3_event(event):
        return _on_s3_event(event, context)
    return _direct_invocation(event, context)
