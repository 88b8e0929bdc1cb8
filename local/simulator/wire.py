"""Provider-neutral request, answer and response types shared by the simulator's dialects and server."""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass, field
from typing import Any

MESSAGE_OVERHEAD_TOKENS = 4
PROVIDERS = ("openai", "compat", "anthropic", "gemini", "bedrock", "azure")
FINISH_REASONS = frozenset({"stop", "length", "content_filter"})
_JSON = "application/json"

Json = dict[str, Any]


# --------------------------------------------------------------------------- data


@dataclass
class Reply:
    """A scripted answer; finish_reason is provider-neutral (stop/length/content_filter)."""

    content: str
    finish_reason: str | None = None
    cached_tokens: int = 0
    input_tokens: int | None = None  # bill this many input tokens instead of the count (a different tokenizer)


@dataclass
class ChatRequest:
    """The provider-neutral view of one chat request."""

    provider: str
    model: str
    texts: list[str]
    max_tokens: int | None = None
    json_mode: bool = False
    schema: Json | None = None
    tool_name: str | None = None  # Anthropic forced tool (structured output)
    n: int = 1  # choices asked for (OpenAI n, Gemini candidateCount)
    logprobs: bool = False
    top_logprobs: int = 0
    tool_turns: Any = None  # tool_calls.ToolTurns when the request declares tools or carries tool turns
    stream: bool = False  # answer as a stream in the provider's wire format
    include_usage: bool = False  # OpenAI stream_options.include_usage: a last chunk with the usage
    sse: bool = True  # Gemini streamGenerateContent with alt=sse (without: one JSON array)

    @property
    def joined(self) -> str:
        return "\n".join(self.texts)

    @property
    def input_tokens(self) -> int:
        return sum(_tokens(t) + MESSAGE_OVERHEAD_TOKENS for t in self.texts)


@dataclass
class Answer:
    text: str
    finish: str  # provider-neutral: stop | length | content_filter
    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0
    tool_input: Json | None = None  # set when Anthropic should answer with a tool_use block
    tool_calls: list[Any] | None = None  # tool_calls.PlannedCall: the model calls these (finish "tool_calls")
    more: list[Answer] = field(default_factory=list)  # choices 2..n

    @property
    def choices(self) -> list[Answer]:
        return [self, *self.more]


@dataclass
class Response:
    status: int
    body: bytes | None  # None means: drop the connection without answering
    headers: dict[str, str] = field(default_factory=dict)
    fault: str | None = None
    events: list[bytes] | None = None  # a streamed answer: each item is written and flushed on its own
    stream_fault: Any = None  # faults.Fault played on the stream (cut, stall, malformed or error event)
    fault_event: bytes | None = None  # the event a malformed/error stream fault sends in the dialect's format
    deployment: str | None = None  # what the provider counts a quota against (quotas.py)


def _tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


def _json_response(status: int, obj: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(status, _dumps(obj), {"Content-Type": _JSON, **(headers or {})})


def _num(value: float) -> str:
    """Header-friendly number: 1.0 -> "1", 0.5 -> "0.5"."""
    return f"{value:g}"


def _ident(prefix: str, length: int = 24) -> str:
    return prefix + uuid.uuid4().hex[:length]


# --------------------------------------------------------------------------- answers
