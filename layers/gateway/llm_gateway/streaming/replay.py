"""A cached answer served as a stream: the same events a live stream sends, from memory.

The text comes in a few pieces and each tool call as deltas (id and name first, then its arguments), so
that a client's streaming code path is the one it always runs; then ``StreamDone`` with the cached
result. Nothing to account on the way: the cache already told the ledger of the hit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from llm_gateway.models import CompletionResult
from llm_gateway.routing.attempts import ms_since
from llm_gateway.streaming.events import GatewayEvent, StreamDone, TextDelta, ToolCallDelta

REPLAY_PIECE_CHARS = 256  # big enough to cost nothing, small enough that a long answer still streams


def pieces(text: str, size: int = REPLAY_PIECE_CHARS) -> Iterator[str]:
    for start in range(0, len(text), size):
        yield text[start : start + size]


class CachedReplay:
    """A ``CompletionStream`` over a cache hit."""

    cached = True

    def __init__(self, hit: CompletionResult, started: float) -> None:
        self._hit = hit
        self._started = started
        self.id = hit.id
        self.created = hit.created
        self.provider = hit.provider
        self.model = hit.model
        self._events = self._replay()
        self._closed = False

    def __aiter__(self) -> AsyncIterator[GatewayEvent]:
        return self

    async def __anext__(self) -> GatewayEvent:
        if self._closed:
            raise StopAsyncIteration
        try:
            return next(self._events)
        except StopIteration:
            self._closed = True
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        self._closed = True

    def _replay(self) -> Iterator[GatewayEvent]:
        hit = self._hit
        for piece in pieces(hit.content):
            yield TextDelta(piece)
        for index, call in enumerate(hit.tool_calls or []):
            yield ToolCallDelta(index=index, id=call.id, name=call.function.name)
            for piece in pieces(call.function.arguments):
                yield ToolCallDelta(index=index, arguments=piece)
        self._closed = True
        yield StreamDone(hit.model_copy(update={"cached": True, "latency_ms": ms_since(self._started)}))
