"""Completion function: the OpenAI-compatible and native completion routes, usage reports, direct invocation.

Thin: the edge (``llm_gateway.http``) reads, validates and answers; the gateway core does the work.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from llm_gateway import aws
from llm_gateway.accounting.cache import cache_control_from_headers
from llm_gateway.accounting.usage import report_range, usage_summary
from llm_gateway.errors import NotConfiguredError
from llm_gateway.http import events, framing, key_checks, models_list, observe, openai_chat
from llm_gateway.http.edge import HttpEdge
from llm_gateway.interfaces import RequestContext
from llm_gateway.models import CompletionRequest, CompletionResult
from llm_gateway.runtime import run_sync
from llm_gateway.wiring import services

CHAT_PATH = "/v1/chat/completions"
NATIVE_SCHEMA_PARAM = "response_format.schema"

edge = HttpEdge(openai_paths=models_list.openai_shaped)  # the chat and models routes answer as OpenAI does
app, logger, metrics = edge.app, edge.logger, edge.metrics


def complete(request: CompletionRequest, ctx: RequestContext) -> CompletionResult:
    if ctx.log_prompts:
        logger.info("prompt", messages=[m.model_dump() for m in request.messages])
    result = run_sync(services().gateway().complete(request, ctx))
    observe.completion(logger, metrics, result, tenant=ctx.tenant)
    return result


def serve(request: CompletionRequest, encode: Any) -> Response[str]:
    """``Cache-Control`` and ``x-gateway-cache-*`` headers over the body's ``cache``, then the answer."""
    control = cache_control_from_headers(app.current_event.headers or {}, request.cache)
    request = request if control is request.cache else request.model_copy(update={"cache": control})
    return edge.serve(
        "completion",
        job_input=lambda: request.model_dump(mode="json", by_alias=True, exclude_none=True),
        run=lambda ctx: complete(request, ctx),
        answer=lambda result: (encode(result), observe.completion_headers(result)),
        limits=key_checks.completion_limits(request, services()),
        spent=lambda result: result.usage.input_tokens + result.usage.output_tokens,
    )


@edge.post(CHAT_PATH, summary="Chat completion (OpenAI's wire shape)", tags=["completion"])
def chat_completions(body: openai_chat.ChatCompletionsBody) -> Response[str]:
    return serve(openai_chat.to_gateway_request(body), openai_chat.to_chat_completion)


@edge.post("/v1/completions", summary="Completion (the gateway's own shape)", tags=["completion"])
def completions(body: CompletionRequest) -> Response[str]:
    framing.check_response_format(body, param=NATIVE_SCHEMA_PARAM)
    return serve(body, lambda result: result.model_dump(mode="json"))


@edge.get("/v1/usage", summary="The caller's own usage between two dates", tags=["usage"])
def usage() -> Response[str]:
    """``from``/``to`` (YYYY-MM-DD) read here, not declared as Powertools query params: their import costs
    every cold start of this function ~10 ms; ``report_range`` refuses bad dates naming the param."""
    tenant, table = edge.tenant(), services().settings.usage_table
    if not table:
        raise NotConfiguredError("usage reporting is not configured here (USAGE_TABLE)")
    params = app.current_event.query_string_parameters or {}
    first, last = report_range(params.get("from"), params.get("to"))
    metrics.add_metric(name="UsageReports", unit=MetricUnit.Count, value=1)
    return edge.json(200, usage_summary(aws.dynamodb(), table, tenant, first, last))


@edge.get(models_list.LIST_PATH, summary="The catalog's models, tiers and aliases", tags=["models"])
def list_models() -> Response[str]:
    edge.tenant()  # authenticated like every route
    return edge.json(200, models_list.list_models(services().catalog))


@edge.get(models_list.LIST_PATH + "/<model>", summary="One model by id, alias or tier", tags=["models"])
def retrieve_model(model: str) -> Response[str]:
    edge.tenant()
    # API Gateway hands the path over as sent: an SDK's %2F inside a prefixed id arrives encoded.
    return edge.json(200, models_list.retrieve_model(services().catalog, unquote(model)))


@edge.get(models_list.LIST_PATH + "/<model>/<name>", summary="One model by provider-prefixed id", tags=["models"])
def retrieve_prefixed_model(model: str, name: str) -> Response[str]:
    return retrieve_model(f"{model}/{name}")


def direct(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Step Functions (or any IAM caller) sends the ``/v1/completions`` body as the event."""
    payload = dict(event)
    tenant = events.direct_tenant(payload)
    framing.check_json_depth(payload, what="the event")
    request = framing.validate(CompletionRequest, payload)
    framing.check_response_format(request, param=NATIVE_SCHEMA_PARAM)
    return complete(request, events.direct_context("completion", tenant, context)).model_dump(mode="json")


lambda_handler = events.lambda_handler(edge, direct=direct)
