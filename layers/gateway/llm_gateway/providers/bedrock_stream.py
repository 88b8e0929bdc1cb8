"""Bedrock's ConverseStream: eventstream frames in, the gateway's stream events out.

``ConverseStreamReader`` is the protocol alone (no I/O: unit-testable with frames from anywhere);
``ConverseStreamDecoder`` hands it to the stream call every adapter shares (``stream_call``: the HTTP
call, the first-byte, idle and whole-stream timeouts, the connection's release).

The events: ``messageStart``; per content block an optional ``contentBlockStart`` (tool uses only:
``toolUseId`` and ``name``), ``contentBlockDelta`` pieces (``text`` or ``toolUse.input`` JSON text) and
``contentBlockStop``; ``messageStop`` (``stopReason``); ``metadata`` (usage), after which the stream ends.
An ``exception`` frame names the error (``throttlingException``...), in place of the rest of the answer.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import httpx

from llm_gateway.errors import (
    ContentFilteredError,
    ContextTooLongError,
    MalformedResponseError,
    ProviderBadRequestError,
    ProviderError,
    ProviderUnavailableError,
    RateLimitedError,
)
from llm_gateway.guardrails.logs import loggable_text
from llm_gateway.models import FinishReason, JsonSchemaFormat, ProviderRequest
from llm_gateway.providers import bedrock_converse as converse
from llm_gateway.providers.base import _SAFE_TYPE
from llm_gateway.providers.eventstream import CONTENT_TYPE, EventStreamDecoder, EventStreamMessage
from llm_gateway.providers.stream_call import StreamDecoder
from llm_gateway.streaming.events import ProviderEvent, StreamEnd, TextDelta, ToolCallDelta

if TYPE_CHECKING:
    pass

STREAM_EXCEPTIONS: dict[str, type[ProviderError]] = {
    "throttlingException": RateLimitedError,
    "serviceUnavailableException": ProviderUnavailableError,
    "modelStreamErrorException": ProviderUnavailableError,
    "internalServerException": ProviderUnavailableError,
    "validationException": ProviderBadRequestError,
}
log = logging.getLogger("llm_gateway.providers")


class ConverseStreamReader:
    """Turns ConverseStream messages into gateway events; ``done`` once the metadata event was read."""

    def __init__(self, request: ProviderRequest, *, provider: str = "bedrock", log_prompts: bool = False) -> None:
        self.request = request
        self.provider = provider
        self.log_prompts = log_prompts  # the provider's own error text goes to logs only when asked
        self.calling = bool(request.tools) and request.tool_choice != "none"
        # A structured answer asked for through a forced tool (bedrock_converse.tool_config).
        self.structured = (
            not self.calling and request.native_structured and isinstance(request.response_format, JsonSchemaFormat)
        )
        self.done = False
        self.request_id: str | None = None
        self._tools: dict[int, int] = {}  # contentBlockIndex -> tool-call index (0..k-1, in order)
        self._stop_reason: str | None = None
        self._answer_tool: int | None = None  # the block carrying a forced structured answer
        self._answer_text = False  # that block's input was sent as text

    def read(self, message: EventStreamMessage) -> list[ProviderEvent]:
        kind = message.header(":message-type") or "event"
        if kind == "exception":
            raise self._exception(message.header(":exception-type"), message.payload)
        if kind == "error":  # an eventstream-level error: :error-code / :error-message headers
            raise self._exception(message.header(":error-code") or "error", b"")
        if self.done:
            raise self._malformed("an event after the metadata event")
        event = message.header(":event-type")
        try:
            data = json.loads(message.payload) if message.payload else {}
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise self._malformed(f"a {event or 'nameless'} event whose payload is not JSON") from exc
        if not isinstance(data, dict):
            raise self._malformed(f"a {event} event whose payload is not an object")
        try:
            return self._event(event, data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise self._malformed(f"a {event} event of an unexpected shape: {type(exc).__name__}") from exc

    def _event(self, event: str, data: dict[str, Any]) -> list[ProviderEvent]:
        if event == "contentBlockStart":
            return self._block_start(int(data["contentBlockIndex"]), data["start"])
        if event == "contentBlockDelta":
            return self._block_delta(int(data["contentBlockIndex"]), data["delta"])
        if event == "contentBlockStop":
            if self._answer_tool == int(data["contentBlockIndex"]) and not self._answer_text:
                self._answer_text = True
                return [TextDelta("{}")]  # a forced tool called with no input: the non-streamed answer's "{}"
            return []
        if event == "messageStop":
            self._stop_reason = str(data["stopReason"])
            if self._stop_reason in converse.FILTERED:
                raise ContentFilteredError(
                    f"{self.provider} filtered the answer", provider=self.provider, model=self.request.model
                )
            return []
        if event == "metadata":
            if self._stop_reason is None:
                raise self._malformed("a metadata event before messageStop")
            self.done = True
            return [StreamEnd(self._finish(), converse.usage(data["usage"]), self.request_id, self.request.model)]
        return []  # messageStart, and events this adapter does not use (forward compatible)

    def _block_start(self, block: int, start: dict[str, Any]) -> list[ProviderEvent]:
        use = start.get("toolUse")
        if not isinstance(use, dict):
            return []
        if not self.calling:  # the forced structured-output tool: its input is the answer's text
            if self._answer_tool is None:
                self._answer_tool = block
            return []
        index = self._tools.setdefault(block, len(self._tools))
        return [ToolCallDelta(index, id=str(use["toolUseId"]), name=str(use["name"]))]

    def _block_delta(self, block: int, delta: dict[str, Any]) -> list[ProviderEvent]:
        if isinstance(delta.get("text"), str):
            # With a forced structured tool the answer is the tool's input alone, as in the non-streamed call.
            return [TextDelta(delta["text"])] if delta["text"] and not self.structured else []
        use = delta.get("toolUse")
        if not isinstance(use, dict):
            return []  # reasoning, citations: not part of the gateway's answer
        piece = str(use.get("input") or "")
        if block == self._answer_tool:
            self._answer_text = self._answer_text or bool(piece)
            return [TextDelta(piece)] if piece else []
        if block not in self._tools:
            if not self.calling:
                return []  # a second forced tool block: the non-streamed answer keeps the first only
            raise self._malformed("a toolUse delta for a block that was never started")
        return [ToolCallDelta(self._tools[block], arguments=piece)] if piece else []

    def _finish(self) -> FinishReason:
        finish = converse.FINISH.get(str(self._stop_reason), "error")
        if self._answer_tool is not None and finish == "tool_calls":
            return "stop"
        return finish

    def _exception(self, exception_type: str, payload: bytes) -> ProviderError:
        try:
            body = json.loads(payload) if payload else {}
            message = str(body.get("message") or body.get("Message") or "") if isinstance(body, dict) else ""
        except (json.JSONDecodeError, UnicodeDecodeError):
            message = ""
        cls = STREAM_EXCEPTIONS.get(exception_type, ProviderUnavailableError)
        if cls is ProviderBadRequestError and converse.TOO_LONG.search(message):
            cls = ContextTooLongError
        log.warning(
            "provider error",
            extra={
                "provider": self.provider,
                "model": self.request.model,
                "status": 200,
                "error_type": exception_type[:100],
                "in_stream": True,
                **({"provider_message": loggable_text(message[:1000])} if self.log_prompts else {}),
            },
        )
        kind = exception_type if _SAFE_TYPE.fullmatch(exception_type) else "unknown"
        # The provider's text can quote the prompt: the error names the type only.
        return cls(
            f"{self.provider} stream failed ({kind})", provider=self.provider, model=self.request.model, status_code=200
        )

    def _malformed(self, what: str) -> MalformedResponseError:
        return MalformedResponseError(
            f"{self.provider} streamed {what}", provider=self.provider, model=self.request.model, status_code=200
        )


class ConverseStreamDecoder(StreamDecoder):
    """ConverseStream in the shared stream call (``stream_call``): eventstream frames, read by the reader."""

    content_type = CONTENT_TYPE
    end_marker = "its metadata event"

    def __init__(self, reader: ConverseStreamReader) -> None:
        self.reader = reader

    def frames(self) -> EventStreamDecoder:
        return EventStreamDecoder()

    def on_response(self, response: httpx.Response) -> None:
        self.reader.request_id = response.headers.get("x-amzn-requestid")

    def decode_frame(self, frame: EventStreamMessage) -> list[ProviderEvent]:
        events = self.reader.read(frame)
        self.ended = self.reader.done
        return events
