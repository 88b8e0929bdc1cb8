"""Anthropic Messages API."""

from __future__ import annotations

import json
from typing import Any

from llm_gateway.errors import (
    ContentFilteredError,
    ContextTooLongError,
    ProviderAuthError,
    ProviderError,
    ProviderUnavailableError,
    RateLimitedError,
)
from llm_gateway.models import (
    FinishReason,
    ImagePart,
    JsonSchemaFormat,
    Message,
    ProviderRequest,
    ProviderResponse,
    TextPart,
    Usage,
)
from llm_gateway.providers import anthropic_tools
from llm_gateway.providers.anthropic_stream import AnthropicStreamDecoder
from llm_gateway.providers.base import Provider, WireRequest, with_json_instruction
from llm_gateway.providers.stream_call import StreamDecoder, in_stream_error

API_VERSION = "2023-06-01"

# Anything else (a new or unknown reason) is "error": the answer is returned but never cached as complete.
_FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",  # a forced structured-output tool's call is the answer: "stop" (see below)
    "max_tokens": "length",
    "model_context_window_exceeded": "length",  # cut off, like max_tokens
    "pause_turn": "error",  # a server tool paused the turn: the answer is unfinished
}

_ERROR_TYPES: dict[str, type[ProviderError]] = {
    "rate_limit_error": RateLimitedError,
    "overloaded_error": ProviderUnavailableError,
    "api_error": ProviderUnavailableError,
    "authentication_error": ProviderAuthError,
    "permission_error": ProviderAuthError,
    "request_too_large": ContextTooLongError,
}


def _image_block(part: ImagePart) -> dict[str, Any]:
    if part.url.startswith("data:"):
        header, _, data = part.url.partition(",")
        media_type = header[5:].split(";")[0] or "image/png"
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": part.url}}


def _text_block(part: TextPart) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": part.text}
    if part.cache_control is not None:  # a prompt-caching breakpoint, passed through
        block["cache_control"] = part.cache_control.model_dump(exclude_none=True)
    return block


def _blocks(message: Message) -> list[dict[str, Any]]:
    if not isinstance(message.content, list):
        return [{"type": "text", "text": message.text()}]
    return [_image_block(p) if isinstance(p, ImagePart) else _text_block(p) for p in message.content]


def _system(messages: list[Message]) -> str | list[dict[str, Any]]:
    """The system text; as text blocks when one of its parts is a caching breakpoint (a string has none)."""
    system = [m for m in messages if m.role == "system"]
    parts = [p for m in system if isinstance(m.content, list) for p in m.content if isinstance(p, TextPart)]
    if any(p.cache_control is not None for p in parts):
        return [block for m in system for block in _blocks(m) if block["text"]]  # no empty text blocks
    return "\n\n".join(m.text() for m in system)


def _conversation(
    messages: list[Message], *, with_tools: bool = False
) -> tuple[str | list[dict[str, Any]], list[dict[str, Any]]]:
    """System text apart; consecutive same-role turns merged, as the API wants alternation (so the
    results of one turn's tool calls, user turns here, share one message)."""
    system = _system(messages)
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            continue
        role = "user" if message.role == "tool" else message.role
        blocks = anthropic_tools.message_blocks(message, with_tools=with_tools) or _blocks(message)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    if turns and turns[0]["role"] == "assistant":
        turns.insert(0, {"role": "user", "content": [{"type": "text", "text": "(continue)"}]})
    return system, turns


