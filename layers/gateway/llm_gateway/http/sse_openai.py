"""A streamed chat completion in OpenAI's ``chat.completion.chunk`` format, as its clients parse it.

Every chunk has ``id``, ``object``, ``created``, ``model``, ``system_fingerprint`` and one choice
``{index: 0, delta, logprobs: null, finish_reason}``. In order: a first chunk with ``delta.role``
(``content: ""``), the text and tool-call deltas (a call's first chunk carries ``index``, ``id``,
``type`` and ``function.name`` with empty ``arguments``, the next ones ``index`` and an ``arguments``
piece), a chunk with an empty delta and the ``finish_reason``; with ``stream_options.include_usage``
every chunk also has ``usage: null`` and a last chunk has ``choices: []`` and the usage. The last chunk
before ``data: [DONE]`` carries the gateway's ``x_gateway`` (provider, cost, attempts, cached,
``usage_estimated``), as the non-streamed answer does. A failure mid-stream is one ``data:`` event with
OpenAI's error body and no ``[DONE]``: OpenAI's clients raise ``APIError`` on it.
"""

from __future__ import annotations

from typing import Any

from llm_gateway.errors import GatewayError
from llm_gateway.http import answers
from llm_gateway.http.openai_chat import OPENAI_FINISH, chat_completion_id, gateway_fields, openai_usage
from llm_gateway.http.sse import data_event
from llm_gateway.http.stream_params import StreamMode
from llm_gateway.streaming.events import GatewayEvent, StreamDone, TextDelta, ToolCallDelta
from llm_gateway.streaming.protocol import CompletionStream

DONE = b"data: [DONE]\n\n"


class ChatChunkEncoder:
    def __init__(self, stream: CompletionStream, mode: StreamMode) -> None:
        self.mode = mode
        self._base: dict[str, Any] = {
            "id": chat_completion_id(stream.id),
            "object": "chat.completion.chunk",
            "created": stream.created,
            "model": stream.model,
            "system_fingerprint": None,
        }

    def opening(self) -> bytes:
        return self._chunk({"role": "assistant", "content": "", "refusal": None})

    def event(self, event: GatewayEvent) -> bytes:
        if isinstance(event, TextDelta):
            return self._chunk({"content": event.text}) if event.text else b""
        if isinstance(event, ToolCallDelta):
            return self._tool_call(event)
        return self._done(event)

    def closing(self) -> bytes:
        return DONE

    def error(self, err: GatewayError) -> bytes:
        return data_event(answers.error_body(err, openai_style=True))

    # ------------------------------------------------------------------ chunks

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return data_event({**self._base, "choices": [choice], **self._usage_field(), **extra})

    def _usage_field(self) -> dict[str, Any]:
        return {"usage": None} if self.mode.include_usage else {}

    def _tool_call(self, delta: ToolCallDelta) -> bytes:
        if delta.id is None and delta.name is None:
            return self._chunk({"tool_calls": [{"index": delta.index, "function": {"arguments": delta.arguments}}]})
        # A call's first piece: its id and name with empty arguments (as OpenAI sends it), then the arguments.
        function = {"name": delta.name or "", "arguments": ""}
        head = {"index": delta.index, "id": delta.id or "", "type": "function", "function": function}
        first = self._chunk({"tool_calls": [head]})
        if not delta.arguments:
            return first
        rest = self._chunk({"tool_calls": [{"index": delta.index, "function": {"arguments": delta.arguments}}]})
        return first + rest

    def _done(self, done: StreamDone) -> bytes:
        result = done.result
        gateway = {**gateway_fields(result), "usage_estimated": done.usage_estimated}
        finish = OPENAI_FINISH.get(result.finish_reason, result.finish_reason)
        if not self.mode.include_usage:
            return self._chunk({}, finish, x_gateway=gateway)
        last = {
            **self._base,
            "choices": [],
            "usage": openai_usage(result.usage),
            "x_gateway": gateway,
        }
        return self._chunk({}, finish) + data_event(last)
