"""Extraction function: POST /v1/extractions, S3 uploads under incoming/extract/<schema>/, direct invocation.

Thin on purpose: the ``extraction`` operation in the layer does the work. This module only decodes the
three kinds of event, encodes the answers, and maps errors in one place each:

* HTTP: the gateway's JSON error body with the right status (422 when answers never validated).
* S3: ``incoming/extract/<schema>/<path>`` gives ``results/extract/<schema>/<path>.json``, or on any
  failure ``errors/extract/<schema>/<path>.json``; the uploaded document is never moved or deleted.
* Direct invocation (Step Functions): the result, or an exception named after the error code
  (``RateLimitedError``, ``ExtractionFailedError``, ...) for the state machine's Retry and Catch.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from llm_gateway import api, aws
from llm_gateway.config import settings
from llm_gateway.errors import GatewayError, InvalidRequestError
from llm_gateway.extraction import DOCUMENT_SCOPE_TAG, run_extraction
from llm_gateway.runtime import run_sync
from llm_gateway.seams import RequestContext

logger = Logger()
metrics = Metrics()
app = APIGatewayRestResolver()

INPUT_PREFIX = "incoming/extract/"
RESULTS_PREFIX = "results/extract/"
ERRORS_PREFIX = "errors/extract/"
S3_TENANT = "documents"  # usage from uploads is accounted to this tenant
DIRECT_TENANT = "stepfunctions"


def _context(*, tenant: str, request_id: str, remaining_ms: int | None, trusted: bool) -> RequestContext:
    config = settings()
    ctx = api.request_context_for(
        tenant=tenant,
        request_id=request_id,
        remaining_ms=remaining_ms,
        margin_s=config.deadline_margin_s,
        operation="extraction",
        log_prompts=config.log_prompts,
    )
    if trusted:  # IAM-authorised entry points may read any document in the bucket
        ctx.tags[DOCUMENT_SCOPE_TAG] = "bucket"
    return ctx


def _extract(payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
    if ctx.log_prompts:
        logger.info("extraction input", payload=payload)
    result = run_sync(run_extraction(payload, ctx))
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
    config = settings()
    tenant = api.tenant_from_request_context(event.raw_event.get("requestContext"))
    payload = api.parse_json_body(event.decoded_body, max_bytes=config.max_body_bytes)
    if not isinstance(payload, dict):
        raise InvalidRequestError("the request body must be a JSON object", details={"param": "body"})
    ctx = _context(
        tenant=tenant, request_id=_request_id(), remaining_ms=_remaining_ms(app.lambda_context), trusted=False
    )
    result = _extract(payload, ctx)
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
    retry_after = getattr(getattr(err, "last_error", err), "retry_after", None)
    if retry_after:
        headers["retry-after"] = str(max(1, round(retry_after)))
    return _json(err.http_status, body, headers)


@app.exception_handler(Exception)
def unexpected_error(err: Exception) -> Response[str]:
    logger.exception("unexpected error")
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


def output_keys(source_key: str) -> tuple[str, str]:
    """(result key, error key) for an uploaded document's key."""
    relative = source_key.removeprefix(INPUT_PREFIX) if source_key.startswith(INPUT_PREFIX) else source_key
    return f"{RESULTS_PREFIX}{relative}.json", f"{ERRORS_PREFIX}{relative}.json"


def schema_from_key(key: str) -> str:
    """``incoming/extract/<schema>/<name...>`` -> ``<schema>``."""
    relative = key.removeprefix(INPUT_PREFIX)
    schema, _, rest = relative.partition("/")
    if not key.startswith(INPUT_PREFIX) or not schema or not rest:
        raise InvalidRequestError(
            f"uploads must be named {INPUT_PREFIX}<schema>/<document>; got '{key}'", details={"key": key}
        )
    return schema


def _on_s3_record(record: dict[str, Any], context: LambdaContext | None) -> str:
    bucket = record["s3"]["bucket"]["name"]
    key = unquote_plus(record["s3"]["object"]["key"])  # S3 event keys are URL-encoded
    if key.endswith("/"):
        return "skipped"  # a "folder" placeholder, not a document
    result_key, error_key = output_keys(key)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    outcome: dict[str, Any] = {"source_bucket": bucket, "source_key": key}
    try:
        schema = schema_from_key(key)
        outcome["schema"] = schema
        ctx = _context(
            tenant=S3_TENANT,
            request_id=getattr(context, "aws_request_id", "") or "",
            remaining_ms=_remaining_ms(context),
            trusted=True,
        )
        result = _extract({"s3": {"bucket": bucket, "key": key}, "schema": schema}, ctx)
    except GatewayError as err:
        _put_json(bucket, error_key, {**outcome, **_error_record(err), "failed_at": started})
        logger.warning("document extraction failed", key=key, code=err.code, attempts=len(err.attempts))
        metrics.add_metric(name="ExtractionFailures", unit=MetricUnit.Count, value=1)
        return "failed"
    except Exception as exc:  # a bug or an AWS failure: still leave a trace next to the document
        logger.exception("document extraction crashed", key=key)
        error = {"code": "internal_error", "message": f"internal error: {type(exc).__name__}", "retryable": True}
        _put_json(bucket, error_key, {**outcome, "error": error, "failed_at": started})
        metrics.add_metric(name="ExtractionFailures", unit=MetricUnit.Count, value=1)
        return "failed"
    _put_json(
        bucket,
        result_key,
        {
            **outcome,
            "result": result["data"],
            "provider": result["provider"],
            "model": result["model"],
            "cost_usd": result["cost_usd"],
            "usage": result["usage"],
            "asks": result["asks"],
            "attempts": result["attempts"],
            "source": result["source"],
            "extracted_at": started,
        },
    )
    return "extracted"


def _error_record(err: GatewayError) -> dict[str, Any]:
    return {
        "error": {**err.to_dict(), "retryable": err.retryable},
        "attempts": [a.model_dump(mode="json") for a in err.attempts],
        "cost_usd": round(sum(a.cost_usd for a in err.attempts), 10),
    }


def _put_json(bucket: str, key: str, body: dict[str, Any]) -> None:
    aws.s3().put_object(
        Bucket=bucket,
        Key=key,
        Body=json.dumps(body, ensure_ascii=False, indent=2).encode("utf-8"),
        ContentType="application/json",
    )


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


@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if not isinstance(event, dict):
        raise api.named_error(InvalidRequestError("the event must be a JSON object"))
    if "httpMethod" in event and "requestContext" in event:
        return app.resolve(event, context)
    if _is_s3_event(event):
        return _on_s3_event(event, context)
    return _direct_invocation(event, context)
