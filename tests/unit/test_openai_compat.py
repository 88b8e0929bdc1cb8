"""The OpenAI request shape and the request framing in ``api``: every bad input is a 400 naming its
parameter (never a pydantic error escaping as a 500), bodies are decoded safely, deadlines leave room
to fall back, unexpected errors are logged without their message."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest

from llm_gateway.errors import (
    AllProvidersFailedError,
    GatewayError,
    InvalidRequestError,
    PayloadTooLargeError,
    ProviderAuthError,
    ProviderConnectionError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitedError,
    SchemaError,
)
from llm_gateway.http import framing as api
from llm_gateway.http import openai_chat as openai_compat
from llm_gateway.http import stream_params
from llm_gateway.interfaces import RequestContext
from llm_gateway.jobs.task_tokens import error_name
from llm_gateway.models import CompletionRequest, ImagePart, JsonSchemaFormat, TextPart
from llm_gateway.routing.deadline import Deadline
from llm_gateway.routing.fallback_time import FALLBACK_SHARE, MIN_SHARE_S, candidate_context

USER = {"role": "user", "content": "Hello"}


def convert(**body: Any) -> CompletionRequest:
    data = {"model": "gpt-4o-mini", "messages": [USER], **body}
    body = api.validate(openai_compat.ChatCompletionsBody, data)
    request = openai_compat.to_gateway_request(body)
    stream_params.chat_stream(body.stream, body.stream_options, request)  # as the chat route checks it
    return request


def nested(levels: int) -> dict[str, Any]:
    node: dict[str, Any] = {}
    for _ in range(levels - 1):
        node = {"a": node}
    return node


# --------------------------------------------------------------------------- conversion


def test_openai_messages_become_gateway_messages() -> None:
    request = convert(
        messages=[
            {"role": "developer", "content": "Be brief."},
            {
                "role": "user",
                "name": "ann",  # accepted and ignored, as by OpenAI for non-tool roles
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA", "detail": "low"}},
                ],
            },
        ],
        stop="END",
        max_completion_tokens=50,
    )
    system, user = request.messages
    assert (system.role, system.content) == ("system", "Be brief.")
    assert user.content == [TextPart(text="What is this?"), ImagePart(url="data:image/png;base64,AA", detail="low")]
    assert (request.stop, request.max_tokens, request.model, request.tier) == (["END"], 50, "gpt-4o-mini", None)


def test_tier_models_and_json_schema_formats() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    request = convert(
        model="tier:balanced",
        response_format={"type": "json_schema", "json_schema": {"name": "thing", "schema": schema, "strict": False}},
    )
    assert (request.model, request.tier) == (None, "balanced")
    assert isinstance(request.response_format, JsonSchemaFormat)
    assert (request.response_format.name, request.response_format.json_schema) == ("thing", schema)
    assert request.response_format.strict is False
    assert convert(response_format={"type": "text"}).response_format is None


BAD_CHAT_BODIES = [
    ("bogus role", {"messages": [{"role": "bogus", "content": "x"}]}, "messages.0.role", "one of"),
    (
        "tool role without id",
        {"messages": [USER, {"role": "tool", "content": "42"}]},
        "messages.1.tool_call_id",
        "required",
    ),
    ("function role", {"messages": [{"role": "function", "content": "42"}]}, "messages.0.role", "legacy functions"),
    (
        "tool call without function",
        {"messages": [USER, {"role": "assistant", "content": None, "tool_calls": [{"id": "c"}]}]},
        "messages.1.tool_calls.0.function",
        "name",
    ),
    (
        "tool result for no call",
        {"messages": [USER, {"role": "tool", "content": "42", "tool_call_id": "c1"}]},
        "messages.1.tool_call_id",
        "assistant message just before it",
    ),
    ("legacy functions", {"functions": [{"name": "f"}]}, "functions", "send 'tools'"),
    ("legacy function_call", {"function_call": "auto"}, "function_call", "send 'tools'"),
    ("non-function tool", {"tools": [{"type": "web_search"}]}, "tools.0.type", "only 'function'"),
    (
        "tool name",
        {"tools": [{"type": "function", "function": {"name": "has space"}}]},
        "tools.0.function.name",
        "pattern",
    ),
    (
        "parameters not an object schema",
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]},
        "tools.0.function.parameters",
        "type 'object'",
    ),
    ("tool_choice without tools", {"tool_choice": "required"}, "tool_choice", "needs 'tools'"),
    (
        "tool_choice names an unknown function",
        {
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": {"type": "function", "function": {"name": "g"}},
        },
        "tool_choice.function.name",
        "not among the tools",
    ),
    ("integer content", {"messages": [{"role": "user", "content": 5}]}, "messages.0.content", "string or an array"),
    ("missing content", {"messages": [{"role": "user"}]}, "messages.0.content", "required"),
    ("object content", {"messages": [{"role": "user", "content": {"text": "x"}}]}, "messages.0.content", "string"),
    ("empty parts", {"messages": [{"role": "user", "content": []}]}, "messages.0.content", "empty"),
    ("message not an object", {"messages": ["hello"]}, "messages.0", "object"),
    ("part not an object", {"messages": [{"role": "user", "content": ["x"]}]}, "messages.0.content.0", "object"),
    (
        "part type",
        {"messages": [{"role": "user", "content": [{"type": "audio"}]}]},
        "messages.0.content.0.type",
        "'audio'",
    ),
    (
        "text not a string",
        {"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]},
        "messages.0.content.0.text",
        "string",
    ),
    (
        "image_url a string",
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "https://x/y.png"}]}]},
        "messages.0.content.0.image_url",
        "object",
    ),
    (
        "image url missing",
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
        "messages.0.content.0.image_url.url",
        "non-empty",
    ),
    (
        "image detail",
        {
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u", "detail": "max"}}]}
            ]
        },
        "messages.0.content.0.image_url.detail",
        "'low'",
    ),
    ("five stops", {"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
    ("stop type", {"stop": 7}, "stop", "valid"),
    (
        "schema name",
        {"response_format": {"type": "json_schema", "json_schema": {"name": "bad name!", "schema": {}}}},
        "response_format.json_schema.name",
        "pattern",
    ),
    ("schema missing", {"response_format": {"type": "json_schema"}}, "response_format.json_schema", "object"),
    (
        "schema not an object",
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": [1]}}},
        "response_format.json_schema.schema",
        "dictionary",
    ),
    ("format type", {"response_format": {"type": "xml"}}, "response_format.type", "json_schema"),
    ("unknown tier", {"model": "tier:ultra"}, "model", "unknown tier 'ultra'"),
    ("empty messages", {"messages": []}, "messages", "at least 1"),
    ("messages not a list", {"messages": "hi"}, "messages", "list"),
    ("blank text", {"messages": [{"role": "user", "content": "  "}]}, "messages", "some text"),
    ("stream_options without stream", {"stream_options": {"include_usage": True}}, "stream_options", "stream is true"),
    ("n with stream", {"stream": True, "n": 3}, "n", "cannot be combined with stream"),
    ("n above the most choices", {"n": 9}, "n", "less than or equal"),
    ("max_tokens range", {"max_tokens": 10_000_000}, "max_tokens", "less than or equal"),
    ("max_completion_tokens", {"max_completion_tokens": 0}, "max_completion_tokens", "greater than"),
]


@pytest.mark.parametrize(
    ("body", "param", "words"), [c[1:] for c in BAD_CHAT_BODIES], ids=[c[0] for c in BAD_CHAT_BODIES]
)
def test_bad_chat_requests_are_400s_naming_the_parameter(body: dict[str, Any], param: str, words: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        convert(**body)
    err = info.value
    assert (err.http_status, err.code) == (400, "invalid_request")
    assert err.details["param"] == param
    assert words in err.message
    error = openai_compat.openai_error_body(err)["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, "invalid_request")


def test_schema_limits_apply_to_chat_and_native_requests() -> None:
    deep = {"type": "json_schema", "json_schema": {"name": "deep", "schema": nested(70)}}
    with pytest.raises(SchemaError) as info:
        convert(response_format=deep)
    assert (info.value.http_status, info.value.details["param"]) == (400, "response_format.json_schema.schema")
    big = {"type": "object", "description": "x" * 40_000}
    request = CompletionRequest.model_validate(
        {"messages": [USER], "response_format": {"type": "json_schema", "schema": big}}
    )
    with pytest.raises(SchemaError, match="bytes"):
        api.check_response_format(request, param="response_format.schema")
    api.check_response_format(CompletionRequest.model_validate({"messages": [USER]}), param="x")  # no schema: fine


# --------------------------------------------------------------------------- validation messages


def test_union_members_are_left_out_of_params() -> None:
    with pytest.raises(InvalidRequestError) as info:
        api.validate(CompletionRequest, {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]})
    assert info.value.details["param"] == "messages.0.content.0.text"
    params = {e["param"] for e in info.value.details["errors"]}
    assert all("[" not in p and "Part" not in p and not p.endswith(".str") for p in params), params
    with pytest.raises(InvalidRequestError) as info:
        api.validate(CompletionRequest, {"messages": [{"role": "user", "content": 5}]})
    assert info.value.details["param"] == "messages.0.content"


def test_validate_renames_top_level_fields_for_the_caller() -> None:
    with pytest.raises(InvalidRequestError) as info:
        api.validate(CompletionRequest, {"messages": [USER], "tier": "ultra"}, rename={"tier": "model"})
    assert info.value.details["param"] == "model"
    assert info.value.message.startswith("model: ")


def test_invalid_has_the_shape_of_validate() -> None:
    err = api.invalid("messages.0.role", "must be one of ...")
    assert err.to_dict() == {
        "code": "invalid_request",
        "message": "messages.0.role: must be one of ...",
        "details": {
            "param": "messages.0.role",
            "errors": [{"param": "messages.0.role", "message": "must be one of ..."}],
        },
    }


# --------------------------------------------------------------------------- bodies


def test_read_body_decodes_base64_and_refuses_what_is_not_utf8() -> None:
    assert api.read_body({"body": '{"a": 1}'}) == '{"a": 1}'
    assert (
        api.read_body({"body": base64.b64encode('{"é": 1}'.encode()).decode(), "isBase64Encoded": True}) == '{"é": 1}'
    )
    assert api.read_body({"body": None}) is None
    cases = [
        ({"body": base64.b64encode(b'{"a": "\xff"}').decode(), "isBase64Encoded": True}, "not valid UTF-8"),
        ({"body": "%%% not base64", "isBase64Encoded": True}, "not valid base64"),
        ({"body": '{"a": "\ud800"}'}, "not valid UTF-8"),  # a lone surrogate
        ({"body": 12}, "must be text"),
    ]
    for event, words in cases:
        with pytest.raises(InvalidRequestError, match=words) as info:
            api.read_body(event)
        assert (info.value.http_status, info.value.details["param"]) == (400, "body")


def test_json_bodies_are_bounded_in_size_and_depth() -> None:
    assert api.parse_json_body('{"a": [1, {"b": 2}]}', max_bytes=1024) == {"a": [1, {"b": 2}]}
    with pytest.raises(PayloadTooLargeError):
        api.parse_json_body('{"a": "' + "x" * 2000 + '"}', max_bytes=1024)
    import json

    ok = json.dumps(nested(api.MAX_JSON_DEPTH))
    assert api.parse_json_body(ok, max_bytes=10_000)
    for levels in (api.MAX_JSON_DEPTH + 1, 300, 5000):  # 5000: deeper than json's own recursion limit
        with pytest.raises(InvalidRequestError, match="levels deep") as info:
            api.parse_json_body("[" * levels + "]" * levels, max_bytes=100_000)
        assert info.value.http_status == 400
    with pytest.raises(InvalidRequestError, match="not valid JSON"):
        api.parse_json_body("{nope", max_bytes=1024)


def test_json_depth_counts_containers_only() -> None:
    assert not api.json_depth_exceeds({"a": [1, 2, {"b": "x"}]}, 3)
    assert api.json_depth_exceeds({"a": [1, 2, {"b": []}]}, 3)
    assert not api.json_depth_exceeds("scalar", 0)


# --------------------------------------------------------------------------- deadlines


def test_http_deadline_is_api_gateways_not_the_lambdas() -> None:
    assert api.http_remaining_ms(60_000) == 29_000
    assert api.http_remaining_ms(10_000) == 10_000
    assert api.http_remaining_ms(None) == 29_000
    now = time.time() * 1000
    # The time API Gateway already spent (e.g. a cold start) is counted; a stale epoch is not trusted.
    assert api.http_remaining_ms(60_000, request_epoch_ms=now - 4_000, now_ms=now) == 25_000
    assert api.http_remaining_ms(60_000, request_epoch_ms=now - 7 * 86_400_000, now_ms=now) == 29_000
    assert api.http_remaining_ms(60_000, request_epoch_ms="soon", now_ms=now) == 29_000


def test_each_candidate_with_a_fallback_gets_a_share_of_the_time() -> None:
    ctx = RequestContext(tenant="t", request_id="r", deadline=Deadline(27.5))
    first = candidate_context(ctx, fallbacks_left=2)
    assert first is not ctx and first.tenant == "t" and first.tags is ctx.tags
    assert first.deadline.remaining() == pytest.approx(27.5 * FALLBACK_SHARE, abs=0.2)
    assert candidate_context(ctx, fallbacks_left=0) is ctx  # the last one gets all that is left
    tight = RequestContext(tenant="t", request_id="r", deadline=Deadline(8))
    assert candidate_context(tight, fallbacks_left=1).deadline.remaining() == pytest.approx(MIN_SHARE_S, abs=0.2)
    short = RequestContext(tenant="t", request_id="r", deadline=Deadline(4))
    assert candidate_context(short, fallbacks_left=1) is short  # too little to split


# --------------------------------------------------------------------------- errors


def test_named_errors_do_not_double_the_error_suffix() -> None:
    def named(err: GatewayError) -> str:
        return type(api.named_error(err)).__name__

    assert named(ProviderAuthError("no")) == "ProviderAuthError"
    assert named(ProviderConnectionError("no")) == "ProviderConnectionError"
    assert named(RateLimitedError("no")) == "RateLimitedError"
    assert named(InvalidRequestError("no")) == "InvalidRequestError"
    assert named(SchemaError("no")) == "InvalidSchemaError"
    assert named(ProviderTimeoutError("no")) == "ProviderTimeoutError"
    assert named(ProviderUnavailableError("no")) == "ProviderUnavailableError"
    assert named(AllProvidersFailedError("x", attempts=[], last_error=ProviderUnavailableError("503"))) == (
        "ProvidersUnavailableError"
    )
    for code in ("provider_auth_error", "rate_limited", "extraction_failed"):
        assert error_name(code) == api.error_class_name(code)  # task failures use the same names


class RecordingLogger:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def error(self, msg: str, **kwargs: Any) -> None:
        self.calls.append(("error", msg, kwargs))

    def exception(self, msg: str, **kwargs: Any) -> None:
        self.calls.append(("exception", msg, kwargs))


def _raise_with_prompt() -> None:
    raise ValueError("input_value='my secret prompt'")


def test_unexpected_errors_are_logged_by_type_and_place_only() -> None:
    logger = RecordingLogger()
    try:
        _raise_with_prompt()
    except ValueError as exc:
        api.log_unexpected(logger, exc, log_prompts=False)
    [(level, _, kwargs)] = logger.calls
    assert level == "error"  # not .exception: no traceback text, no message
    assert "secret prompt" not in repr(kwargs)
    extra = kwargs["extra"]
    assert extra["error_type"] == "builtins.ValueError"
    assert extra["location"].startswith("test_openai_compat.py:") and "_raise_with_prompt" in extra["location"]

    logger.calls.clear()
    try:
        _raise_with_prompt()
    except ValueError as exc:
        api.log_unexpected(logger, exc, log_prompts=True)
    assert [c[0] for c in logger.calls] == ["exception"]  # asked for: the full traceback
