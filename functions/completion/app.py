"""Completion function: OpenAI-compatible and native completion endpoints, and direct invocation.

Thin on purpose: decode the event, call the gateway core, encode the answer. Errors are mapped to HTTP
(or to named Step Functions errors) in one place each. Behind API Gateway the request must be answered
within 29 seconds whatever the function's timeout: that, not the Lambda's remaining time, is the
deadline of an HTTP request (each candidate model gets a share of it, see ``fallback_time``).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from llm_gateway import after_response, aws
from llm_gateway.accounting.cache import cache_control_from_headers
from llm_gateway.accounting.usage import report_range, usage_summary
from llm_gateway.errors import GatewayError, InvalidRequestError, NotConfiguredError
from llm_gateway.http import framing as api
from llm_gateway.http import models_list
from llm_gateway.http import openai_chat as openai_compat
from llm_gateway.http import prefer as job_http
from llm_gateway.models import CompletionRequest, CompletionResult
from llm_gateway.runtime import run_sync
from llm_gateway.wiring import services

logger = Logger()
metrics = Metrics()
app = APIGatewayRestResolver()

OPENAI_PATH = "/v1/chat/completions"
DIRECT_TENANT = "stepfunctions"  # IAM callers that do not name a tenant
MAX_TENANT_CHARS = 256
NATIVE_SCHEMA_PARAM = "response_format.schema"


def _complete(
    request: CompletionRequest, *, tenant: str, request_id: str, remaining_ms: int | None
) -> CompletionResult:
    config = services().settings
    ctx = api.request_context_for(
        tenant=tenant,
        request_id=request_id,
        remaining_ms=remaining_ms,
        margin_s=config.deadline_margin_s,
        operation="completion",
        log_prompts=config.log_prompts,
        defer=after_response.current(),
    )
    if ctx.log_prompts:
        logger.info("prompt", messages=[m.model_dump() for m in request.messages])
    result = run_sync(services().gateway().complete(request, ctx))
    _observe(result, tenant=tenant)
    return result


def _observe(result: CompletionResult, *, tenant: str) -> None:
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


# --------------------------------------------------------------------------- HTTP


def _http_input() -> tuple[Any, str]:
    """(the parsed JSON body, the caller's tenant); 400/401/413 for what cannot be read."""
    event = app.current_event
    tenant = api.tenant_from_request_context(event.raw_event.get("requestContext"))
    data = api.parse_json_body(api.read_body(event.raw_event), max_bytes=services().settings.max_body_bytes)
    return data, tenant


def _with_cache_headers(request: CompletionRequest) -> CompletionRequest:
    """``Cache-Control: no-cache/no-store`` and ``x-gateway-cache-*`` headers, over the body's ``cache``."""
    control = cache_control_from_headers(app.current_event.headers or {}, request.cache)
    return request if control is request.cache else request.model_copy(update={"cache": control})


def _complete_or_accept(request: CompletionRequest, tenant: str) -> CompletionResult | Response[str]:
    """The result, or 202 with a job: always with ``Prefer: respond-async``; with ``Prefer:
    defer-on-failure`` when retries and fallbacks ran out on a retryable error."""
    event = app.current_event.raw_event
    job_input = request.model_dump(mode="json", by_alias=True, exclude_none=True)
    if job_http.wants_async(event, services()):
        job = job_http.submit(
            services(),
            "completion",
            job_input,
            tenant=tenant,
            request_id=_request_id(),
            deferred=False,
            defer=after_response.current(),
        )
        return _json(*job_http.accepted(event, job, preference=job_http.RESPOND_ASYNC))
    try:
        return _complete(request, tenant=tenant, request_id=_request_id(), remaining_ms=_http_remaining_ms())
    except GatewayError as err:
        if not job_http.should_defer(event, err, services()):
            raise
        job = job_http.submit(
            services(),
            "completion",
            job_input,
            tenant=tenant,
            request_id=_request_id(),
            deferred=True,
            defer=after_response.current(),
        )
        logger.info("completion deferred", tenant=tenant, job_id=job.job_id, code=err.code)
        metrics.add_metric(name="DeferredCompletions", unit=MetricUnit.Count, value=1)
        return _json(*job_http.accepted(event, job, preference=job_http.DEFER_ON_FAILURE, cause=err))


def _result_headers(result: CompletionResult) -> dict[str, str]:
    return {
        "x-gateway-provider": result.provider,
        "x-gateway-model": result.model,
        "x-gateway-cost-usd": f"{result.cost_usd:.10f}",
        "x-gateway-cache": "hit" if result.cached else "miss",
        "x-gateway-attempts": str(len(result.attempts)),
    }


def _http_remaining_ms() -> int:
    """API Gateway's 29 s (from when it received the request), or the Lambda's time if shorter."""
    context = app.lambda_context
    remaining = context.get_remaining_time_in_millis() if context is not None else None
    request_context = app.current_event.raw_event.get("requestContext") or {}
    return api.http_remaining_ms(remaining, request_epoch_ms=request_context.get("requestTimeEpoch"))


@app.post(OPENAI_PATH)
def chat_completions() -> Response[str]:
    data, tenant = _http_input()
    body = api.validate(openai_compat.ChatCompletionsBody, data)
    request = _with_cache_headers(openai_compat.to_gateway_request(body))
    result = _complete_or_accept(request, tenant)
    if isinstance(result, Response):
        return result
    return _json(200, openai_compat.to_chat_completion(result), _result_headers(result))


@app.post("/v1/completions")
def completions() -> Response[str]:
    data, tenant = _http_input()
    request = api.validate(CompletionRequest, data)
    api.check_response_format(request, param=NATIVE_SCHEMA_PARAM)
    result = _complete_or_accept(_with_cache_headers(request), tenant)
    if isinstance(result, Response):
        return result
    return _json(200, result.model_dump(mode="json"), _result_headers(result))


@app.get("/v1/usage")
def usage() -> Response[str]:
    """The caller's own usage between ``from`` and ``to`` (YYYY-MM-DD, inclusive; default the last 7 days)."""
    tenant = api.tenant_from_request_context(app.current_event.raw_event.get("requestContext"))
    table = services().settings.usage_table
    if not table:
        raise NotConfiguredError("usage reporting is not configured here (USAGE_TABLE)")
    params = app.current_event.query_string_parameters or {}
    first, last = report_range(params.get("from"), params.get("to"))
    summary = usage_summary(aws.dynamodb(), table, tenant, first, last)
    metrics.add_metric(name="UsageReports", unit=MetricUnit.Count, value=1)
    return _json(200, summary, {})


@app.get(models_list.LIST_PATH)
def list_models() -> Response[str]:
    api.tenant_from_request_context(app.current_event.raw_event.get("requestContext"))  # authenticated
    return _json(200, models_list.list_models(services().catalog), {})


@app.get(models_list.LIST_PATH + "/<name>")
@app.get(models_list.LIST_PATH + "/<prefix>/<name>")  # provider-prefixed ids: openai/gpt-4o-mini
def retrieve_model(name: str, prefix: str = "") -> Response[str]:
    api.tenant_from_request_context(app.current_event.raw_event.get("requestContext"))
    # API Gateway hands the path over as sent: an SDK's %2F inside the id arrives encoded.
    model_id = unquote(f"{prefix}/{name}" if prefix else name)
    return _json(200, models_list.retrieve_model(services().catalog, model_id), {})


@app.exception_handler(GatewayError)
def gateway_error(err: GatewayError) -> Response[str]:
    if err.http_status >= 500:
        logger.warning("request failed", code=err.code, error=err.message, attempts=len(err.attempts))
    openai_style = models_list.openai_shaped(app.current_event.path)
    body = openai_compat.openai_error_body(err) if openai_style else api.error_body(err)
    if err.attempts and not openai_style:
        body["error"]["attempts"] = [a.model_dump(mode="json") for a in err.attempts]
    headers = {}
    retry_after = err.retry_after
    if retry_after:
        headers["retry-after"] = str(max(1, round(retry_after)))
    return _json(err.http_status, body, headers)


@app.exception_handler(Exception)
def unexpected_error(err: Exception) -> Response[str]:
    api.log_unexpected(logger, err, log_prompts=services().settings.log_prompts)
    return _json(500, {"error": {"code": "internal_error", "message": "internal error", "type": "api_error"}}, {})


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


# --------------------------------------------------------------------------- direct invocation


def _direct_tenant(value: Any) -> str:
    """The tenant an IAM-authorised caller names (usage and budgets are kept per tenant)."""
    if value is None:
        return DIRECT_TENANT
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_TENANT_CHARS or not value.isprintable():
        raise api.invalid("tenant", f"must be a non-empty string of printable characters, at most {MAX_TENANT_CHARS}")
    return value


def _direct_invocation(event: dict[str, Any], context: LambdaContext | None) -> dict[str, Any]:
    """Step Functions (or any IAM caller) sends the request as plain JSON; errors are raised by name."""
    try:
        payload = dict(event)
        tenant = _direct_tenant(payload.pop("tenant", None))
        api.check_json_depth(payload, what="the event")
        request = api.validate(CompletionRequest, payload)
        api.check_response_format(request, param=NATIVE_SCHEMA_PARAM)
        request_id = getattr(context, "aws_request_id", "") or ""
        remaining = context.get_remaining_time_in_millis() if context is not None else None
        return _complete(request, tenant=tenant, request_id=request_id, remaining_ms=remaining).model_dump(mode="json")
    except GatewayError as err:
        raise api.named_error(err) from None


# Request id and cold start on every log line; the event itself is never logged (it holds the prompt).
@after_response.handler  # ledger writes, settlement and cache fills finish after the answer
@logger.inject_lambda_context(log_event=False, correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if not isinstance(event, dict):
        raise api.named_error(InvalidRequestError("the event must be a JSON object"))
    if "httpMethod" in event and "requestContext" in event:
        return app.resolve(event, context)
    return _direct_invocation(event, context)
