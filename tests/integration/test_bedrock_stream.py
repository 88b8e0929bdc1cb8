"""The Bedrock adapter's ConverseStream against the simulator, over real sockets.

The simulator answers ``/converse-stream`` with the same answer as ``/converse`` (answers are derived from
the prompt), as eventstream frames flushed one by one; its stream faults cut, stall, corrupt or end the
stream with an exception event. botocore's own ConverseStream parser (its event-stream decoder and the
service model) reads the simulator's bytes too: the frames and events are the real format.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import botocore.session
import httpx
import pytest
from botocore.eventstream import EventStream
from botocore.parsers import EventStreamJSONParser

from llm_gateway.errors import (
    ContentFilteredError,
    ContextTooLongError,
    MalformedResponseError,
    ProviderAuthError,
    ProviderBadRequestError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitedError,
)
from llm_gateway.models import ProviderRequest, ProviderResponse
from llm_gateway.providers.bedrock import BedrockProvider
from llm_gateway.streaming.events import ProviderEvent, StreamEnd, TextDelta, ToolCallDelta

pytestmark = pytest.mark.integration

MODEL = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def chat(content: str = "Say hello to the streaming world, in a few words.", **kw: Any) -> ProviderRequest:
    kw.setdefault("model", MODEL)
    kw.setdefault("max_tokens", 200)
    return ProviderRequest.model_validate({"messages": [{"role": "user", "content": content}], **kw})


def provider_for(sim: Any) -> BedrockProvider:
    return BedrockProvider(base_url=sim.base_urls()["bedrock"], region="us-east-1")


def complete(sim: Any, request: ProviderRequest) -> ProviderResponse:
    async def go() -> ProviderResponse:
        async with httpx.AsyncClient() as client:
            return await provider_for(sim).complete(request, client=client, timeout_s=10.0)

    return asyncio.run(go())


def stream(
    sim: Any, request: ProviderRequest, *, first_byte: float = 5.0, idle: float = 5.0, total: float = 10.0
) -> tuple[list[ProviderEvent], list[float]]:
    """Every event, and when each arrived (seconds since the call started)."""

    async def go() -> tuple[list[ProviderEvent], list[float]]:
        events: list[ProviderEvent] = []
        times: list[float] = []
        started = time.monotonic()
        async with httpx.AsyncClient() as client:
            iterator = provider_for(sim).stream(
                request, client=client, timeout_s=total, first_byte_timeout_s=first_byte, idle_timeout_s=idle
            )
            async for event in iterator:
                events.append(event)
                times.append(time.monotonic() - started)
        return events, times

    return asyncio.run(go())


def events_before_error(sim: Any, request: ProviderRequest, **timeouts: float) -> tuple[list[ProviderEvent], Exception]:
    seen: list[ProviderEvent] = []

    async def go() -> None:
        async with httpx.AsyncClient() as client:
            iterator = provider_for(sim).stream(
                request,
                client=client,
                timeout_s=timeouts.get("total", 10.0),
                first_byte_timeout_s=timeouts.get("first_byte", 5.0),
                idle_timeout_s=timeouts.get("idle", 5.0),
            )
            async for event in iterator:
                seen.append(event)

    with pytest.raises(ProviderError) as info:
        asyncio.run(go())
    return seen, info.value


def text_of(events: list[ProviderEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def calls_of(events: list[ProviderEvent]) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    for event in events:
        if isinstance(event, ToolCallDelta):
            if event.id is not None:
                assert event.index == len(calls), "a call's first piece comes in order of appearance"
                calls.append({"id": event.id, "name": event.name, "arguments": ""})
            calls[event.index]["arguments"] += event.arguments
    return calls


def the_end(events: list[ProviderEvent]) -> StreamEnd:
    ends = [e for e in events if isinstance(e, StreamEnd)]
    assert len(ends) == 1 and events[-1] is ends[0], "exactly one StreamEnd, last"
    return ends[0]


def test_text_stream_reassembles_to_the_converse_answer(simulator):
    request = chat()
    whole = complete(simulator, request)
    events, _ = stream(simulator, request)
    end = the_end(events)
    assert text_of(events) == whole.content and whole.content
    assert len([e for e in events if isinstance(e, TextDelta)]) > 1, "the text came in pieces"
    assert end.finish_reason == whole.finish_reason == "stop"
    assert end.usage == whole.usage and end.usage is not None and end.usage.output_tokens > 0
    assert end.provider_request_id and end.raw_model == MODEL
    call = simulator.calls("bedrock")[-1]
    assert call["path"].endswith("/converse-stream") and call["stream"]["outcome"] == "completed"
    assert call["stream"]["events_sent"] > 4


def test_stream_request_is_signed_for_converse_stream(simulator):
    sent: list[httpx.Request] = []

    async def go() -> None:
        async def capture(req: httpx.Request) -> None:
            sent.append(req)

        async with httpx.AsyncClient(event_hooks={"request": [capture]}) as client:
            iterator = provider_for(simulator).stream(
                chat(), client=client, timeout_s=10, first_byte_timeout_s=5, idle_timeout_s=5
            )
            async for _ in iterator:
                pass

    asyncio.run(go())
    (req,) = sent
    assert req.url.raw_path.decode().endswith("/converse-stream")
    assert req.headers["accept"] == "application/vnd.amazon.eventstream"
    assert req.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=testing/")
    assert "/us-east-1/bedrock/aws4_request" in req.headers["authorization"]


def test_tool_calls_stream_with_ids_names_and_arguments_in_pieces(simulator):
    request = chat("What is the weather in Paris and in Rome?", tools=[WEATHER], tool_choice="required")
    whole = complete(simulator, request)
    events, _ = stream(simulator, request)
    assert whole.tool_calls
    calls = calls_of(events)
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [
        (c.function.name, json.loads(c.function.arguments)) for c in whole.tool_calls
    ]
    assert all(c["id"].startswith("tooluse_") for c in calls)
    pieces = [e for e in events if isinstance(e, ToolCallDelta) and e.arguments]
    assert len(pieces) > len(calls), "arguments came in several pieces"
    assert all(e.id is None and e.name is None for e in pieces)
    assert the_end(events).finish_reason == "tool_calls"


def test_structured_answer_through_the_forced_tool_streams_as_text(simulator):
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
    }
    request = chat(
        "Give me a city.",
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}},
        native_structured=True,
    )
    whole = complete(simulator, request)
    events, _ = stream(simulator, request)
    assert json.loads(text_of(events)) == json.loads(whole.content)
    assert not calls_of(events)
    assert the_end(events).finish_reason == whole.finish_reason == "stop"


def test_first_event_arrives_before_the_stream_ends(simulator):
    events, times = stream(simulator, chat("[[sim:fault=stream_slow,delay=0.15]] Tell me a short story."))
    assert times[-1] - times[0] > 0.3, "frames were flushed one by one, with the delay between them"
    assert isinstance(the_end(events), StreamEnd)


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("rate_limit", RateLimitedError),
        ("server_error", ProviderUnavailableError),
        ("overloaded", ProviderUnavailableError),
        ("model_not_ready", ProviderUnavailableError),
        ("model_timeout", ProviderTimeoutError),
        ("auth", ProviderAuthError),
        ("bad_request", ProviderBadRequestError),
        ("context_length", ContextTooLongError),
        ("content_filter", ContentFilteredError),
        ("drop", ProviderConnectionError),
        ("malformed", MalformedResponseError),
        ("malformed_shape", MalformedResponseError),
    ],
)
def test_failures_before_the_first_event_raise_what_complete_raises(simulator, fault, error):
    request = chat(f"[[sim:fault={fault}]] Hi")
    with pytest.raises(ProviderError) as whole:
        complete(simulator, request)
    seen, exc = events_before_error(simulator, request)
    assert type(exc) is type(whole.value) is error
    if fault != "content_filter":  # Bedrock streams the refusal's text before its stopReason
        assert seen == []


def test_slow_first_byte_is_a_first_byte_timeout(simulator):
    seen, exc = events_before_error(simulator, chat("[[sim:fault=slow,delay=1.5]] Hi"), first_byte=0.3)
    assert isinstance(exc, ProviderTimeoutError) and "no first event within 0.3s (first-byte timeout)" in exc.message
    assert seen == []


def test_stall_mid_stream_is_an_idle_timeout(simulator):
    started = time.monotonic()
    seen, exc = events_before_error(
        simulator, chat("[[sim:fault=stream_stall,after=3,delay=3]] Tell me a story."), idle=0.4
    )
    assert isinstance(exc, ProviderTimeoutError) and "no event for 0.4s (idle timeout)" in exc.message
    assert text_of(seen), "the events before the stall were delivered"
    assert time.monotonic() - started < 2.5


def test_slow_stream_past_the_total_timeout_is_a_timeout(simulator):
    seen, exc = events_before_error(
        simulator, chat("[[sim:fault=stream_slow,delay=0.3]] Tell me a long story please."), idle=1, total=0.8
    )
    assert isinstance(exc, ProviderTimeoutError) and "did not finish the stream within 0.8s" in exc.message
    assert seen


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("stream_cut", ProviderConnectionError),
        ("stream_malformed", MalformedResponseError),
        ("stream_error", ProviderUnavailableError),
        ("stream_throttling", RateLimitedError),
        ("stream_unavailable", ProviderUnavailableError),
        ("stream_internal", ProviderUnavailableError),
        ("stream_validation", ProviderBadRequestError),
    ],
)
def test_mid_stream_faults_map_onto_the_exception_tree(simulator, fault, error):
    seen, exc = events_before_error(simulator, chat(f"[[sim:fault={fault},after=3]] Tell me a story."))
    assert type(exc) is error
    assert text_of(seen), "the text before the fault was delivered"
    assert not any(isinstance(e, StreamEnd) for e in seen)
    assert simulator.calls("bedrock")[-1]["fault"] == fault


def test_stream_faults_do_not_touch_a_converse_call(simulator):
    assert complete(simulator, chat("[[sim:fault=stream_cut,after=1]] Hi")).content


def test_closing_the_stream_early_closes_the_connection(simulator):
    async def go() -> None:
        async with httpx.AsyncClient() as client:
            iterator = provider_for(simulator).stream(
                chat("[[sim:fault=stream_slow,delay=0.3]] Tell me a long story please."),
                client=client,
                timeout_s=10,
                first_byte_timeout_s=5,
                idle_timeout_s=5,
            )
            first = await anext(aiter(iterator))
            assert isinstance(first, TextDelta)
            await iterator.aclose()  # type: ignore[attr-defined]

    asyncio.run(go())
    deadline = time.monotonic() + 5
    while simulator.calls("bedrock")[-1].get("stream") is None and time.monotonic() < deadline:
        time.sleep(0.05)
    call = simulator.calls("bedrock")[-1]
    assert call["stream"]["outcome"] == "client_closed", call


class _Raw:
    def __init__(self, data: bytes, split: Callable[[bytes], list[bytes]]) -> None:
        self._chunks = split(data)

    def stream(self, **_: Any) -> Any:
        yield from self._chunks


@pytest.mark.parametrize("prompt", ["Say hello to the streaming world.", "Weather in Oslo?"])
def test_botocore_reads_the_simulator_stream_as_converse_stream(simulator, prompt):
    """botocore's ConverseStream parser (service model + event-stream decoder) reads the very bytes."""
    provider = provider_for(simulator)
    request = chat(prompt, tools=[WEATHER], tool_choice="required") if "Weather" in prompt else chat(prompt)
    wire = provider.build_stream_request(request)
    raw = httpx.post(wire.url, headers=wire.headers, content=wire.content, timeout=10).content
    model = botocore.session.get_session().get_service_model("bedrock-runtime")
    shape = model.operation_model("ConverseStream").output_shape.members["stream"]
    odd_split = _Raw(raw, lambda data: [data[i : i + 7] for i in range(0, len(data), 7)])
    parsed = [
        {k: v for k, v in event.items() if k != "ResponseMetadata"}
        for event in EventStream(odd_split, shape, EventStreamJSONParser(), "ConverseStream")
    ]
    names = [next(iter(event)) for event in parsed]
    assert names[0] == "messageStart" and names[-2:] == ["messageStop", "metadata"]
    assert parsed[-1]["metadata"]["usage"]["outputTokens"] > 0
    ours, _ = stream(simulator, request)
    text = "".join(e["contentBlockDelta"]["delta"].get("text", "") for e in parsed if "contentBlockDelta" in e)
    assert text == text_of(ours)
    starts = [e["contentBlockStart"]["start"]["toolUse"]["name"] for e in parsed if "contentBlockStart" in e]
    assert starts == [c["name"] for c in calls_of(ours)]


