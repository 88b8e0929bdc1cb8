"""OpenAI Chat Completions, and any server that speaks it (vLLM, Ollama, llama.cpp server)."""

from __future__ import annotations

import json
from typing import Any

from llm_gateway.errors import ContentFilteredError, ContextTooLongError, ProviderAuthError, ProviderError
from llm_gateway.models import (
    Choice,
    FinishReason,
    ImagePart,
    JsonObjectFormat,
    JsonSchemaFormat,
    Message,
    ProviderRequest,
    ProviderResponse,
    Usage,
)
from llm_gateway.providers.base import Provider, WireRequest, with_json_instruction
from llm_gateway.providers.openai_stream import OpenAIStreamDecoder
from llm_gateway.providers.stream_call import StreamDecoder, in_stream_error
from llm_gateway.structured.strict import strict_form
from llm_gateway.tool_models import ToolCall

# Anything else (a new or unknown reason) is "error": the answer is returned but never cached as complete.
_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
}


def _wire_message(message: Message) -> dict[str, Any]:
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.text()}
    if message.tool_calls:
        calls = [call.model_dump(mode="json") for call in message.tool_calls]
        return {"role": "assistant", "content": message.text() or None, "tool_calls": calls}
    if not isinstance(message.content, list):
        return {"role": message.role, "content": message.text()}
    parts: list[dict[str, Any]] = []
    for part in message.content:
        if isinstance(part, ImagePart):
            image: dict[str, Any] = {"url": part.url}
            if part.detail:
                image["detail"] = part.detail
            parts.append({"type": "image_url", "image_url": image})
        else:
            parts.append({"type": "text", "text": part.text})
    return {"role": message.role, "content": parts}


def _json_schema_format(fmt: JsonSchemaFormat) -> dict[str, Any]:
    """Strict mode whenever the schema has a strict form (rewritten: objects closed, optional properties
    required but nullable; structured.py drops the added nulls); otherwise the schema as it is, non-strict."""
    strict = strict_form(fmt.json_schema) if fmt.strict else None
    if strict is None:
        return {"name": fmt.name, "schema": fmt.json_schema, "strict": False}
    return {"name": fmt.name, "schema": strict, "strict": True}


def _sampling_fields(request: ProviderRequest) -> dict[str, Any]:
    """n, logprobs, penalties, logit_bias and user: sent only when set (a default is never sent)."""
    body: dict[str, Any] = {}
    if request.n > 1:
        body["n"] = request.n
    if request.logprobs:
        body["logprobs"] = True
        if request.top_logprobs:
            body["top_logprobs"] = request.top_logprobs
    for key in ("presence_penalty", "frequency_penalty", "user"):
        if (value := getattr(request, key)) is not None:
            body[key] = value
    if request.logit_bias:
        body["logit_bias"] = request.logit_bias
    return body


def _tool_call(wire: dict[str, Any]) -> ToolCall:
    """One call of an answer; some OpenAI-compatible servers give ``arguments`` as an object, not text."""
    arguments = wire["function"].get("arguments")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments if arguments is not None else {}, ensure_ascii=False)
    return ToolCall.model_validate(
        {"id": wire["id"], "function": {"name": wire["function"]["name"], "arguments": arguments}}
    )


def _tool_fields(request: ProviderRequest) -> dict[str, Any]:
    """Tools pass through as given (OpenAI's shape is the gateway's); ``parallel_tool_calls`` only with
    tools, as OpenAI refuses it otherwise."""
    if not request.tools:
        return {}
    fields: dict[str, Any] = {"tools": [tool.model_dump(mode="json", exclude_none=True) for tool in request.tools]}
    if request.tool_choice is not None:
        choice = request.tool_choice
        fields["tool_choice"] = choice if isinstance(choice, str) else choice.model_dump(mode="json")
    if request.parallel_tool_calls is not None:
        fields["parallel_tool_calls"] = request.parallel_tool_calls
    return fields


def _in_stream_status(body: Any) -> int:
    """The HTTP status an error reported inside a stream would have had (it arrives in a 200)."""
    error = body.get("error") if isinstance(body, dict) else None
    kind = f"{error.get('type')} {error.get('code')}" if isinstance(error, dict) else ""
    if "rate_limit" in kind:
        return 429
    if "invalid_request" in kind or "context_length" in kind:
        return 400
    return 500


