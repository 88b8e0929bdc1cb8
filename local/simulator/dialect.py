"""The base of a provider wire format, plus helpers for reading request bodies."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from local.simulator.faults import Fault
from local.simulator.wire import (
    Answer,
    ChatRequest,
    Json,
    Response,
)

# --------------------------------------------------------------------------- helpers on bodies


def _get(obj: Json, *keys: str) -> Any:
    """First present key: Gemini's REST API accepts both camelCase and snake_case."""
    for key in keys:
        if key in obj:
            return obj[key]
    return None


def _block_texts(content: Any) -> Iterator[str]:
    """Text of OpenAI parts / Anthropic blocks / plain strings (images and the like are skipped)."""
    if isinstance(content, str):
        yield content
        return
    if not isinstance(content, list):
        return
    for block in content:
        if isinstance(block, str):
            yield block
        elif isinstance(block, dict):
            if isinstance(block.get("text"), str):
                yield block["text"]
            elif block.get("type") == "tool_result":
                yield from _block_texts(block.get("content"))
            elif block.get("type") == "tool_use":
                yield json.dumps(block.get("input", {}))


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


# --------------------------------------------------------------------------- dialects


class Dialect:
    """One provider's wire format: auth, validation, parsing, answers and errors."""

    name = ""

    def check_auth(self, headers: dict[str, str], query: dict[str, str]) -> Response | None:
        raise NotImplementedError

    def parse(self, body: Any, headers: dict[str, str], path_model: str | None) -> ChatRequest | Response:
        raise NotImplementedError

    def render(self, req: ChatRequest, answer: Answer) -> Response:
        raise NotImplementedError

    def fault(self, fault: Fault, req: ChatRequest) -> Response:
        raise NotImplementedError

    def invalid_json(self) -> Response:
        raise NotImplementedError

    def not_found(self, method: str, path: str) -> Response:
        raise NotImplementedError

    def client_error(self, message: str) -> Response:
        """A plain 400 in this provider's error shape."""
        raise NotImplementedError

    def stream_fault_event(self, fault: Fault) -> bytes:
        """The event a ``stream_malformed`` or ``stream_error`` fault sends, in this provider's stream format
        (only dialects that stream are asked)."""
        raise NotImplementedError
