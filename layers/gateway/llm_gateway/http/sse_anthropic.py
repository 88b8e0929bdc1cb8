"""A streamed ``/v1/messages`` answer in Anthropic's event format, as its clients parse it.

Named events, each ``data`` carrying its own ``type``:

* ``message_start``: the message with empty ``content``, ``stop_reason: null`` and ``usage`` whose
  ``input_tokens`` is the gateway's estimate (the provider's count is only known at the end);
* per content block, in order: ``content_block_start`` (``text`` with ``text: ""``, or ``tool_use`` with
  ``id``, ``name`` and ``input: {}``), ``content_block_delta`` (``text_delta`` or ``input_json_delta``
  with a ``partial_json`` piece), ``content_block_stop``; ``index`` is the block's position in the answer;
* ``message_delta`` with ``stop_reason`` and the final ``usage`` (``output_tokens``, and the provider's
  ``input_tokens`` and ``cache_read_input_tokens``, which replace message_start's), then ``message_stop``.

The gateway's ``x_gateway`` (provider, cost, attempts, ``usage_estimated``) rides on ``message_delta``.
A failure after the first byte is one ``event: error`` with Anthropic's error body and nothing after it:
never a ``message_stop`` (the ``anthropic`` client raises on it).
"""

from __future__ import annotations

from typing import Any

from llm_gateway.errors import GatewayError
from llm_gateway.http.anthropic_messages import STOP_REASONS, anthropic_error_body, anthropic_usage, message_id
from llm_gateway.http.openai_chat import gateway_fields
from llm_gateway.http.sse import named_event
from llm_gateway.streaming.events import GatewayEvent, StreamDone, TextDelta, ToolCallDelta
from llm_gateway.streaming.protocol import CompletionStream


def _event(kind: str, **fields: Any) -> bytes:
    return named_event(kind, {"type": kind, **fields})


class MessageEventEncoder:
    def __init__(self, stream: CompletionStream, estimated_input_tokens: int) -> None:
        self._message: dict[str, Any] = {
            "id": message_id(stream.id),
            "type": "message",
            "role": "assistant",
            "model": stream.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": estimated_input_tokens, "output_tokens": 0},
        }
        self._blocks = 0  # blocks started so far
        self._open: int | None = None  # the block being written
        self._text_block: int | None = None  # the open text block, if the open one is text
        self._call_blocks: dict[int, int] = {}  # tool call index -> its block index

    def opening(self) -> bytes:
        return _event("message_start", message=self._message)

    def event(self, event: GatewayEvent) -> bytes:
        if isinstance(event, TextDelta):
            return self._text(event.text) if event.text else b""
        if isinstance(event, ToolCallDelta):
            return self._tool_call(event)
        return self._done(event)

    def closing(self) -> bytes:
        return _event("message_stop")

    def error(self, err: GatewayError) -> bytes:
        return named_event("error", anthropic_error_body(err))

    # ------------------------------------------------------------------ blocks

    def _start(self, block: dict[str, Any]) -> tuple[int, bytes]:
        out = self._stop()
        index, self._blocks = self._blocks, self._blocks + 1
        self._open = index
        return index, out + _event("content_block_start", index=index, content_block=block)

    def _stop(self) -> bytes:
        if self._open is None:
            return b""
        index, self._open, self._text_block = self._open, None, None
        return _event("content_block_stop", index=index)

    def _text(self, text: str) -> bytes:
        out = b""
        if self._text_block is None:
            self._text_block, out = self._start({"type": "text", "text": ""})
        delta = {"type": "text_delta", "text": text}
        return out + _event("content_block_delta", index=self._text_block, delta=delta)

    def _tool_call(self, delta: ToolCallDelta) -> bytes:
        out = b""
        index = self._call_blocks.get(delta.index)
        if index is None:
            block = {"type": "tool_use", "id": delta.id or "", "name": delta.name or "", "input": {}}
            index, out = self._start(block)
            self._call_blocks[delta.index] = index
        if not delta.arguments:
            return out
        # Providers send one call after another; a piece of an earlier call (never seen) still names its
        # own block, which the anthropic client accumulates by index.
        piece = {"type": "input_json_delta", "partial_json": delta.arguments}
        return out + _event("content_block_delta", index=index, delta=piece)

    def _done(self, done: StreamDone) -> bytes:
        result = done.result
        usage = anthropic_usage(result.usage)
        delta = {"stop_reason": STOP_REASONS[result.finish_reason], "stop_sequence": None}
        gateway = {**gateway_fields(result), "usage_estimated": done.usage_estimated}
        return self._stop() + _event("message_delta", delta=delta, usage=usage, x_gateway=gateway)
