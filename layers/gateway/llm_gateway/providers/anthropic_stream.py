"""Anthropic Messages streaming: named events, each with a JSON ``data`` that repeats the name in ``type``.

``message_start`` (id, model, input usage), per content block ``content_block_start`` (a ``text`` block
or a ``tool_use`` block with its id and name), ``content_block_delta`` (``text_delta`` or
``input_json_delta`` with a ``partial_json`` piece), ``content_block_stop``; then ``message_delta``
(``stop_reason``, cumulative output usage) and ``message_stop``, the end marker. ``ping`` may come
anywhere; ``error`` (e.g. ``overloaded_error``) ends the stream with a failure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from llm_gateway.errors import ContentFilteredError, ProviderError
from llm_gateway.models import FinishReason, ProviderRequest, Usage
from llm_gateway.providers.stream_call import StreamDecoder, load_json
from llm_gateway.streaming.events import ProviderEvent, StreamEnd, TextDelta, ToolCallDelta


class AnthropicStreamDecoder(StreamDecoder):
    def __init__(
        self,
        request: ProviderRequest,
        *,
        provider: str,
        finish_reasons: dict[str, FinishReason],
        error_of: Callable[[Any], ProviderError],
    ) -> None:
        self._request = request
        self._provider = provider
        self._finish_reasons = finish_reasons
        self._error_of = error_of
        # Without the caller's tools, a tool_use block is the forced structured-output tool: its input
        # is the answer's text, as in the non-streamed parse.
        self._tool_as_text = not request.tools
        self._calls: dict[int, int] = {}  # content block index -> tool-call index (0..k-1)
        self._arguments_seen: set[int] = set()
        self._id: str | None = None
        self._model: str | None = None
        self._input_tokens = 0
        self._cache_read = 0
        self._output_tokens = 0
        self._usage_seen = False
        self._stop_reason: str | None = None
        self._structured = False  # the forced tool answered

    def decode(self, event: str, data: str) -> Iterator[ProviderEvent]:
        body = load_json(data)
        if not isinstance(body, dict):
            raise ValueError("an event's data is not an object")
        kind = str(body.get("type") or event)
        if kind == "error" or event == "error":
            raise self._error_of(body)
        if kind == "message_start":
            message = body["message"]
            self._id, self._model = message.get("id"), message.get("model")
            self._read_usage(message.get("usage") or {})
        elif kind == "content_block_start":
            yield from self._block_start(int(body["index"]), body["content_block"])
        elif kind == "content_block_delta":
            yield from self._block_delta(int(body["index"]), body["delta"])
        elif kind == "content_block_stop":
            index = int(body["index"])
            if index in self._calls and index not in self._arguments_seen:
                yield ToolCallDelta(index=self._calls[index], arguments="{}")  # a call without arguments
        elif kind == "message_delta":
            reason = (body.get("delta") or {}).get("stop_reason")
            if reason is not None:
                self._stop_reason = str(reason)
            self._read_usage(body.get("usage") or {})
        elif kind == "message_stop":
            self.ended = True
            yield self._end()
        # ping and event types added later are skipped, as the API's versioning policy asks

    def _read_usage(self, usage: dict[str, Any]) -> None:
        # Anthropic's input_tokens excludes cache reads and writes; ours counts all input.
        if "input_tokens" in usage and usage["input_tokens"] is not None:
            cache_read = int(usage.get("cache_read_input_tokens") or 0)
            cache_write = int(usage.get("cache_creation_input_tokens") or 0)
            self._input_tokens = int(usage["input_tokens"]) + cache_read + cache_write
            self._cache_read = cache_read
            self._usage_seen = True
        if usage.get("output_tokens") is not None:
            self._output_tokens = int(usage["output_tokens"])  # cumulative: the last one counts

    def _block_start(self, index: int, block: dict[str, Any]) -> Iterator[ProviderEvent]:
        kind = block.get("type")
        if kind == "text" and block.get("text"):
            yield TextDelta(str(block["text"]))
        elif kind == "tool_use":
            if self._tool_as_text:
                self._structured = True
                return
            call_index = self._calls[index] = len(self._calls)
            call_id, name = block["id"], block["name"]
            if not isinstance(call_id, str) or not isinstance(name, str):
                raise ValueError("a tool_use block has no id or name")
            yield ToolCallDelta(index=call_index, id=call_id, name=name)

    def _block_delta(self, index: int, delta: dict[str, Any]) -> Iterator[ProviderEvent]:
        kind = delta.get("type")
        if kind == "text_delta":
            if self._structured:
                return  # text beside the forced tool's call is not the answer
            text = delta["text"]
            if not isinstance(text, str):
                raise ValueError("text_delta.text is not a string")
            if text:
                yield TextDelta(text)
        elif kind == "input_json_delta":
            piece = delta["partial_json"]
            if not isinstance(piece, str):
                raise ValueError("partial_json is not a string")
            if index in self._calls:
                if piece:
                    self._arguments_seen.add(index)
                    yield ToolCallDelta(index=self._calls[index], arguments=piece)
            elif self._structured and piece:
                yield TextDelta(piece)
        # thinking_delta, signature_delta, citations: not part of the answer's text

    def _end(self) -> StreamEnd:
        if self._stop_reason == "refusal":
            raise ContentFilteredError(
                f"{self._provider} refused the request", provider=self._provider, model=self._request.model
            )
        finish = self._finish_reasons.get(str(self._stop_reason), "error")
        if self._structured and finish == "tool_calls":
            finish = "stop"  # the forced structured-output tool's call is the answer
        usage = None
        if self._usage_seen:
            usage = Usage(
                input_tokens=self._input_tokens,
                output_tokens=self._output_tokens,
                cached_input_tokens=self._cache_read,
            )
        return StreamEnd(finish_reason=finish, usage=usage, provider_request_id=self._id, raw_model=self._model)
