"""A streamed answer on the native ``/v1/completions`` route: named Server-Sent Events.

* ``event: start`` ``{"id", "created", "provider", "model", "cached"}``: once, first;
* ``event: delta`` ``{"text"}``: the next piece of the answer's text;
* ``event: tool_call`` ``{"index", "id", "name", "arguments"}``: the next piece of tool call ``index``
  (``id`` and ``name`` on its first piece, null after; ``arguments`` a piece of the JSON text);
* ``event: done``: the whole result exactly as the non-streamed route answers it (content, tool calls,
  usage, cost, attempts...), plus ``usage_estimated`` (true when the provider reported no usage and the
  gateway counted it from the text). The last event of a complete answer;
* ``event: error`` ``{"error": {...}}``: the gateway's error body, when the answer broke mid-way. The last
  event of a broken one: an answer without ``done`` is incomplete.
"""

from __future__ import annotations

from llm_gateway.errors import GatewayError
from llm_gateway.http import answers
from llm_gateway.http.sse import named_event
from llm_gateway.streaming.events import GatewayEvent, TextDelta, ToolCallDelta
from llm_gateway.streaming.protocol import CompletionStream


class NativeEventEncoder:
    def __init__(self, stream: CompletionStream) -> None:
        self._start = {
            "id": stream.id,
            "created": stream.created,
            "provider": stream.provider,
            "model": stream.model,
            "cached": stream.cached,
        }

    def opening(self) -> bytes:
        return named_event("start", self._start)

    def event(self, event: GatewayEvent) -> bytes:
        if isinstance(event, TextDelta):
            return named_event("delta", {"text": event.text}) if event.text else b""
        if isinstance(event, ToolCallDelta):
            piece = {"index": event.index, "id": event.id, "name": event.name, "arguments": event.arguments}
            return named_event("tool_call", piece)
        return named_event("done", {**event.result.model_dump(mode="json"), "usage_estimated": event.usage_estimated})

    def closing(self) -> bytes:
        return b""

    def error(self, err: GatewayError) -> bytes:
        return named_event("error", answers.error_body(err))
