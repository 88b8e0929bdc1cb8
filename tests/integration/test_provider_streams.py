"""The adapters' streams against the provider simulator's streams, over real sockets: the same answer
as the non-streamed call, tool calls in pieces, usage, every failure mapped to its error class, the
three timeouts, and an early close that the simulator sees."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from llm_gateway.errors import (
    ContentFilteredError,
    MalformedResponseError,
    ProviderAuthError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitedError,
)
from llm_gateway.models import ProviderRequest
from llm_gateway.providers import adapter_class
from llm_gateway.providers.base import Provider
from llm_gateway.streaming.events import ProviderEvent, StreamEnd, TextDelta, ToolCallDelta
from local.simulator import ProviderSimulator
from tests.support.sim_streams import stream_record

pytestmark = pytest.mark.integration

# adapter name -> (simulator base URL key, model)
ADAPTERS = {
    "openai": ("openai", "gpt-4o-mini"),
    "openai_compatible": ("compat", "local-llama"),
    "anthropic": ("anthropic", "claude-3-5-haiku-latest"),
    "gemini": ("gemini", "gemini-2.0-flash"),
}
SIM_NAME = {"openai": "openai", "openai_compatible": "compat", "anthropic": "anthropic", "gemini": "gemini"}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 3}},
                "required": ["city", "days"],
            },
        },
    },
    {"type": "function", "function": {"name": "get_time", "description": "The time now"}},
]
PROMPT = "Tell me a short story about streams and rivers, please."


def adapter(sim: ProviderSimulator, name: str) -> Provider:
    url_key, _ = ADAPTERS[name]
    return adapter_class(name)(base_url=sim.base_urls()[url_key], api_key="sim-key")


def request(name: str, text: str = PROMPT, **extra: Any) -> ProviderRequest:
    return ProviderRequest.model_validate(
        {"model": ADAPTERS[name][1], "messages": [{"role": "user", "content": text}], "max_tokens": 300, **extra}
    )


def open_stream(
    provider: Provider,
    req: ProviderRequest,
    client: httpx.AsyncClient,
    *,
    timeout_s: float = 10.0,
    first_byte_timeout_s: float = 5.0,
    idle_timeout_s: float = 5.0,
) -> AsyncIterator[ProviderEvent]:
    return provider.stream(
        req,
        client=client,
        timeout_s=timeout_s,
        first_byte_timeout_s=first_byte_timeout_s,
        idle_timeout_s=idle_timeout_s,
    )


def stream_all(provider: Provider, req: ProviderRequest, **timeouts: float) -> list[ProviderEvent]:
    async def run() -> list[ProviderEvent]:
        async with httpx.AsyncClient() as client:
            return [event async for event in open_stream(provider, req, client, **timeouts)]

    return asyncio.run(run())


def stream_until_error(provider: Provider, req: ProviderRequest, **timeouts: float) -> tuple[list[Any], Exception]:
    """The events received before the stream failed, and the failure."""
    received: list[Any] = []

    async def run() -> None:
        async with httpx.AsyncClient() as client:
            async for event in open_stream(provider, req, client, **timeouts):
                received.append(event)

    with pytest.raises(ProviderError) as raised:
        asyncio.run(run())
    return received, raised.value


def complete(provider: Provider, req: ProviderRequest) -> Any:
    async def run() -> Any:
        async with httpx.AsyncClient() as client:
            return await provider.complete(req, client=client, timeout_s=10.0)

    return asyncio.run(run())


def assemble(events: list[ProviderEvent]) -> tuple[str, list[dict[str, Any]], StreamEnd]:
    *body, end = events
    assert isinstance(end, StreamEnd)
    assert not any(isinstance(e, StreamEnd) for e in body)  # exactly one, last
    text = "".join(e.text for e in body if isinstance(e, TextDelta))
    calls: list[dict[str, Any]] = []
    for event in body:
        if not isinstance(event, ToolCallDelta):
            continue
        if event.index == len(calls):  # a new call: its first piece names it
            assert event.id and event.name
            calls.append({"id": event.id, "name": event.name, "arguments": event.arguments, "pieces": 1})
        else:
            assert event.index < len(calls) and event.id is None and event.name is None
            calls[event.index]["arguments"] += event.arguments
            calls[event.index]["pieces"] += 1
    return text, calls, end


@pytest.mark.parametrize("name", list(ADAPTERS))
def test_a_text_stream_is_the_non_streamed_answer_in_pieces(simulator, name):
    provider = adapter(simulator, name)
    events = stream_all(provider, request(name))
    text, calls, end = assemble(events)
    whole = complete(provider, request(name))
    assert text == whole.content and text.startswith("[sim ")
    assert sum(isinstance(e, TextDelta) for e in events) >= 3  # really in pieces
    assert calls == []
    assert end.finish_reason == whole.finish_reason == "stop"
    assert end.usage == whole.usage and end.usage is not None and end.usage.output_tokens > 0
    assert end.provider_request_id
    assert stream_record(simulator, SIM_NAME[name])["outcome"] == "completed"


@pytest.mark.parametrize("name", list(ADAPTERS))
def test_two_parallel_tool_calls_stream_in_pieces_and_reassemble(simulator, name):
    provider = adapter(simulator, name)
    ask = request(name, "Use get_weather and get_time for Oslo.", tools=TOOLS)
    text, calls, end = assemble(stream_all(provider, ask))
    whole = complete(provider, ask)
    assert text == whole.content == ""
    assert end.finish_reason == whole.finish_reason == "tool_calls"
    assert [c["name"] for c in calls] == [c.function.name for c in whole.tool_calls] == ["get_weather", "get_time"]
    assert [json.loads(c["arguments"]) for c in calls] == [json.loads(c.function.arguments) for c in whole.tool_calls]
    assert json.loads(calls[0]["arguments"])["days"] >= 3
    assert len({c["id"] for c in calls}) == 2
    if name != "gemini":  # Gemini sends each call whole
        assert calls[0]["pieces"] > 1
    assert end.usage == whole.usage


@pytest.mark.parametrize("name", list(ADAPTERS))
def test_a_cut_stream_is_a_connection_error_after_the_first_events(simulator, name):
    simulator.add_fault("stream_cut", provider=SIM_NAME[name], after=4)
    received, error = stream_until_error(adapter(simulator, name), request(name))
    assert isinstance(error, ProviderConnectionError)
    assert any(isinstance(e, TextDelta) for e in received)
    assert not any(isinstance(e, StreamEnd) for e in received)
    assert stream_record(simulator, SIM_NAME[name]) == {"events_sent": 4, "outcome": "cut"}


@pytest.mark.parametrize("name", list(ADAPTERS))
def test_a_malformed_event_is_a_malformed_response(simulator, name):
    simulator.add_fault("stream_malformed", provider=SIM_NAME[name], after=4)
    received, error = stream_until_error(adapter(simulator, name), request(name))
    assert isinstance(error, MalformedResponseError)
    assert any(isinstance(e, TextDelta) for e in received)


@pytest.mark.parametrize("name", list(ADAPTERS))
def test_an_error_event_mid_stream_is_the_error_it_names(simulator, name):
    simulator.add_fault("stream_error", provider=SIM_NAME[name], after=4)
    received, error = stream_until_error(adapter(simulator, name), request(name))
    # OpenAI's server_error, Anthropic's overloaded_error, Gemini's UNAVAILABLE
    assert isinstance(error, ProviderUnavailableError)
    assert any(isinstance(e, TextDelta) for e in received)
    assert stream_record(simulator, SIM_NAME[name]) == {"events_sent": 4, "outcome": "error_event"}


def test_anthropic_overloaded_error_event_names_its_type(simulator):
    simulator.add_fault("stream_error", provider="anthropic", after=3)
    _, error = stream_until_error(adapter(simulator, "anthropic"), request("anthropic"))
    assert "overloaded_error" in str(error)


@pytest.mark.parametrize("name", ["openai", "anthropic", "gemini"])
def test_a_stall_after_the_first_events_is_an_idle_timeout(simulator, name):
    simulator.add_fault("stream_stall", provider=name, after=4, delay_s=5)
    started = time.monotonic()
    received, error = stream_until_error(adapter(simulator, name), request(name), idle_timeout_s=0.3)
    assert isinstance(error, ProviderTimeoutError) and "idle" in str(error)
    assert time.monotonic() - started < 3
    assert any(isinstance(e, TextDelta) for e in received)
    # The adapter closed the connection: the simulator's stall ends early because of it.
    assert stream_record(simulator, name) == {"events_sent": 4, "outcome": "client_closed"}


@pytest.mark.parametrize("name", ["openai", "anthropic", "gemini"])
def test_no_first_event_in_time_is_a_first_byte_timeout(simulator, name):
    simulator.add_fault("slow", provider=name, delay_s=3)
    started = time.monotonic()
    received, error = stream_until_error(adapter(simulator, name), request(name), first_byte_timeout_s=0.3)
    assert isinstance(error, ProviderTimeoutError) and "first-byte" in str(error)
    assert received == [] and time.monotonic() - started < 2


def test_a_stream_longer_than_its_whole_timeout_is_cut_short(simulator):
    simulator.set_chunk_delay(150)
    received, error = stream_until_error(adapter(simulator, "openai"), request("openai"), timeout_s=0.6)
    assert isinstance(error, ProviderTimeoutError) and "did not finish" in str(error)
    assert any(isinstance(e, TextDelta) for e in received)


def test_chunks_arrive_as_they_are_sent_not_at_the_end(simulator):
    simulator.set_chunk_delay(80)

    async def run() -> tuple[float, float]:
        async with httpx.AsyncClient() as client:
            started = time.monotonic()
            first = 0.0
            async for event in open_stream(adapter(simulator, "anthropic"), request("anthropic"), client):
                if isinstance(event, TextDelta) and not first:
                    first = time.monotonic() - started
            return first, time.monotonic() - started

    first, total = asyncio.run(run())
    assert total >= 0.8  # 14 events, 80 ms apart
    assert first < total / 2


@pytest.mark.parametrize("name", list(ADAPTERS))
def test_a_rate_limit_before_the_first_byte_raises_with_retry_after(simulator, name):
    simulator.add_fault("rate_limit", provider=SIM_NAME[name], retry_after=2)
    received, error = stream_until_error(adapter(simulator, name), request(name))
    assert isinstance(error, RateLimitedError) and error.retry_after == 2
    assert received == []


@pytest.mark.parametrize(
    ("fault", "error_class"),
    [
        ("server_error", ProviderUnavailableError),
        ("auth", ProviderAuthError),
        ("drop", ProviderConnectionError),
        ("malformed", MalformedResponseError),  # a JSON body where a stream was asked for
        ("content_filter", ContentFilteredError),
    ],
)
@pytest.mark.parametrize("name", ["openai", "anthropic", "gemini"])
def test_faults_before_the_stream_raise_what_complete_raises(simulator, name, fault, error_class):
    simulator.add_fault(fault, provider=name, retry_after=0)
    _, error = stream_until_error(adapter(simulator, name), request(name))
    assert isinstance(error, error_class)


def test_stream_faults_leave_non_streamed_calls_alone(simulator):
    simulator.add_fault("stream_cut", provider="openai", after=1)
    answer = complete(adapter(simulator, "openai"), request("openai"))
    assert answer.finish_reason == "stop" and answer.content


@pytest.mark.parametrize("name", ["openai", "anthropic", "gemini"])
def test_closing_the_stream_early_closes_the_connection(simulator, name):
    simulator.set_chunk_delay(100)

    async def run() -> list[ProviderEvent]:
        async with httpx.AsyncClient() as client:
            stream = open_stream(adapter(simulator, name), request(name), client)
            first = [await anext(stream), await anext(stream)]
            await stream.aclose()  # type: ignore[attr-defined]
            return first

    assert all(isinstance(e, TextDelta) for e in asyncio.run(run()))
    record = stream_record(simulator, name)
    assert record["outcome"] == "client_closed" and record["events_sent"] < 10
