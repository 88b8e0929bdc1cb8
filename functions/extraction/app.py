"""Extraction function: POST /v1/extractions, S3 uploads under incoming/extract/<schema>/, direct invocation.

Thin on purpose: the ``extraction`` operation in the layer does the work. This module only decodes the
three kinds of event, encodes the answers, and maps errors in one place each:

* HTTP: the gateway's JSON error body with the right status (422 when answers never validated).
  ``Prefer: respond-async`` and ``Prefer: defer-on-failure`` work as for every operation (job_http).
* S3: ``incoming/extract/<schema>/<path>`` gives ``results/extract/<schema>/<path>.json``, or on any
  failure ``errors/extract/<schema>/<path>.json``; the uploaded document is never moved or deleted.
  A failure that may pass (rate limit, outage) is handed to the job queue, and the error object says
  ``"status": "retrying"`` with the job id until a job attempt settles it (``extraction_uploads``).
* Direct invocation (Step Functions): the result, or an exception named after the error code
  (``RateLimitedError``, ``ExtractionFailedError``, ...) for the state machine's Retry and Catch.
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
from llm_gateway.errors import GatewayError, InvalidRequestError
from llm_gateway.http import framing as api
from llm_gateway.http import prefer as job_http
from llm_gateway.interfaces import RequestContext
from llm_gateway.operations import extraction_uploads as uploads
from llm_gateway.operations.extraction import DOCUMENT_SCOPE_TAG, run_extraction
from llm_gateway.runtime import run_sync
from llm_gateway.wiring import services

logger = Logger()
metrics = Metrics()
app = APIGatewayRestResolver()

OPERATION = "extraction"
INPUT_PREFIX = uploads.INPUT_PREFIX
S3_TENANT = uploads.UPLOAD_TENANT  # usage from uploads is accounted to this tenant
DIRECT_TENANT = "stepfunctions"

output_keys = uploads.output_keys
schema_from_key = uploads.schema_from_key


def _context(*, tenant: str, request_id: str, remaining_ms: int | None, trusted: bool) -> RequestContext:
    config = services().settings
    ctx = api.request_context_for(
        tenant=tenant,
        request_id=request_id,
        remaining_ms=remaining_ms,
        margin_s=config.deadline_margin_s,
        operation="extraction",
        log_prompts=config.log_prompts,
        defer=after_response.current(),
    )
    if trusted:  # IAM-authorised entry points may read any document in the bucket
        ctx.tags[DOCUMENT_SCOPE_TAG] = "bucket"
    return ctx


def _extract(payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
    if ctx.log_prompts:
        logger.info("extraction input", payload=payload)
    result = run_sync(run_extraction(payload, ctx, services()))
    logger.info(
        "extraction",
        tenant=ctx.tenant,
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
    return result


def _remaining_ms(context: Any) -> int | None:
    return context.get_remaining_time_in_millis() if context is not None else None


# --------------------------------------------------------------------------- HTTP


@app.post("/v1/extractions")
def extractions() -> Response[str]:
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
    ctx = _context(
        tenant=tenant, request_id=_request_id(), remaining_ms=_remaining_ms(app.lambda_context), trusted=False
    )
    try:
        result = _extract(payload, ctx)
    except GatewayError as err:
        if not job_http.should_defer(raw, err, services()):
            raise
        job = job_http.submit(
            services(),
            OPERATION,
            payload,
            tenant=tenant,
            request_id=_request_id(),
            deferred=True,
            defer=after_response.current(),
        )
        logger.info("extraction deferred", tenant=tenant, job_id=job.job_id, code=err.code)
        metrics.add_metric(name="DeferredExtractions", unit=MetricUnit.Count, value=1)
        return _json(*job_http.accepted(raw, job, preference=job_http.DEFER_ON_FAILURE, cause=err))
    headers = {
        "x-gateway-provider": result["provider"],
        "x-gateway-model": result["model"],
        "x-gateway-cost-usd": f"{result['cost_usd']:.10f}",
        "x-gateway-cache": "hit" if result["cached"] else "miss",
        "x-gateway-attempts": str(len(result["attempts"])),
    }
    return _json(200, result, headers)


@app.exception_handler(GatewayError)
def gateway_error(err: GatewayError) -> Response[str]:
    if err.http_status >= 500 or err.http_status == 422:
        logger.warning("extraction failed", code=err.code, error=err.message, attempts=len(err.attempts))
        metrics.add_metric(name="ExtractionFailures", unit=MetricUnit.Count, value=1)
    body = api.error_body(err)
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
        body=json.dumps(body, separators=(",", ":")),
        headers={**headers, "x-request-id": _request_id()},
    )


def _request_id() -> str:
    return str(app.current_event.request_context.request_id or "")


# --------------------------------------------------------------------------- S3 uploads


def _on_s3_record(record: dict[str, Any], context: LambdaContext | None) -> str:
    bucket = record["s3"]["bucket"]["name"]
    key = unquote_plus(record["s3"]["object"]["key"])  # S3 event keys are URL-encoded
    if key.endswith("/"):
        return "skipped"  # a "folder" placeholder, not a document
    upload = uploads.Upload(bucket=bucket, key=key)
    started = uploads.now_iso()
    request_id = getattr(context, "aws_request_id", "") or ""
    schema: str | None = None
    # Writing the outcome may raise: the invocation then fails and Lambda retries the event, then sends
    # it to the on-failure destination (template.yaml), so an upload is never dropped silently.
    try:
        schema = uploads.schema_from_key(key)
        ctx = _context(tenant=S3_TENANT, request_id=request_id, remaining_ms=_remaining_ms(context), trusted=True)
        result = _extract({"s3": {"bucket": bucket, "key": key}, "schema": schema}, ctx)
    except GatewayError as err:
        job = (
            uploads.hand_over(upload, schema, err, request_id=request_id, services=services())
            if schema is not None
            else None
        )
        status: uploads.ErrorStatus = "retrying" if job is not None else "failed"
        job_id = job.job_id if job is not None else None
        uploads.write_error(
            upload,
            err,
            started=started,
            status=status,
            schema=schema,
            job_id=job_id,
            attempt=0 if job else None,
            max_attempts=services().settings.job_max_receives,
        )
        logger.warning(
            "document extraction failed",
            key=key,
            code=err.code,
            attempts=len(err.attempts),
            status=status,
            job_id=job_id,
        )
        metrics.add_metric(
            name="ExtractionFailures" if job is None else "ExtractionRetries", unit=MetricUnit.Count, value=1
        )
        return status
    except Exception as exc:  # a bug or an AWS failure: still leave a trace next to the document
        logger.error("document extraction crashed", key=key)
        api.log_unexpected(
            logger, exc, log_prompts=services().settings.log_prompts
        )  # type and place only: the message may quote the document
        uploads.write_crash(upload, exc, started=started, schema=schema)
        metrics.add_metric(name="ExtractionFailures", unit=MetricUnit.Count, value=1)
        return "failed"
    uploads.write_result(upload, result, started=started)
    return "extracted"


def _on_s3_event(event: dict[str, Any], context: LambdaContext | None) -> dict[str, Any]:
    outcomes: dict[str, int] = {}
    for record in event["Records"]:
        if record.get("eventSource") != "aws:s3" or not str(record.get("eventName", "")).startswith("ObjectCreated"):
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
        return _extract(payload, ctx)
    except GatewayError as err:
        raise api.named_error(err) from None


def _is_s3_event(event: dict[str, Any]) -> bool:
    records = event.get("Records")
    return (
        isinstance(records, list)
        and bool(records)
        and all(isinstance(r, dict) and r.get("eventSource") == "aws:s3" for r in records)
    )


@after_response.handler  # ledger writes and cache fills finish after the answer (see after_response)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if not isinstance(event, dict):
        raise api.named_error(InvalidRequestError("the event must be a JSON object"))
    if "httpMethod" in event and "requestContext" in event:
        return app.resolve(event, context)
    if _is_s3_event(event):
        return _on_s3_event(event, context)
    return _direct_invocation(event, context)
