"""The completion routes' work, for the completion function's handler: the chat (OpenAI's shape) and
native bodies to a gateway request, then a JSON answer, a job, or a stream (``stream: true``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.event_handler import Response

from llm_gateway.accounting.cache import cache_control_from_headers
from llm_gateway.guardrails.logs import loggable_messages
from llm_gateway.http import (
    anthropic_messages,
    events,
    framing,
    guardrails,
    key_checks,
    models_list,
    observe,
    openai_chat,
    stream_params,
    streamed,
)
from llm_gateway.models import CompletionRequest, CompletionResult
from llm_gateway.runtime import run_sync
from llm_gateway.wiring import services

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from llm_gateway.http.edge import HttpEdge
    from llm_gateway.interfaces import RequestContext

CHAT_PATH = "/v1/chat/completions"
NATIVE_PATH = "/v1/completions"
MESSAGES_PATH = anthropic_messages.MESSAGES_PATH  # Anthropic's Messages API
COUNT_TOKENS_PATH = anthropic_messages.COUNT_TOKENS_PATH
STREAMED_PATHS = (CHAT_PATH, NATIVE_PATH, MESSAGES_PATH)  # wired to API Gateway's response streaming (template.yaml)
NATIVE_SCHEMA_PARAM = "response_format.schema"


def complete(edge: HttpEdge, request: CompletionRequest, ctx: RequestContext) -> CompletionResult:
    if ctx.log_prompts:
        edge.logger.info("prompt", messages=loggable_messages(request.messages))
    result = run_sync(services().gateway().complete(request, ctx))
    cacheable = observe.looks_up_cache(request)
    observe.completion(edge.logger, edge.metrics, result, tenant=ctx.tenant, ctx=ctx, cacheable=cacheable)
    return result


def chat(edge: HttpEdge, body: openai_chat.ChatCompletionsBody) -> Response[str]:
    request = openai_chat.to_gateway_request(body)
    mode = stream_params.chat_stream(body.stream, body.stream_options, request)
    if mode is None:
        return serve(edge, request, openai_chat.to_chat_completion)
    from llm_gateway.http.sse_openai import ChatChunkEncoder

    return serve(edge, request, openai_chat.to_chat_completion, lambda stream: ChatChunkEncoder(stream, mode))


def native(edge: HttpEdge, body: stream_params.NativeCompletionBody) -> Response[str]:
    framing.check_response_format(body, param=NATIVE_SCHEMA_PARAM)
    request = body.completion_request()
    if stream_params.native_stream(body) is None:
        return serve(edge, request, lambda result: result.model_dump(mode="json"))
    from llm_gateway.http.sse_native import NativeEventEncoder

    return serve(edge, request, lambda result: result.model_dump(mode="json"), NativeEventEncoder)


def messages(edge: HttpEdge, body: anthropic_messages.MessagesBody) -> Response[str]:
    request = anthropic_messages.to_gateway_request(body)
    if not body.stream:
        return serve(edge, request, anthropic_messages.to_message)
    stream_params.refuse_unstreamable(request)
    from llm_gateway.http.sse_anthropic import MessageEventEncoder

    estimate = anthropic_messages.input_estimate(request)
    return serve(edge, request, anthropic_messages.to_message, lambda stream: MessageEventEncoder(stream, estimate))


def count_tokens(edge: HttpEdge, body: anthropic_messages.CountTokensBody) -> Response[str]:
    """The gateway's own estimate (no provider is called): a 404 for a model nothing resolves to."""
    edge.tenant()  # authenticated like every route
    request = anthropic_messages.to_gateway_request(body)
    models_list.retrieve_model(services().catalog, body.model)
    return edge.json(200, {"input_tokens": anthropic_messages.input_estimate(request)})


def serve(
    edge: HttpEdge,
    request: CompletionRequest,
    encode: Callable[[CompletionResult], dict[str, Any]],
    stream: streamed.Encoders | None = None,
) -> Response[str]:
    """``Cache-Control`` and ``x-gateway-cache-*`` headers over the body's ``cache``, then the answer."""
    control = cache_control_from_headers(edge.app.current_event.headers or {}, request.cache)
    request = request if control is request.cache else request.model_copy(update={"cache": control})
    limits = key_checks.completion_limits(request, services())

    def job_input() -> dict[str, Any]:
        return request.model_dump(mode="json", by_alias=True, exclude_none=True)

    if stream is not None:
        return streamed.serve(edge, request, stream, job_input=job_input, limits=limits)
    return edge.serve(
        "completion",
        job_input=job_input,
        run=lambda ctx: complete(edge, request, ctx),
        answer=lambda result: (encode(result), observe.completion_headers(result)),
        limits=limits,
        spent=lambda result: result.usage.input_tokens + result.usage.output_tokens,
    )


def direct(edge: HttpEdge, event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Step Functions (or any IAM caller) sends the ``/v1/completions`` body as the event; a direct
    invocation cannot stream (a 400 naming ``stream``)."""
    payload = dict(event)
    tenant = events.direct_tenant(payload)
    framing.check_json_depth(payload, what="the event")
    body = framing.validate(stream_params.NativeCompletionBody, payload)
    if body.stream:
        raise framing.invalid("stream", streamed.NOT_STREAMED_HERE)
    framing.check_response_format(body, param=NATIVE_SCHEMA_PARAM)
    ctx = events.direct_context("completion", tenant, context)
    ctx.guardrails = guardrails.resolve(None, payload, NATIVE_PATH, None, services())
    return complete(edge, body.completion_request(), ctx).model_dump(mode="json")