@pytest.mark.parametrize(
    ("fault", "code"),
    [("stream_throttling", "throttlingException"), ("stream_error", "modelStreamErrorException")],
)
def test_botocore_reads_the_simulator_exception_event_as_converse_stream_error(simulator, fault, code):
    from botocore.exceptions import EventStreamError

    wire = provider_for(simulator).build_stream_request(chat(f"[[sim:fault={fault},after=2]] Tell me a story."))
    raw = httpx.post(wire.url, headers=wire.headers, content=wire.content, timeout=10).content
    model = botocore.session.get_session().get_service_model("bedrock-runtime")
    shape = model.operation_model("ConverseStream").output_shape.members["stream"]
    events = EventStream(_Raw(raw, lambda data: [data]), shape, EventStreamJSONParser(), "ConverseStream")
    with pytest.raises(EventStreamError) as info:
        list(events)
    assert info.value.response["Error"]["Code"] == code


def test_a_slow_reader_is_not_an_idle_provider(simulator):
    """The idle clock runs while the adapter waits for the provider, not while the caller handles an event."""

    async def go() -> list[ProviderEvent]:
        events: list[ProviderEvent] = []
        async with httpx.AsyncClient() as client:
            iterator = provider_for(simulator).stream(
                chat("[[sim:fault=stream_slow,delay=0.05]] Tell me a story, slowly read."),
                client=client,
                timeout_s=20,
                first_byte_timeout_s=5,
                idle_timeout_s=0.2,
            )
            async for event in iterator:
                events.append(event)
                await asyncio.sleep(0.3)
        return events

    events = asyncio.run(go())
    assert isinstance(the_end(events), StreamEnd) and text_of(events)


