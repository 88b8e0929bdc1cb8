"""Reading a gateway stream as raw Server-Sent Events (httpx), beside what the official clients parse."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

CHAT = "/v1/chat/completions"
NATIVE = "/v1/completions"
DONE = "[DONE]"
# One model of each provider; Bedrock is on in the test stack (the simulator signs nothing it does not check).
MODELS = {
    "openai": "gpt-4o-mini",
    "anthropic": "claude-3-5-haiku-latest",
    "gemini": "gemini-2.0-flash",
    "bedrock": "amazon.nova-lite-v1:0",
}


def prompt(text: str = "Tell me about rivers") -> str:
    return f"{text} ({uuid.uuid4().hex[:8]})"  # unique: never a cache hit


@dataclass
class SseEvent:
    data: str
    event: str | None = None
    at: float = 0.0  # time.monotonic() when the event's blank line arrived

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class RawStream:
    status: int
    headers: httpx.Headers
    events: list[SseEvent] = field(default_factory=list)
    raw: bytes = b""
    error: Exception | None = None  # how the body ended when it did not end cleanly

    @property
    def data(self) -> list[str]:
        return [e.data for e in self.events]

    def chunks(self) -> list[dict[str, Any]]:
        """The JSON chunks before ``[DONE]`` (an error event included)."""
        return [e.json() for e in self.events if e.data != DONE]


def parse_events(lines: Iterator[str]) -> Iterator[SseEvent]:
    """WHATWG framing, as far as the gateway uses it: ``event:`` and one ``data:`` line per event."""
    name: str | None = None
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield SseEvent("\n".join(data), name, time.monotonic())
            name, data = None, []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))


def _lines(response: httpx.Response, sink: bytearray) -> Iterator[str]:
    pending = b""
    for piece in response.iter_raw():
        sink.extend(piece)
        pending += piece
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            yield line.rstrip(b"\r").decode()


def read_stream(api: httpx.Client, path: str, body: dict[str, Any], **kwargs: Any) -> RawStream:
    """POST ``body`` and read the whole answer event by event (or its JSON body when it is not a stream)."""
    sink = bytearray()
    with api.stream("POST", path, json=body, **kwargs) as response:
        result = RawStream(response.status_code, response.headers)
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            response.read()
            result.raw = response.content
            return result
        try:
            result.events.extend(parse_events(_lines(response, sink)))
        except httpx.HTTPError as exc:
            result.error = exc
        result.raw = bytes(sink)
    return result


def ledger_outcomes(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted((i["provider"]["S"], i["outcome"]["S"]) for i in items)
