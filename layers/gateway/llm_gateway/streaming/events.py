"""The events of a streamed completion, from the provider adapters up to the edge.

Plain frozen dataclasses, not pydantic models: a stream makes one per token or so, and they never
cross a trust boundary (the edge encodes them; nobody decodes them from callers).

A provider stream (``Provider.stream``) yields ``TextDelta`` and ``ToolCallDelta`` events and ends with
exactly one ``StreamEnd``. The gateway's stream (``CompletionStream``) yields the same deltas and ends
with exactly one ``StreamDone`` carrying the assembled result (usage, cost, attempts), or raises
``StreamInterruptedError`` when the provider failed after the first event reached the caller.
"""

from __future__ import annotations

from dataclasses import dataclass

from llm_gateway.models import CompletionResult, FinishReason, Usage
from llm_gateway.quotas.model import RateLimitSnapshot


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the answer's text, in order."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of one tool call. ``index`` is the call's 0-based position in the answer, the same on every
    piece of that call; ``id`` and ``name`` come on the call's first piece only (None after), and
    ``arguments`` carries the next piece of the JSON arguments text ("" when a piece has none)."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """The provider said the answer is complete. ``usage`` is None when the provider reported none (the
    gateway then estimates it from the text and marks it as estimated)."""

    finish_reason: FinishReason
    usage: Usage | None = None
    provider_request_id: str | None = None
    raw_model: str | None = None
    # What the stream's response headers said about the deployment's quota (quotas/headers.py).
    rate_limits: RateLimitSnapshot | None = None


ProviderEvent = TextDelta | ToolCallDelta | StreamEnd


@dataclass(frozen=True, slots=True)
class StreamDone:
    """The gateway's last event: the whole answer as a non-streamed call would have returned it (content
    and tool calls assembled, usage, cost, attempts, ``cached`` for a replayed cache hit)."""

    result: CompletionResult
    usage_estimated: bool = False  # the provider sent no usage: counted from the text


GatewayEvent = TextDelta | ToolCallDelta | StreamDone
