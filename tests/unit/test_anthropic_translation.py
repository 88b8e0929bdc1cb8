"""Anthropic's Messages API on the edge, in memory: the request translated to the gateway's
``CompletionRequest`` and the result back, the error shape, and the event stream read back by the
official ``anthropic`` client's own stream machinery (behind an ``httpx2.MockTransport``)."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2
import pytest

from llm_gateway.errors import (
    GatewayError,
    InvalidRequestError,
    MissingApiKeyError,
    ProviderUnavailableError,
    StreamInterruptedError,
    UnknownModelError,
)
from llm_gateway.http import answers
from llm_gateway.http import anthropic_messages as am
from llm_gateway.http.sse_anthropic import MessageEventEncoder
from llm_gateway.models import CompletionRequest, ImagePart, TextPart, Usage
from llm_gateway.tool_models import FunctionCall, NamedToolChoice, ToolCall
from tests.support.scripted_streams import ScriptedStream, encoded, result, text_script, tool_script

WEATHER = {"name": "get_weather", "description": "Weather", "input_schema": {"type": "object", "properties": {}}}


def translate(**fields: Any) -> CompletionRequest:
    body = {"model": "claude-3-5-haiku-latest", "max_tokens": 100, **fields}
    return am.to_gateway_request(am.MessagesBody.model_validate(body))


def refused(**fields: Any) -> str:
    with pytest.raises(InvalidRequestError) as caught:
        translate(**fields)
    return str(caught.value.details["param"])


# --------------------------------------------------------------------------- request


def test_plain_fields_map_onto_the_gateways_request() -> None:
    request = translate(
        messages=[{"role": "user", "content": "Hi"}],
        system="Be brief.",
        temperature=0.2,
        top_p=0.5,
        top_k=40,
        stop_sequences=["END"],
        metadata={"user_id": "u-1"},
    )
    assert [(m.role, m.content) for m in request.messages] == [("system", "Be brief."), ("user", "Hi")]
    assert (request.model, request.max_tokens, request.temperature, request.top_p) == (
        "claude-3-5-haiku-latest",
        100,
        0.2,
        0.5,
    )
    assert request.stop == ["END"] and request.user == "u-1" and request.top_k == 40


def test_system_blocks_with_cache_control_are_joined_and_a_tier_is_a_tier() -> None:
    system = [{"type": "text", "text": "A"}, {"type": "text", "text": "B", "cache_control": {"type": "ephemeral"}}]
    request = am.to_gateway_request(
        am.MessagesBody.model_validate(
            {"model": "tier:fast", "max_tokens": 5, "system": system, "messages": [{"role": "user", "content": "x"}]}
        )
    )
    [first, second] = request.messages[0].content  # type: ignore[misc]
    assert first.text == "A" and first.cache_control is None
    assert second.text == "B" and second.cache_control is not None and second.cache_control.type == "ephemeral"
    assert request.tier == "fast" and request.model is None


def test_images_by_base64_and_by_url() -> None:
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]
    [message] = translate(messages=[{"role": "user", "content": content}]).messages
    assert isinstance(message.content, list)
    text, inline, linked = message.content
    assert isinstance(text, TextPart) and text.text == "What is this?"
    assert isinstance(inline, ImagePart) and inline.url == "data:image/png;base64,iVBORw0KGgo="
    assert isinstance(linked, ImagePart) and linked.url == "https://example.com/cat.jpg"
    assert "vision" in translate(messages=[{"role": "user", "content": content}]).required_capabilities()


def test_tool_use_and_tool_result_become_tool_calls_and_tool_turns() -> None:
    messages = [
        {"role": "user", "content": "Weather in Oslo?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Bergen"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "is_error": True,
                    "content": [{"type": "text", "text": "no"}, {"type": "text", "text": "station"}],
                },
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ]
    request = translate(
        messages=messages,
        tools=[WEATHER],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
    )
    question, assistant, first, second, follow_up = request.messages
    assert question.text() == "Weather in Oslo?"
    assert assistant.content == "Checking." and assistant.tool_calls is not None
    assert [(c.id, c.function.name, c.arguments_object()) for c in assistant.tool_calls] == [
        ("toolu_1", "get_weather", {"city": "Oslo"}),
        ("toolu_2", "get_weather", {"city": "Bergen"}),
    ]
    assert (first.role, first.tool_call_id, first.content) == ("tool", "toolu_1", "Sunny")
    assert (second.tool_call_id, second.content) == ("toolu_2", am.TOOL_ERROR_PREFIX + "no\nstation")
    assert follow_up.role == "user" and follow_up.text() == "And tomorrow?"
    assert request.tools is not None and request.tools[0].function.parameters == WEATHER["input_schema"]
    assert request.tool_choice == "required" and request.parallel_tool_calls is False


@pytest.mark.parametrize(
    ("choice", "expected"),
    [({"type": "auto"}, "auto"), ({"type": "none"}, "none"), ({"type": "any"}, "required")],
)
def test_tool_choice_kinds(choice: dict[str, Any], expected: str) -> None:
    request = translate(messages=[{"role": "user", "content": "x"}], tools=[WEATHER], tool_choice=choice)
    assert request.tool_choice == expected and request.parallel_tool_calls is None


def test_a_named_tool_choice() -> None:
    choice = {"type": "tool", "name": "get_weather"}
    request = translate(messages=[{"role": "user", "content": "x"}], tools=[WEATHER], tool_choice=choice)
    assert isinstance(request.tool_choice, NamedToolChoice) and request.tool_choice.function.name == "get_weather"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"top_k": 5000}, "top_k"),
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking"),
        ({"output_config": {}}, "output_config"),
        ({"metadata": {"tenant": "x"}}, "metadata.tenant"),
        ({"stop_sequences": ["a", "b", "c", "d", "e"]}, "stop_sequences"),
        ({"service_tier": "priority"}, "service_tier"),
        ({"cache_control": {"type": "forever"}}, "cache_control"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0.type"),
        ({"tools": [{"name": "f"}]}, "tools.0.input_schema"),
        ({"tool_choice": {"type": "sometimes"}, "tools": [WEATHER]}, "tool_choice.type"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages.0.content"),
        (
            {"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
            "messages.0.content.0.type",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file"}}]}]},
            "messages.0.content.0.source",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "x", "cache_control": 1}]}]},
            "messages.0.content.0.cache_control",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": "t",
                                "content": [
                                    {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}}
                                ],
                            }
                        ],
                    }
                ]
            },
            "messages.0.content.0.content.0.type",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "assistant", "content": "b"},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "c"}]},
                ],
                "system": "s",
            },
            "messages.2.tool_call_id",
        ),
    ],
)
def test_what_cannot_be_carried_is_a_400_naming_the_parameter(fields: dict[str, Any], param: str) -> None:
    assert refused(**{"messages": [{"role": "user", "content": "x"}], **fields}) == param


def test_count_tokens_grows_with_the_input_and_the_tools() -> None:
    def count(**fields: Any) -> int:
        body = am.CountTokensBody.model_validate({"model": "gpt-4o-mini", **fields})
        return am.input_estimate(am.to_gateway_request(body))

    short = count(messages=[{"role": "user", "content": "Hello"}])
    longer = count(messages=[{"role": "user", "content": "Hello there " * 50}])
    with_tools = count(messages=[{"role": "user", "content": "Hello"}], tools=[WEATHER])
    assert 0 < short < longer and short < with_tools


# --------------------------------------------------------------------------- answer


def test_a_result_as_a_message() -> None:
    calls = [ToolCall(id="call_1", function=FunctionCall(name="get_weather", arguments='{"city":"Oslo"}'))]
    usage = Usage(input_tokens=120, output_tokens=7, cached_input_tokens=100)
    message = am.to_message(result("Let me look.", tool_calls=calls, finish_reason="tool_calls", usage=usage))
    assert message["id"] == "msg_0123456789abcdef" and message["type"] == "message"
    assert message["content"] == [
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Oslo"}},
    ]
    assert message["stop_reason"] == "tool_use" and message["stop_sequence"] is None
    assert message["usage"] == {
        "input_tokens": 20,
        "output_tokens": 7,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 0,
    }
    assert message["x_gateway"]["provider"] == "openai"
    parsed = anthropic.types.Message.model_validate(message)  # the client's own model reads it
    assert parsed.content[1].type == "tool_use"


@pytest.mark.parametrize(
    ("finish", "stop_reason"),
    [("stop", "end_turn"), ("length", "max_tokens"), ("content_filter", "refusal"), ("error", "end_turn")],
)
def test_stop_reasons(finish: str, stop_reason: str) -> None:
    assert am.to_message(result("x", finish_reason=finish))["stop_reason"] == stop_reason


@pytest.mark.parametrize(
    ("err", "status", "kind"),
    [
        (InvalidRequestError("bad", details={"param": "max_tokens"}), 400, "invalid_request_error"),
        (MissingApiKeyError("no key"), 401, "authentication_error"),
        (UnknownModelError("no model"), 404, "not_found_error"),
        (ProviderUnavailableError("down", provider="anthropic", model="m"), 503, "overloaded_error"),
        (StreamInterruptedError("cut"), 502, "api_error"),
    ],
)
def test_errors_in_anthropics_shape(err: GatewayError, status: int, kind: str) -> None:
    body = answers.error_body(err, anthropic_style=True)
    assert err.http_status == status
    assert body["type"] == "error" and body["error"]["type"] == kind and body["error"]["message"] == err.message
    assert body["error"]["code"] == err.code


def test_only_the_messages_routes_answer_in_anthropics_shape() -> None:
    assert am.anthropic_shaped("/v1/messages") and am.anthropic_shaped("/v1/messages/count_tokens")
    assert not am.anthropic_shaped("/v1/chat/completions") and not am.anthropic_shaped("/v1/completions")


# --------------------------------------------------------------------------- the event stream


def encode(stream: ScriptedStream, estimate: int = 9) -> bytes:
    return encoded(MessageEventEncoder(stream, estimate), stream)


def client_for(raw: bytes) -> anthropic.Anthropic:
    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream; charset=utf-8"}, content=raw)

    http = httpx2.Client(transport=httpx2.MockTransport(answer))
    return anthropic.Anthropic(api_key="k", base_url="http://gateway.test", http_client=http, max_retries=0)


def open_stream(raw: bytes) -> Any:
    return client_for(raw).messages.stream(model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}])


def test_a_text_stream_read_by_the_anthropic_client() -> None:
    raw = encode(ScriptedStream(text_script("Hel", "lo ", "world")))
    with open_stream(raw) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert pieces == ["Hel", "lo ", "world"]
    assert final.id == "msg_0123456789abcdef" and final.model == "gpt-4o-mini"
    assert [b.type for b in final.content] == ["text"] and final.content[0].text == "Hello world"
    assert final.stop_reason == "end_turn"
    # message_start's estimate (9) replaced by the provider's count at message_delta: 12 - 2 cached.
    assert (final.usage.input_tokens, final.usage.output_tokens, final.usage.cache_read_input_tokens) == (10, 5, 2)


def test_the_event_order_and_indexes() -> None:
    raw = encode(ScriptedStream(tool_script()))
    events = [line.removeprefix(b"event: ").decode() for line in raw.split(b"\n") if line.startswith(b"event: ")]
    assert events == [
        "message_start",
        "content_block_start",  # 0: text
        "content_block_delta",
        "content_block_stop",
        "content_block_start",  # 1: get_weather
        "content_block_delta",
        "content_block_stop",
        "content_block_start",  # 2: get_time, its arguments in three pieces
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


def test_a_tool_use_stream_read_by_the_anthropic_client() -> None:
    with open_stream(encode(ScriptedStream(tool_script()))) as stream:
        final = stream.get_final_message()
    text, weather, time = final.content
    assert text.type == "text" and text.text == "Let me check."
    assert weather.type == "tool_use" and (weather.id, weather.name, weather.input) == (
        "call_a",
        "get_weather",
        {"city": "Paris"},
    )
    assert time.type == "tool_use" and (time.name, time.input) == ("get_time", {"zone": "CET"})
    assert final.stop_reason == "tool_use"


def test_a_broken_stream_ends_with_an_error_event_the_client_raises() -> None:
    stream = ScriptedStream(text_script("Hel", "lo")[:-1], fail=StreamInterruptedError("the provider went away"))
    raw = encode(stream)
    assert b"message_stop" not in raw and b"message_delta" not in raw
    assert raw.endswith(b"\n\n") and b"event: error\n" in raw
    received: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as caught, open_stream(raw) as reading:
        received.extend(reading.text_stream)
    assert received == ["Hel", "lo"]
    body: Any = caught.value.body
    assert body["type"] == "error" and body["error"]["type"] == "api_error"
    assert body["error"]["code"] == "stream_interrupted"


def test_the_anthropic_adapter_sends_the_caching_breakpoints() -> None:
    from llm_gateway.models import ProviderRequest
    from llm_gateway.providers.anthropic import AnthropicProvider

    marked = {"type": "text", "text": "Doc", "cache_control": {"type": "ephemeral", "ttl": "1h"}}
    request = translate(
        system=[{"type": "text", "text": "Sys", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": [marked, {"type": "text", "text": "Q"}]}],
    )
    wire = ProviderRequest(model="claude-3-5-haiku-latest", messages=request.messages, max_tokens=10)
    body = AnthropicProvider(api_key="k", base_url="http://x.test").build_request(wire).body
    assert body["system"] == [{"type": "text", "text": "Sys", "cache_control": {"type": "ephemeral"}}]
    assert body["messages"][0]["content"] == [marked, {"type": "text", "text": "Q"}]
    unmarked = translate(system="Sys", messages=[{"role": "user", "content": "Q"}]).messages
    plain = ProviderRequest(model="m", messages=unmarked, max_tokens=10)
    assert AnthropicProvider(api_key="k", base_url="http://x.test").build_request(plain).body["system"] == "Sys"


@pytest.mark.parametrize(
    ("model", "cached"),
    [("us.anthropic.claude-haiku-4-5-20251001-v1:0", True), ("us.meta.llama3-3-70b-instruct-v1:0", False)],
)
def test_bedrock_gets_a_cache_point_after_each_breakpoint_on_models_that_cache(model: str, cached: bool) -> None:
    from llm_gateway.providers.bedrock_converse import CACHE_POINT, conversation

    marked = {"type": "text", "text": "Doc", "cache_control": {"type": "ephemeral"}}
    request = translate(
        system=[{"type": "text", "text": "Sys", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": [marked, {"type": "text", "text": "Q"}]}],
    )
    system, turns = conversation(request.messages, model, with_tools=False)
    point = [CACHE_POINT] if cached else []
    assert system == [{"text": "Sys"}, *point]
    assert turns == [{"role": "user", "content": [{"text": "Doc"}, *point, {"text": "Q"}]}]
    plain, _ = conversation(
        translate(system="Sys", messages=[{"role": "user", "content": "Q"}]).messages, model, with_tools=False
    )
    assert plain == [{"text": "Sys"}]


def test_top_k_is_honoured_by_anthropic_and_gemini_and_refused_elsewhere() -> None:
    from llm_gateway.catalog import default_catalog
    from llm_gateway.routing.params import params_in_use, unsupported

    request = translate(messages=[{"role": "user", "content": "x"}], top_k=5)
    assert params_in_use(request) == ["top_k"]
    catalog = default_catalog()
    assert unsupported(["top_k"], catalog.get("claude-3-5-haiku-latest")) == []
    assert unsupported(["top_k"], catalog.get("gemini-2.0-flash")) == []
    assert unsupported(["top_k"], catalog.get("gpt-4o-mini")) == ["top_k"]
    assert unsupported(["top_k"], catalog.get("amazon.nova-lite-v1:0")) == ["top_k"]
