"""What the edge holds while it streams an answer: an opened ``CompletionStream``.

``Gateway.open_stream(request, ctx)`` does everything a non-streamed call does before the answer starts
(cache lookup, routing, the breaker, budgets, retries and fallback) until the chosen provider has sent its
first event; every failure up to then raises the same ``GatewayError`` a non-streamed call raises, so the
edge can still answer with a status code. What it returns is a ``CompletionStream``: iterate it for the
events (the first one already received), then ``StreamDone``. After the first event, a provider failure
raises ``StreamInterruptedError`` from the iteration (the attempt is in the ledger as ``truncated`` with
the tokens seen); ``aclose()`` before the end (the caller went away) stops the provider call and records
the attempt as ``cancelled``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from llm_gateway.streaming.events import GatewayEvent


class CompletionStream(Protocol):
    id: str  # the completion's id, the same in every chunk and in StreamDone's result
    created: int  # epoch seconds
    provider: str  # the provider and catalog model serving the stream (known once it is opened)
    model: str
    cached: bool  # a cache hit replayed as a stream

    def __aiter__(self) -> AsyncIterator[GatewayEvent]: ...

    async def aclose(self) -> None:
        """Stop early: close the provider's connection and record the attempt as cancelled. Idempotent."""
        ...
