"""Each adapter maps wire errors onto the one exception tree (in-memory transport; see the simulator tests)."""

import asyncio
import json

import httpx
import pytest

from llm_gateway import errors
from llm_gateway.models import Message, ProviderRequest
from llm_gateway.providers import adapter_class
from llm_gateway.providers.base import retry_after_seconds


def call(provider_name, handler):
    provider = adapter_class(provider_name)(base_url="http://test", api_key="k")
    request = ProviderRequest(model="m", messages=[Message(role="user", content="hi")], max_tokens=10)

    async def go():
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await provider.complete(request, client=client, timeout_s=1.0)

    return asyncio.run(go())


def respond(status, body, headers=None):
    def handler(request):
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.Response(status, content=content, headers=headers or {})

    return handler


def OPENAI_ERR(code, type_="invalid_request_error"):
    return {"error": {"message": "m", "type": type_, "param": None, "code": code}}


def ANTHROPIC_ERR(type_, msg="m"):
    return {"type": "error", "error": {"type": type_, "message": msg}}


def GEMINI_ERR(code, status, msg="m"):
    return {"error": {"code": code, "message": msg, "status": status}}


@pytest.mark.parametrize(
    ("provider", "status", "body", "expected"),
    [
        ("openai", 429, OPENAI_ERR("rate_limit_exceeded", "requests"), errors.RateLimitedError),
        ("openai", 429, OPENAI_ERR("insufficient_quota", "insufficient_quota"), errors.ProviderAuthError),
        ("openai", 400, OPENAI_ERR("context_length_exceeded"), errors.ContextTooLongError),
        ("openai", 400, OPENAI_ERR(None), errors.ProviderBadRequestError),
        ("openai", 401, OPENAI_ERR("invalid_api_key"), errors.ProviderAuthError),
        ("openai", 500, OPENAI_ERR(None, "server_error"), errors.ProviderUnavailableError),
        ("openai", 503, OPENAI_ERR(None, "server_error"), errors.ProviderUnavailableError),
        ("anthropic", 429, ANTHROPIC_ERR("rate_limit_error"), errors.RateLimitedError),
        ("anthropic", 529, ANTHROPIC_ERR("overloaded_error"), errors.ProviderUnavailableError),
        (
            "anthropic",
            400,
            ANTHROPIC_ERR("invalid_request_error", "prompt is too long: 300000 tokens > 200000 maximum"),
            errors.ContextTooLongError,
        ),
        ("anthropic", 400, ANTHROPIC_ERR("invalid_request_error"), errors.ProviderBadRequestError),
        ("anthropic", 401, ANTHROPIC_ERR("authentication_error"), errors.ProviderAuthError),
        ("gemini", 429, GEMINI_ERR(429, "RESOURCE_EXHAUSTED"), errors.RateLimitedError),
        ("gemini", 503, GEMINI_ERR(503, "UNAVAILABLE"), errors.ProviderUnavailableError),
        (
            "gemini",
            400,
            GEMINI_ERR(
                400,
                "INVALID_ARGUMENT",
                "The input token count (2000000) exceeds the maximum number of tokens allowed (1048576).",
            ),
            errors.ContextTooLongError,
        ),
        (
            "gemini",
            400,
            GEMINI_ERR(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key."),
            errors.ProviderAuthError,
        ),
        ("gemini", 400, GEMINI_ERR(400, "INVALID_ARGUMENT"), errors.ProviderBadRequestError),
    ],
)
def test_error_mapping(provider, status, body, expected):
    with pytest.raises(errors.ProviderError) as info:
        call(provider, respond(status, body))
    assert type(info.value) is expected
    assert info.value.status_code == status
    assert info.value.provider == provider


@pytest.mark.parametrize(
    "cls",
    [errors.ProviderAuthError, errors.ProviderBadRequestError, errors.ContextTooLongError, errors.ContentFilteredError],
)
def test_caller_and_operator_errors_are_not_retryable(cls):
    assert cls("x").retryable is False


@pytest.mark.parametrize(
    "cls",
    [
        errors.RateLimitedError,
        errors.ProviderUnavailableError,
        errors.ProviderTimeoutError,
        errors.ProviderConnectionError,
        errors.MalformedResponseError,
    ],
)
def test_transient_errors_are_retryable(cls):
    assert cls("x").retryable is True


def test_retry_after_is_read():
    with pytest.raises(errors.RateLimitedError) as info:
        call("openai", respond(429, OPENAI_ERR("rate_limit_exceeded"), {"retry-after": "7"}))
    assert info.value.retry_after == 7.0
    assert retry_after_seconds(httpx.Headers({"retry-after-ms": "1500"})) == 1.5
    assert retry_after_seconds(httpx.Headers({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0
    assert retry_after_seconds(httpx.Headers({"retry-after": "soon"})) is None


def test_malformed_bodies():
    with pytest.raises(errors.MalformedResponseError):
        call("openai", respond(200, b'{"choices": [{"mess'))
    with pytest.raises(errors.MalformedResponseError):
        call("anthropic", respond(200, {"id": "x"}))
    with pytest.raises(errors.MalformedResponseError):
        call("gemini", respond(200, {"candidates": []}))


def test_transport_failures():
    def timeout(request):
        raise httpx.ReadTimeout("slow", request=request)

    def dropped(request):
        raise httpx.RemoteProtocolError("Server disconnected", request=request)

    with pytest.raises(errors.ProviderTimeoutError):
        call("gemini", timeout)
    with pytest.raises(errors.ProviderConnectionError):
        call("anthropic", dropped)


def test_content_filter():
    with pytest.raises(errors.ContentFilteredError):
        call(
            "anthropic",
            respond(
                200,
                {"id": "m", "content": [], "stop_reason": "refusal", "usage": {"input_tokens": 1, "output_tokens": 0}},
            ),
        )
    with pytest.raises(errors.ContentFilteredError):
        call("gemini", respond(200, {"promptFeedback": {"blockReason": "SAFETY"}}))
    with pytest.raises(errors.ContentFilteredError):
        call(
            "openai",
            respond(
                200,
                {"choices": [{"message": {"role": "assistant", "content": None}, "finish_reason": "content_filter"}]},
            ),
        )


def test_anthropic_usage_counts_cache_reads_as_input():
    body = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "stop_reason": "end_turn",
        "content": [{"type": "text", "text": "hi"}],
        "usage": {
            "input_tokens": 10,
            "output_tokens": 3,
            "cache_read_input_tokens": 90,
            "cache_creation_input_tokens": 0,
        },
    }
    response = call("anthropic", respond(200, body))
    assert (response.usage.input_tokens, response.usage.cached_input_tokens, response.usage.output_tokens) == (
        100,
        90,
        3,
    )


# --------------------------------------------------------------------------- finish reasons


def _anthropic_answer(stop_reason):
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "stop_reason": stop_reason,
        "content": [{"type": "text", "text": "partial"}],
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }


def _gemini_answer(finish_reason):
    candidate = {"content": {"parts": [{"text": "partial"}], "role": "model"}, "index": 0}
    if finish_reason is not None:
        candidate["finishReason"] = finish_reason
    return {"candidates": [candidate], "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1}}


def _openai_answer(finish_reason):
    return {
        "choices": [{"message": {"role": "assistant", "content": "partial"}, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1},
    }


@pytest.mark.parametrize(
    ("provider", "body", "expected"),
    [
        ("anthropic", _anthropic_answer("end_turn"), "stop"),
        ("anthropic", _anthropic_answer("max_tokens"), "length"),
        ("anthropic", _anthropic_answer("model_context_window_exceeded"), "length"),
        ("anthropic", _anthropic_answer("pause_turn"), "error"),
        ("anthropic", _anthropic_answer("some_future_reason"), "error"),
        ("gemini", _gemini_answer("STOP"), "stop"),
        ("gemini", _gemini_answer("MAX_TOKENS"), "length"),
        ("gemini", _gemini_answer("OTHER"), "error"),
        ("gemini", _gemini_answer("MALFORMED_FUNCTION_CALL"), "error"),
        ("gemini", _gemini_answer("FINISH_REASON_UNSPECIFIED"), "error"),
        ("gemini", _gemini_answer(None), "error"),
        ("openai", _openai_answer("stop"), "stop"),
        ("openai", _openai_answer("length"), "length"),
        ("openai", _openai_answer("something_new"), "error"),
        ("openai", _openai_answer(None), "error"),
    ],
)
def test_only_known_complete_finish_reasons_count_as_stop(provider, body, expected):
    """Anything but "stop" is never cached as a complete answer: unknown reasons must not become "stop"."""
    assert call(provider, respond(200, body)).finish_reason == expected


@pytest.mark.parametrize("reason", ["BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "RECITATION", "SAFETY"])
def test_gemini_blocked_answers_are_content_filtered(reason):
    with pytest.raises(errors.ContentFilteredError):
        call("gemini", respond(200, _gemini_answer(reason)))


def test_an_unknown_finish_reason_is_not_cached():
    from llm_gateway.accounting.cache import is_cacheable_result
    from llm_gateway.models import CompletionRequest, CompletionResult, Usage

    response = call("gemini", respond(200, _gemini_answer("OTHER")))
    request = CompletionRequest(messages=[Message(role="user", content="hi")], temperature=0)
    result = CompletionResult(
        content=response.content,
        provider="gemini",
        model="m",
        finish_reason=response.finish_reason,
        usage=Usage(),
        cost_usd=0.0,
        latency_ms=1.0,
        attempts=[],
    )
    assert not is_cacheable_result(request, result)
