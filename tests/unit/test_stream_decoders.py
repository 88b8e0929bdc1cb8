"""The adapters' stream decoders on event sequences the simulator does not produce: text blocks before
tool calls, a forced structured-output tool, refusals, calls without arguments, Gemini's single call."""

import json
from typing import Any

import pytest

from llm_gateway.errors import ContentFilteredError, ProviderError, ProviderUnavailableError, RateLimitedError
from llm_gateway.models import ProviderRequest
from llm_gateway.providers.anthropic import AnthropicProvider
from llm_gateway.providers.gemini import GeminiProvider
from llm_gateway.providers.openai import OpenAIProvider
from llm_gateway.providers.stream_call import StreamDecoder
from llm_gateway.streaming.events import StreamEnd, TextDelta, ToolCallDelta

TOOLS = [
    {"type": "function", "function": {"name": "a", "parameters": {"type": "object", "properties": {}}}},
    {"type": "function", "function": {"name": "b", "parameters": {"type": "object", "properties": {}}}},
]


def request(**extra: Any) -> ProviderRequest:
    return ProviderRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10, **extra}
    )


def feed(decoder: StreamDecoder, events: list[tuple[str, Any]]) -> list[Any]:
    out: list[Any] = []
    for name, data in events:
        out += list(decoder.decode(name, data if isinstance(data, str) else json.dumps(data)))
    return out


def anthropic_events(*blocks: list[tuple[str, Any]], stop_reason: str = "tool_use") -> list[tuple[str, Any]]:
    events: list[tuple[str, Any]] = [
        ("message_start", {"type": "message_start", "message": {"id": "msg_1", "model": "m", "usage": {
            "input_tokens": 10, "cache_read_input_tokens": 4, "output_tokens": 1}}}),
    ]  # fmt: skip
    for block in blocks:
        events += block
    events += [
        (
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": stop_reason}, "usage": {"output_tokens": 9}},
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return events


def text_block(index: int, text: str) -> list[tuple[str, Any]]:
    opening = {"type": "text", "text": ""}
    delta = {"type": "text_delta", "text": text}
    return [
        ("content_block_start", {"type": "content_block_start", "index": index, "content_block": opening}),
        ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}),
        ("content_block_stop", {"type": "content_block_stop", "index": index}),
    ]


def tool_block(index: int, call_id: str, name: str, *pieces: str) -> list[tuple[str, Any]]:
    start = {"type": "content_block_start", "index": index,
             "content_block": {"type": "tool_use", "id": call_id, "name": name, "input": {}}}  # fmt: skip
    deltas = [
        ("content_block_delta", {"type": "content_block_delta", "index": index,
                                 "delta": {"type": "input_json_delta", "partial_json": piece}})
        for piece in pieces
    ]  # fmt: skip
    return [
        ("content_block_start", start),
        *deltas,
        ("content_block_stop", {"type": "content_block_stop", "index": index}),
    ]


def test_anthropic_tool_indexes_skip_text_blocks_and_a_call_without_arguments_gets_braces():
    decoder = AnthropicProvider(base_url="x", api_key="k").stream_decoder(request(tools=TOOLS))
    events = feed(
        decoder,
        anthropic_events(
            text_block(0, "Let me check."),
            tool_block(1, "toolu_a", "a", '{"x"', ": 1}"),
            tool_block(2, "toolu_b", "b"),
        ),
    )
    assert events == [
        TextDelta("Let me check."),
        ToolCallDelta(index=0, id="toolu_a", name="a"),
        ToolCallDelta(index=0, arguments='{"x"'),
        ToolCallDelta(index=0, arguments=": 1}"),
        ToolCallDelta(index=1, id="toolu_b", name="b"),
        ToolCallDelta(index=1, arguments="{}"),
        StreamEnd(
            finish_reason="tool_calls",
            usage=events[-1].usage,
            provider_request_id="msg_1",
            raw_model="m",
        ),
    ]
    usage = events[-1].usage
    assert (usage.input_tokens, usage.output_tokens, usage.cached_input_tokens) == (14, 9, 4)
    assert decoder.ended


def test_anthropic_forced_structured_tool_streams_its_input_as_the_text():
    decoder = AnthropicProvider(base_url="x", api_key="k").stream_decoder(request())
    events = feed(decoder, anthropic_events(tool_block(0, "toolu_s", "answer", '{"a":', " 2}")))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == '{"a": 2}'
    assert events[-1].finish_reason == "stop"