class OpenAIProvider(Provider):
    name = "openai"
    rate_limit_dialect = "openai"
    native_n = True
    max_tokens_field = "max_completion_tokens"

    def build_request(self, request: ProviderRequest) -> WireRequest:
        body: dict[str, Any] = {
            "model": request.model,
            "messages": [_wire_message(m) for m in with_json_instruction(request)],
            self.max_tokens_field: request.max_tokens,
        }
        for key in ("temperature", "top_p", "stop", "seed"):
            if (value := getattr(request, key)) is not None:
                body[key] = value
        body.update(_sampling_fields(request))
        fmt = request.response_format
        if isinstance(fmt, JsonSchemaFormat) and request.native_structured:
            body["response_format"] = {"type": "json_schema", "json_schema": _json_schema_format(fmt)}
        elif isinstance(fmt, JsonObjectFormat) and request.native_structured:
            body["response_format"] = {"type": "json_object"}
        body.update(_tool_fields(request))
        headers = {"content-type": "application/json"}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        return WireRequest(url=f"{self.base_url}/chat/completions", headers=headers, body=body)

    def parse_response(self, data: Any, request: ProviderRequest) -> ProviderResponse:
        choices = sorted(data["choices"], key=lambda c: int(c.get("index", 0)))
        first, *rest = [self._choice(c, request) for c in choices]
        usage = data.get("usage") or {}
        details = usage.get("prompt_tokens_details") or {}
        return ProviderResponse(
            content=first.content,
            finish_reason=first.finish_reason,
            tool_calls=first.tool_calls,
            logprobs=first.logprobs,
            alternatives=rest,
            usage=Usage(
                input_tokens=int(usage.get("prompt_tokens", 0)),
                output_tokens=int(usage.get("completion_tokens", 0)),
                cached_input_tokens=int(details.get("cached_tokens") or 0),
            ),
            provider_request_id=data.get("id"),
            raw_model=data.get("model"),
        )

    def _choice(self, choice: Any, request: ProviderRequest) -> Choice:
        message = choice["message"]
        finish = _FINISH.get(str(choice.get("finish_reason")), "error")
        if message.get("refusal") or (finish == "content_filter" and not message.get("content")):
            raise ContentFilteredError(
                f"{self.name} refused or filtered the answer", provider=self.name, model=request.model
            )
        tool_calls = [_tool_call(c) for c in message.get("tool_calls") or []]
        content = message.get("content")
        if content is None and tool_calls:
            content = ""
        if not isinstance(content, str):
            raise ValueError("message.content is not a string")
        logprobs = choice.get("logprobs") if request.logprobs else None
        return Choice(
            content=content,
            finish_reason=finish,
            logprobs=logprobs if isinstance(logprobs, dict) else None,
            tool_calls=tool_calls or None,
        )

    def build_stream_request(self, request: ProviderRequest) -> WireRequest:
        wire = self.build_request(request)
        body = {**wire.body, "stream": True, "stream_options": {"include_usage": True}}
        return WireRequest(url=wire.url, headers={**wire.headers, "accept": "text/event-stream"}, body=body)

    def stream_decoder(self, request: ProviderRequest) -> StreamDecoder:
        def error_of(body: Any) -> ProviderError:
            return in_stream_error(self, body, request.model, _in_stream_status(body))

        return OpenAIStreamDecoder(request, provider=self.name, finish_reasons=_FINISH, error_of=error_of)

    def classify_error(self, status: int, message: str, error_type: str, body: Any) -> type[ProviderError] | None:
        code = ""
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            code = str(body["error"].get("code") or "")
        if code == "context_length_exceeded" or "maximum context length" in message:
            return ContextTooLongError
        if status == 429 and code == "insufficient_quota":
            return ProviderAuthError  # billing, not load: waiting will not help, another provider may
        if code == "content_filter" or code == "content_policy_violation":
            return ContentFilteredError
        return None


class OpenAICompatibleProvider(OpenAIProvider):
    """Any OpenAI-compatible server; most still expect the older ``max_tokens`` field."""

    name = "openai_compatible"
    native_n = False  # llama.cpp and Ollama ignore n: the gateway makes parallel calls
    max_tokens_field = "max_tokens"
