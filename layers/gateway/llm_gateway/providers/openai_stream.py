"""OpenAI Chat Completions streaming (and OpenAI-compatible servers): ``chat.completion.chunk`` events.

Each ``data:`` is a chunk; choice 0's ``delta`` carries ``content`` pieces and ``tool_calls`` pieces (each
with the call's ``index``; ``id`` and ``function.name`` on its first piece, ``function.arguments`` in
pieces); ``finish_reason`` comes on a late chunk, the usage (with ``stream_options.include_usage``) on a
last chunk with no choices, and ``data: [DONE]`` ends the stream.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from llm_gateway.errors import ContentFilteredError, ProviderError
from llm_gateway.models import FinishReason, ProviderRequest, Usage
from llm_gateway.providers.stream_call import StreamDecoder, load_json
from llm_gateway.streaming.events import ProviderEvent, StreamEnd, TextDelta, ToolCallDelta


class OpenAIStreamDecoder(StreamDecoder):
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
        self._finish: str | None = None
        self._usage: Usage | None = None
        self._id: str | None = None
        self._model: str | None = None
        self._calls: dict[int, int] = {}  # the wire's tool-call index -> ours (0..k-1 in order of appearance)
        self._text_seen = False

    def decode(self, event: str, data: str) -> Iterator[ProviderEvent]:
        if data.strip() == "[DONE]":
            self.ended = True
            yield self._end()
            return
        chunk = load_json(data)
        if not isinstance(chunk, dict):
            raise ValueError("a chunk is not an object")
        if chunk.get("error") is not None:
            raise self._error_of(chunk)
        self._id = self._id or chunk.get("id")
        self._model = self._model or chunk.get("model")
        if isinstance(usage := chunk.get("usage"), dict):
            details = usage.get("prompt_tokens_details") or {}
            self._usage = Usage(
                input_tokens=int(usage.get("prompt_tokens", 0)),
                output_tokens=int(usage.get("completion_tokens", 0)),
                cached_input_tokens=int(details.get("cached_tokens") or 0),
            )
        for choice in chunk.get("choices") or []:
            if int(choice.get("index", 0)) != 0:
                continue  # the stream serves one choice; n > 1 is made of parallel calls
            yield from self._delta(choice.get("delta") or {})
            if choice.get("finish_reason") is not None:
                self._finish = str(choice["finish_reason"])

    def _delta(self, delta: dict[str, Any]) -> Iterator[ProviderEvent]:
        if delta.get("refusal"):
            raise ContentFilteredError(
                f"{self._provider} refused the request", provider=self._provider, model=self._request.model
            )
        content = delta.get("content")
        if content:
            if not isinstance(content, str):
                raise ValueError("delta.content is not a string")
            self._text_seen = True
            yield TextDelta(content)
        for piece in delta.get("tool_calls") or []:
            wire_index = int(piece.get("index", 0))
            function = piece.get("function") or {}
            arguments = function.get("arguments")
            if arguments is None:
                arguments = ""
            elif not isinstance(arguments, str):  # some compatible servers send the object
                arguments = json.dumps(arguments, ensure_ascii=False)
            if wire_index not in self._calls:
                index = self._calls[wire_index] = len(self._calls)
                call_id, name = piece.get("id"), function.get("name")
                if not isinstance(call_id, str) or not isinstance(name, str) or not call_id or not name:
                    raise ValueError("a tool call's first piece has no id or name")
                yield ToolCallDelta(index=index, id=call_id, name=name, arguments=arguments)
            elif arguments:
                yield ToolCallDelta(index=self._calls[wire_index], arguments=arguments)

    def _end(self) -> StreamEnd:
        finish = self._finish_reasons.get(str(self._finish), "error")
        if finish == "content_filter" and not self._text_seen and not self._calls:
            raise ContentFilteredError(
                f"{self._provider} refused or filtered the answer",
                provider=self._provider,
                model=self._request.model,
            )
        return StreamEnd(finish_reason=finish, usage=self._usage, provider_request_id=self._id, raw_model=self._model)