class AnthropicProvider(Provider):
    name = "anthropic"
    rate_limit_dialect = "anthropic"

    def build_request(self, request: ProviderRequest) -> WireRequest:
        if request.tools and request.native_structured:
            # The structured-output mode is a forced tool of its own: with the caller's tools, the JSON
            # answer is asked for in the prompt instead (and validated all the same).
            request = request.model_copy(update={"native_structured": False})
        system, turns = _conversation(with_json_instruction(request), with_tools=bool(request.tools))
        body: dict[str, Any] = {"model": request.model, "max_tokens": request.max_tokens, "messages": turns}
        if system:
            body["system"] = system
        if request.temperature is not None:
            body["temperature"] = min(request.temperature, 1.0)  # Anthropic's range is 0..1
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.top_k is not None:
            body["top_k"] = request.top_k
        if request.stop:
            body["stop_sequences"] = request.stop
        if request.user:
            body["metadata"] = {"user_id": request.user}
        fmt = request.response_format
        if isinstance(fmt, JsonSchemaFormat) and request.native_structured:
            # Forced tool use: the tool's input schema is the answer's schema.
            body["tools"] = [
                {"name": fmt.name, "description": "Record the structured result.", "input_schema": fmt.json_schema}
            ]
            body["tool_choice"] = {"type": "tool", "name": fmt.name}
        if request.tools:
            body["tools"] = anthropic_tools.tool_definitions(request)
            if (choice := anthropic_tools.tool_choice(request)) is not None:
                body["tool_choice"] = choice
        headers = {"content-type": "application/json", "anthropic-version": API_VERSION}
        if self.api_key:
            headers["x-api-key"] = self.api_key
        return WireRequest(url=f"{self.base_url}/v1/messages", headers=headers, body=body)

    def parse_response(self, data: Any, request: ProviderRequest) -> ProviderResponse:
        stop_reason = str(data.get("stop_reason"))
        if stop_reason == "refusal":
            raise ContentFilteredError(f"{self.name} refused the request", provider=self.name, model=request.model)
        blocks = data["content"]
        finish = _FINISH.get(stop_reason, "error")
        tool_calls = anthropic_tools.tool_calls_from(blocks) if request.tools else []
        tool_inputs = [b["input"] for b in blocks if b.get("type") == "tool_use"]
        if tool_inputs and not request.tools:  # the forced structured-output tool: its input is the answer
            content = json.dumps(tool_inputs[0], ensure_ascii=False)
            finish = "stop" if finish == "tool_calls" else finish
        else:
            content = "".join(b["text"] for b in blocks if b.get("type") == "text")
        usage = data.get("usage") or {}
        cache_read = int(usage.get("cache_read_input_tokens") or 0)
        cache_write = int(usage.get("cache_creation_input_tokens") or 0)
        return ProviderResponse(
            content=content,
            finish_reason=finish,
            tool_calls=tool_calls or None,
            usage=Usage(
                # Anthropic's input_tokens excludes cache reads and writes; ours counts all input.
                input_tokens=int(usage["input_tokens"]) + cache_read + cache_write,
                output_tokens=int(usage["output_tokens"]),
                cached_input_tokens=cache_read,
            ),
            provider_request_id=data.get("id"),
            raw_model=data.get("model"),
        )

    def build_stream_request(self, request: ProviderRequest) -> WireRequest:
        wire = self.build_request(request)
        headers = {**wire.headers, "accept": "text/event-stream"}
        return WireRequest(url=wire.url, headers=headers, body={**wire.body, "stream": True})

    def stream_decoder(self, request: ProviderRequest) -> StreamDecoder:
        def error_of(body: Any) -> ProviderError:
            # An error event has no status of its own: its type says what it is.
            _, error_type = self.error_message(body)
            return in_stream_error(self, body, request.model, 400 if error_type == "invalid_request_error" else 500)

        return AnthropicStreamDecoder(request, provider=self.name, finish_reasons=_FINISH, error_of=error_of)

    def error_message(self, body: Any) -> tuple[str, str]:
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            return str(body["error"].get("message", "")), str(body["error"].get("type", ""))
        return "", ""

    def classify_error(self, status: int, message: str, error_type: str, body: Any) -> type[ProviderError] | None:
        if error_type == "invalid_request_error" and "prompt is too long" in message:
            return ContextTooLongError
        return _ERROR_TYPES.get(error_type)
