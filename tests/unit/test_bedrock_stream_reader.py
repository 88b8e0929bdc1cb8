"""ConverseStreamReader: ConverseStream messages to the gateway's stream events, without I/O."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llm_gateway.errors import (
    ContentFilteredError,
    ContextTooLongError,
    MalformedResponseError,
    ProviderBadRequestError,
    ProviderUnavailableError,
    RateLimitedError,
)
from llm_gateway.models import ProviderRequest, Usage
from llm_gateway.providers.bedrock_stream import ConverseStreamReader
from llm_gateway.providers.eventstream import EventStreamDecoder, EventStreamMessage
from llm_gateway.streaming.events import ProviderEvent, StreamEnd, TextDelta, ToolCallDelta
from local.simulator.eventstream_wire import event_frame, exception_frame, frame

TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}


def request(**kw: Any) -> ProviderRequest:
    return ProviderRequest.model_validate(
        {"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}], **kw}
    )


def message(event: str, payload: dict[str, Any]) -> EventStreamMessage:
    (decoded,) = EventStreamDecoder().feed(event_frame(event, payload))
    return decoded


def read(reader: ConverseStreamReader, *events: tuple[str, dict[str, Any]]) -> list[ProviderEvent]:
    out: list[ProviderEvent] = []
    for name, payload in events:
        out += reader.read(message(name, payload))
    return out


def ending(stop: str = "end_turn", **usage: int) -> list[tuple[str, dict[str, Any]]]:
    counts = {"inputTokens": 7, "outputTokens": 3, **usage}
    return [("messageStop", {"stopReason": stop}), ("metadata", {"usage": counts, "metrics": {"latencyMs": 1}})]


def test_text_then_end_with_usage_including_cache_reads_and_writes():
    reader = ConverseStreamReader(request())
    events = read(
        reader,
        ("messageStart", {"role": "assistant", "p": "abc"}),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hel"}, "p": "abcdef"}),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": ""}}),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "lo"}}),
        ("contentBlockStop", {"contentBlockIndex": 0}),
        *ending(cacheReadInputTokens=100, cacheWriteInputTokens=5),
    )
    assert events[:2] == [TextDelta("Hel"), TextDelta("lo")]
    assert events[2] == StreamEnd("stop", Usage(input_tokens=112, output_tokens=3, cached_input_tokens=100), None, "m")
    assert reader.done


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("max_tokens", "length"),
        ("stop_sequence", "stop"),
        ("model_context_window_exceeded", "length"),
        ("new", "error"),
    ],
)
def test_stop_reasons_map_as_for_converse(stop, finish):
    events = read(ConverseStreamReader(request()), *ending(stop))
    assert events == [StreamEnd(finish, Usage(input_tokens=7, output_tokens=3), None, "m")]


def test_tool_calls_are_indexed_in_order_of_appearance_with_id_and_name_first():
    reader = ConverseStreamReader(request(tools=[TOOL]))
    start = {"toolUse": {"toolUseId": "tooluse_1", "name": "lookup"}}
    second = {"toolUse": {"toolUseId": "tooluse_2", "name": "lookup"}}
    events = read(
        reader,
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Let me look."}}),
        ("contentBlockStop", {"contentBlockIndex": 0}),
        ("contentBlockStart", {"contentBlockIndex": 1, "start": start}),
        ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"q":'}}}),
        ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '"a"}'}}}),
        ("contentBlockStop", {"contentBlockIndex": 1}),
        ("contentBlockStart", {"contentBlockIndex": 2, "start": second}),
        ("contentBlockDelta", {"contentBlockIndex": 2, "delta": {"toolUse": {"input": "{}"}}}),
        ("contentBlockStop", {"contentBlockIndex": 2}),
        *ending("tool_use"),
    )
    assert events[:-1] == [
        TextDelta("Let me look."),
        ToolCallDelta(0, id="tooluse_1", name="lookup"),
        ToolCallDelta(0, arguments='{"q":'),
        ToolCallDelta(0, arguments='"a"}'),
        ToolCallDelta(1, id="tooluse_2", name="lookup"),
        ToolCallDelta(1, arguments="{}"),
    ]
    assert isinstance(events[-1], StreamEnd) and events[-1].finish_reason == "tool_calls"


def test_forced_structured_tool_streams_its_input_as_the_text():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    reader = ConverseStreamReader(
        request(
            response_format={"type": "json_schema", "json_schema": {"name": "r", "schema": schema}},
            native_structured=True,
        )
    )
    start = {"toolUse": {"toolUseId": "t", "name": "r"}}
    events = read(
        reader,
        ("contentBlockStart", {"contentBlockIndex": 0, "start": start}),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"toolUse": {"input": '{"a"'}}}),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"toolUse": {"input": ": 1}"}}}),
        ("contentBlockStop", {"contentBlockIndex": 0}),
        *ending("tool_use"),
    )
    assert json.loads("".join(e.text for e in events if isinstance(e, TextDelta))) == {"a": 1}
    assert isinstance(events[-1], StreamEnd) and events[-1].finish_reason == "stop"


def test_forced_tool_without_input_answers_an_empty_object():
    schema = {"type": "object"}
    reader = ConverseStreamReader(
        request(
            response_format={"type": "json_schema", "json_schema": {"name": "r", "schema": schema}},
            native_structured=True,
        )
    )
    events = read(
        reader,
        ("contentBlockStart", {"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": "t", "name": "r"}}}),
        ("contentBlockStop", {"contentBlockIndex": 0}),
    )
    assert events == [TextDelta("{}")]


def test_filtered_answer_is_a_content_filtered_error():
    reader = ConverseStreamReader(request())
    with pytest.raises(ContentFilteredError):
        read(reader, ("messageStop", {"stopReason": "guardrail_intervened"}))


@pytest.mark.parametrize(
    ("exception_type", "text", "error"),
    [
        ("throttlingException", "Too many requests", RateLimitedError),
        ("serviceUnavailableException", "down", ProviderUnavailableError),
        ("modelStreamErrorException", "model failed", ProviderUnavailableError),
        ("internalServerException", "oops", ProviderUnavailableError),
        ("validationException", "bad field", ProviderBadRequestError),
        ("validationException", "Input is too long for requested model.", ContextTooLongError),
        ("somethingNewException", "?", ProviderUnavailableError),
    ],
)
def test_exception_events_map_onto_the_exception_tree(exception_type, text, error):
    reader = ConverseStreamReader(request())
    (decoded,) = EventStreamDecoder().feed(exception_frame(exception_type, text))
    with pytest.raises(error) as info:
        reader.read(decoded)
    assert type(info.value) is error
    assert text not in info.value.message  # the provider's words can quote the prompt: type only
    assert exception_type in info.value.message


def test_protocol_level_error_message_is_an_unavailable_provider():
    (decoded,) = EventStreamDecoder().feed(
        frame({":message-type": "error", ":error-code": "InternalFailure", ":error-message": "x"}, b"")
    )
    with pytest.raises(ProviderUnavailableError, match="InternalFailure"):
        ConverseStreamReader(request()).read(decoded)


@pytest.mark.parametrize(
    "events",
    [
        [("contentBlockDelta", {"contentBlockIndex": 0})],  # no delta
        [("contentBlockDelta", {"delta": {"text": "x"}})],  # no block index
        [("metadata", {"usage": {"inputTokens": 1, "outputTokens": 1}})],  # metadata before messageStop
        [("messageStop", {"stopReason": "end_turn"}), ("metadata", {"metrics": {}})],  # no usage
        [*ending(), ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "late"}})],  # after the end
    ],
)
def test_unexpected_shapes_are_malformed(events):
    with pytest.raises(MalformedResponseError):
        read(ConverseStreamReader(request(tools=[TOOL])), *events)


def test_a_tool_delta_for_a_block_never_started_is_malformed():
    with pytest.raises(MalformedResponseError, match="never started"):
        read(
            ConverseStreamReader(request(tools=[TOOL])),
            ("contentBlockDelta", {"contentBlockIndex": 3, "delta": {"toolUse": {"input": "{}"}}}),
        )


def test_payload_that_is_not_json_is_malformed():
    (decoded,) = EventStreamDecoder().feed(
        frame({":event-type": "contentBlockDelta", ":message-type": "event"}, b'{"contentBlockIndex": 0, "delta"')
    )
    with pytest.raises(MalformedResponseError, match="not JSON"):
        ConverseStreamReader(request()).read(decoded)


def test_events_the_gateway_does_not_use_are_skipped():
    reader = ConverseStreamReader(request())
    events = read(
        reader,
        ("someFutureEvent", {"x": 1}),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "thinking"}}}),
        ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"text": "answer"}}),
        *ending(),
    )
    assert events[0] == TextDelta("answer") and len(events) == 2