def test_anthropic_refusal_and_error_events():
    provider = AnthropicProvider(base_url="x", api_key="k")
    with pytest.raises(ContentFilteredError):
        feed(provider.stream_decoder(request()), anthropic_events(stop_reason="refusal"))
    error = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    with pytest.raises(RateLimitedError):
        feed(provider.stream_decoder(request()), [("error", error)])


def openai_chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "c1", "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def test_openai_tool_calls_keep_their_index_and_name_only_once():
    decoder = OpenAIProvider(base_url="x", api_key="k").stream_decoder(request(tools=TOOLS))
    first = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "a", "arguments": ""}}
    events = feed(
        decoder,
        [
            ("message", openai_chunk({"role": "assistant", "content": None, "tool_calls": [first]})),
            ("message", openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"x":'}}]})),
            # a compatible server that repeats the id on every piece and sends the object whole
            ("message", openai_chunk({"tool_calls": [
                {"index": 1, "id": "c2", "function": {"name": "b", "arguments": {"y": 1}}},
            ]})),
            ("message", openai_chunk({"tool_calls": [{"index": 0, "id": "call_1", "function": {"arguments": "1}"}}]})),
            ("message", openai_chunk({}, "tool_calls")),
            ("message", {"id": "c1", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}),
            ("message", "[DONE]"),
        ],
    )  # fmt: skip
    assert events[:-1] == [
        ToolCallDelta(index=0, id="call_1", name="a"),
        ToolCallDelta(index=0, arguments='{"x":'),
        ToolCallDelta(index=1, id="c2", name="b", arguments='{"y": 1}'),
        ToolCallDelta(index=0, arguments="1}"),
    ]
    assert events[-1].finish_reason == "tool_calls" and events[-1].usage.output_tokens == 4


def test_openai_refusal_error_chunk_and_unknown_finish():
    provider = OpenAIProvider(base_url="x", api_key="k")
    with pytest.raises(ContentFilteredError):
        feed(provider.stream_decoder(request()), [("message", openai_chunk({"refusal": "I can't"}))])
    with pytest.raises(ContentFilteredError):
        feed(
            provider.stream_decoder(request()), [("message", openai_chunk({}, "content_filter")), ("message", "[DONE]")]
        )
    with pytest.raises(ProviderUnavailableError):
        feed(provider.stream_decoder(request()), [("message", {"error": {"message": "boom", "type": "server_error"}})])
    events = feed(
        provider.stream_decoder(request()),
        [("message", openai_chunk({"content": "hi"}, "new_reason")), ("message", "[DONE]")],
    )
    assert events[-1] == StreamEnd(finish_reason="error", usage=None, provider_request_id="c1", raw_model="m")


def gemini_chunk(parts: list[dict[str, Any]], finish: str | None = None) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], "responseId": "r1", "modelVersion": "m",
            "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 2, "thoughtsTokenCount": 1}}  # fmt: skip


def test_gemini_calls_get_ids_and_indexes_and_parallel_false_keeps_the_first():
    calls = [{"functionCall": {"name": "a", "args": {"x": 1}}}, {"functionCall": {"name": "b", "args": {}}}]
    for parallel, expected in ((None, ["a", "b"]), (False, ["a"])):
        decoder = GeminiProvider(base_url="x", api_key="k").stream_decoder(
            request(tools=TOOLS, parallel_tool_calls=parallel)
        )
        events = feed(decoder, [("message", gemini_chunk([{"text": "ok"}])), ("message", gemini_chunk(calls, "STOP"))])
        deltas = [e for e in events if isinstance(e, ToolCallDelta)]
        assert [d.name for d in deltas] == expected and [d.index for d in deltas] == list(range(len(expected)))
        assert all(d.id and d.id.startswith("call_") for d in deltas)
        assert deltas[0].arguments == '{"x": 1}'
        end = decoder.at_eof()
        assert end is not None and end.finish_reason == "tool_calls" and end.usage.output_tokens == 3


def test_gemini_without_a_finish_reason_is_cut_and_a_blocked_answer_is_filtered():
    decoder = GeminiProvider(base_url="x", api_key="k").stream_decoder(request())
    feed(decoder, [("message", gemini_chunk([{"text": "partial"}]))])
    assert decoder.at_eof() is None
    with pytest.raises(ContentFilteredError):
        feed(
            GeminiProvider(base_url="x", api_key="k").stream_decoder(request()),
            [("message", gemini_chunk([], "SAFETY"))],
        )
    with pytest.raises(ProviderError):
        feed(
            GeminiProvider(base_url="x", api_key="k").stream_decoder(request()),
            [("message", {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "quota"}})],
        )