def test_converse_stream_refuses_what_converse_refuses(simulator):
    url = f"{simulator.base_urls()['bedrock']}/model/{MODEL}/converse-stream"
    unsigned = httpx.post(url, json={"messages": [{"role": "user", "content": [{"text": "hi"}]}]}, timeout=5)
    assert unsigned.status_code == 403
    assert unsigned.headers["x-amzn-errortype"].startswith("MissingAuthenticationTokenException")
    provider = provider_for(simulator)
    content = json.dumps({"messages": [{"role": "assistant", "content": [{"text": "hi"}]}]}).encode()
    signed = provider._signed_headers(url, content, MODEL, "application/vnd.amazon.eventstream")
    refused = httpx.post(url, content=content, headers=signed, timeout=5)
    assert refused.status_code == 400 and refused.headers["content-type"].startswith("application/json")
    assert refused.headers["x-amzn-errortype"].startswith("ValidationException")
    assert "start with a user message" in refused.json()["message"]


def test_the_connection_is_released_before_stream_end_is_handed_over(simulator):
    """A caller that stops at StreamEnd (no aclose) leaves nothing open: with a one-connection pool, a
    second stream gets the connection at once."""

    async def go() -> list[str]:
        finishes: list[str] = []
        kept: list[Any] = []  # unfinished iterators stay referenced: no finalizer closes them behind our back
        limits = httpx.Limits(max_connections=1)
        async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(5, pool=0.5)) as client:
            for _ in range(2):
                iterator = aiter(
                    provider_for(simulator).stream(
                        chat(), client=client, timeout_s=10, first_byte_timeout_s=5, idle_timeout_s=5
                    )
                )
                kept.append(iterator)
                while not isinstance(event := await anext(iterator), StreamEnd):
                    pass
                finishes.append(event.finish_reason)  # and the iterator is left as it is
        return finishes

    assert asyncio.run(go()) == ["stop", "stop"]


def test_an_exception_event_is_logged_by_type_without_the_provider_text(simulator, caplog):
    caplog.set_level("WARNING", logger="llm_gateway.providers")
    events_before_error(simulator, chat("[[sim:fault=stream_validation,after=2]] Tell me a story."))
    (record,) = [r for r in caplog.records if r.getMessage() == "provider error"]
    assert record.error_type == "validationException" and record.in_stream is True
    assert not hasattr(record, "provider_message")
