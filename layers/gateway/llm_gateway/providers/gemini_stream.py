"""Gemini ``streamGenerateContent?alt=sse``: every ``data:`` is a whole ``GenerateContentResponse``.

Chunks carry the next text parts and whole ``functionCall`` parts of candidate 0 (a call never comes in
pieces), ``usageMetadata`` (the last one counts) and, on the last chunk, ``finishReason``. There is no
end marker: the stream ends when the connection closes after a chunk with a ``finishReason``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from llm_gateway.errors import ContentFilteredError, ProviderError
from llm_gateway.models import FinishReason, ProviderRequest, Usage
from llm_gateway.providers.gemini_tools import tool_call_from
from llm_gateway.providers.stream_call import StreamDecoder, load_json
from llm_gateway.streaming.events import ProviderEvent, StreamEnd, TextDelta, ToolCallDelta


class GeminiStreamDecoder(StreamDecoder):
    def __init__(
        self,
        request: ProviderRequest,
        *,
        provider: str,
        finish_reasons: dict[str, FinishReason],
        blocked: set[str],
        error_of: Callable[[Any], ProviderError],
    ) -> None:
        self._request = request
        self._provider = provider
        self._finish_reasons = finish_reasons
        self._blocked = blocked
        self._error_of = error_of
        self._parts_seen = 0  # candidate 0's parts so far, across chunks: a call's position for its id
        self._calls = 0
        self._finish: str | None = None
        self._usage: Usage | None = None
        self._id: str | None = None
        self._model: str | None = None

    def decode(self, event: str, data: str) -> Iterator[ProviderEvent]:
        chunk = load_json(data)
        if not isinstance(chunk, dict):
            raise ValueError("a chunk is not an object")
        if chunk.get("error") is not None:
            raise self._error_of(chunk)
        self._id = self._id or chunk.get("responseId")
        self._model = self._model or chunk.get("modelVersion")
        if block := (chunk.get("promptFeedback") or {}).get("blockReason"):
            raise self._filtered(f"blocked the prompt: {block}")
        if isinstance(usage := chunk.get("usageMetadata"), dict):
            self._usage = Usage(
                input_tokens=int(usage.get("promptTokenCount", 0)),
                # Thinking tokens are billed as output.
                output_tokens=int(usage.get("candidatesTokenCount", 0)) + int(usage.get("thoughtsTokenCount", 0)),
                cached_input_tokens=int(usage.get("cachedContentTokenCount", 0)),
            )
        for candidate in chunk.get("candidates") or []:
            if int(candidate.get("index", 0)) != 0:
                continue  # the stream serves one candidate; n > 1 is made of parallel calls
            yield from self._parts((candidate.get("content") or {}).get("parts") or [])
            if reason := candidate.get("finishReason"):
                if reason in self._blocked:
                    raise self._filtered(f"blocked the answer: {reason}")
                self._finish = str(reason)

    def _parts(self, parts: list[dict[str, Any]]) -> Iterator[ProviderEvent]:
        for part in parts:
            position = self._parts_seen
            self._parts_seen += 1
            if isinstance(call := part.get("functionCall"), dict):
                if not self._request.tools:
                    continue
                if self._request.parallel_tool_calls is False and self._calls:
                    continue  # Gemini cannot be told to call one function only: the first one stands
                tool_call = tool_call_from(call, self._id, position)
                yield ToolCallDelta(
                    index=self._calls,
                    id=tool_call.id,
                    name=tool_call.function.name,
                    arguments=tool_call.function.arguments,
                )
                self._calls += 1
            elif isinstance(text := part.get("text"), str) and text and not part.get("thought"):
                yield TextDelta(text)

    def at_eof(self) -> StreamEnd | None:
        if self._finish is None:
            return None  # closed before the last chunk: cut
        finish = self._finish_reasons.get(self._finish, "error")
        if self._calls and finish == "stop":
            finish = "tool_calls"  # Gemini says STOP after function calls too
        return StreamEnd(finish_reason=finish, usage=self._usage, provider_request_id=self._id, raw_model=self._model)

    def _filtered(self, what: str) -> ContentFilteredError:
        return ContentFilteredError(f"{self._provider} {what}", provider=self._provider, model=self._request.model)
