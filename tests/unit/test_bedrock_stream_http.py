"""The ConverseStream call's edges that the simulator does not play, with httpx's mock transport."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from llm_gateway.errors import MalformedResponseError, ProviderConnectionError, ProviderError
from llm_gateway.models import ProviderRequest
from llm_gateway.providers.bedrock import BedrockProvider
from llm_gateway.streaming.events import ProviderEvent, StreamEnd, TextDelta
from local.simulator.eventstream_wire import event_frame

FRAMES = [
    event_frame("messageStart", {"role": "assistant"}),
    event_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hi"}}),
    event_frame("contentBlockStop", {"contentBlockIndex": 0}),
    event_frame("messageStop", {"stopReason": "end_turn"}),
    event_frame("metadata", {"usage": {"inputTokens": 3, "outputTokens": 1}, "metrics": {"latencyMs": 1}}),
]


class _Pieces(httpx.AsyncByteStream):
    """The body in 5-byte pieces, as a network would split it."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i in range(0, len(self._body), 5):
            yield self._body[i : i + 5]


def run(body: bytes, content_type: str = "application/vnd.amazon.eventstream") -> tuple[list[ProviderEvent], Any]:
    seen: list[ProviderEvent] = []
    paths: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.raw_path.decode())
        headers = {"content-type": content_type, "x-amzn-RequestId": "r1"}
        return httpx.Response(200, stream=_Pieces(body), headers=headers)

    async def go() -> None:
        provider = BedrockProvider(base_url="https://bedrock-runtime.eu-west-1.amazonaws.com")
        request = ProviderRequest.model_validate(
            {"model": "us.m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
        )
        async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
            iterator = provider.stream(request, client=client, timeout_s=5, first_byte_timeout_s=5, idle_timeout_s=5)
            async for event in iterator:
                seen.append(event)

    try:
        asyncio.run(go())
    except ProviderError as exc:
        return seen, exc
    assert paths == ["/model/eu.m/converse-stream"]
    return seen, None


def test_complete_stream_ends_with_the_request_id():
    events, error = run(b"".join(FRAMES))
    assert error is None
    assert events[0] == TextDelta("Hi")
    assert isinstance(events[-1], StreamEnd) and events[-1].provider_request_id == "r1"


def test_a_stream_that_ends_without_metadata_is_a_connection_error():
    events, error = run(b"".join(FRAMES[:-1]))
    assert isinstance(error, ProviderConnectionError) and events == [TextDelta("Hi")]
    assert "before its metadata event" in error.message


def test_a_stream_that_ends_inside_a_frame_is_a_connection_error():
    events, error = run(b"".join(FRAMES)[:-3])  # cut inside the metadata frame
    assert isinstance(error, ProviderConnectionError) and events == [TextDelta("Hi")]


@pytest.mark.parametrize("content_type", ["application/json", ""])
def test_an_answer_that_is_not_an_eventstream_is_malformed_before_any_event(content_type):
    events, error = run(b'{"output": {}}', content_type)
    assert isinstance(error, MalformedResponseError) and events == []
