"""Server-Sent Events framing (the WHATWG ``text/event-stream`` format) and what an encoder writes.

An encoder turns one opened ``CompletionStream`` into the bytes of one answer: ``opening`` before the
first event, one piece per event, ``closing`` after ``StreamDone``, or ``error`` instead when the stream
breaks (nothing follows an error). Each piece is whole events, so a writer may flush after each.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from llm_gateway.errors import GatewayError
from llm_gateway.http import answers
from llm_gateway.streaming.events import GatewayEvent


def data_event(payload: Mapping[str, Any] | str) -> bytes:
    """One unnamed event: ``data: <compact JSON>`` and the blank line ending it. Compact JSON has no
    raw line breaks (they are escaped inside strings), so one ``data:`` line carries it whole."""
    text = payload if isinstance(payload, str) else answers.encode(payload)
    return f"data: {text}\n\n".encode()


def named_event(name: str, payload: Mapping[str, Any]) -> bytes:
    return f"event: {name}\ndata: {answers.encode(payload)}\n\n".encode()


class EventEncoder(Protocol):
    def opening(self) -> bytes: ...

    def event(self, event: GatewayEvent) -> bytes: ...

    def closing(self) -> bytes: ...

    def error(self, err: GatewayError) -> bytes: ...
