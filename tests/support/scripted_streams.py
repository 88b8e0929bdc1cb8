"""An in-memory ``CompletionStream`` (streaming/protocol.py) playing a script, for the edge's tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

from llm_gateway.errors import GatewayError
from llm_gateway.models import Attempt, CompletionResult, Usage
from llm_gateway.streaming.events import GatewayEvent, StreamDone, TextDelta, ToolCallDelta
from llm_gateway.tool_models import FunctionCall, ToolCall

if TYPE_CHECKING:
    from llm_gateway.http.sse import EventEncoder


class ScriptedStream:
    """Yields ``events`` (the last one usually a ``StreamDone``), then raises ``fail`` if given. Counts
    ``aclose`` calls and whether the script was still running when it was closed (a cancelled stream)."""

    def __init__(
        self,
        events: Sequence[GatewayEvent],
        *,
        fail: BaseException | None = None,
        stream_id: str = "gw-0123456789abcdef",
        provider: str = "openai",
        model: str = "gpt-4o-mini",
        cached: bool = False,
        created: int = 1_760_000_000,
    ) -> None:
        self.id, self.created, self.provider, self.model, self.cached = stream_id, created, provider, model, cached
        self.events, self.fail = list(events), fail
        self.yielded = 0
        self.closed = 0
        self.cancelled = False
        self.finished = False
        self._iterator = self._play()

    def __aiter__(self) -> AsyncIterator[GatewayEvent]:
        return self._iterator

    async def _play(self) -> AsyncIterator[GatewayEvent]:
        for event in self.events:
            self.yielded += 1
            yield event
        if self.fail is not None:
            raise self.fail
        self.finished = True

    async def aclose(self) -> None:
        self.closed += 1
        if not self.finished and self.fail is None and self.closed == 1:
            self.cancelled = True
        await self._iterator.aclose()


def result(
    content: str = "",
    *,
    tool_calls: list[ToolCall] | None = None,
    finish_reason: str = "stop",
    usage: Usage | None = None,
    stream_id: str = "gw-0123456789abcdef",
    cached: bool = False,
) -> CompletionResult:
    return CompletionResult(
        id=stream_id,
        created=1_760_000_000,
        content=content,
        tool_calls=tool_calls,
        provider="openai",
        model="gpt-4o-mini",
        finish_reason=finish_reason,  # type: ignore[arg-type]
        usage=usage or Usage(input_tokens=12, output_tokens=5, cached_input_tokens=2),
        cost_usd=0.0000123,
        latency_ms=42.0,
        attempts=[Attempt(provider="openai", model="gpt-4o-mini", outcome="success", duration_ms=40.0)],
        cached=cached,
    )


def text_script(*pieces: str, usage_estimated: bool = False) -> list[GatewayEvent]:
    return [*(TextDelta(p) for p in pieces), StreamDone(result("".join(pieces)), usage_estimated=usage_estimated)]


def tool_script() -> list[GatewayEvent]:
    """Two tool calls, the second one's arguments split over three pieces, after a little text."""
    calls = [
        ToolCall(id="call_a", function=FunctionCall(name="get_weather", arguments='{"city":"Paris"}')),
        ToolCall(id="call_b", function=FunctionCall(name="get_time", arguments='{"zone":"CET"}')),
    ]
    return [
        TextDelta("Let me check."),
        ToolCallDelta(0, id="call_a", name="get_weather", arguments='{"city":"Paris"}'),
        ToolCallDelta(1, id="call_b", name="get_time"),
        ToolCallDelta(1, arguments='{"zone"'),
        ToolCallDelta(1, arguments=':"CET"'),
        ToolCallDelta(1, arguments="}"),
        StreamDone(result("Let me check.", tool_calls=calls, finish_reason="tool_calls")),
    ]


def encoded(encoder: EventEncoder, stream: ScriptedStream) -> bytes:
    """What the edge writes: the opening, each event, then the closing, or the error instead."""
    pieces = [encoder.opening()]

    async def play() -> None:
        try:
            async for event in stream:
                pieces.append(encoder.event(event))
            pieces.append(encoder.closing())
        except GatewayError as err:
            pieces.append(encoder.error(err))

    asyncio.run(play())
    return b"".join(pieces)
