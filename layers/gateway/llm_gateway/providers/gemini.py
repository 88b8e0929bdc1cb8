"""Google Gemini ``generateContent`` (Generative Language API)."""

from __future__ import annotations

import json
from typing import Any

from llm_gateway.errors import (
    ContentFilteredError,
    ContextTooLongError,
    ProviderAuthError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitedError,
)
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
from llm_gateway.providers import gemini_tools
from llm_gateway.providers.base import Provider, WireRequest, with_json_instruction
from llm_gateway.providers.gemini_stream import GeminiStreamDecoder
from llm_gateway.providers.stream_call import StreamDecoder, in_stream_error
from llm_gateway.structured.gemini import UntranslatableSchema, gemini_schema

_BLOCKED = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "LANGUAGE"}
# Anything else (OTHER, MALFORMED_FUNCTION_CALL, FINISH_REASON_UNSPECIFIED, a new reason, none at all) is
# "error": the answer is returned but never cached as complete.
_FINISH: dict[str, FinishReason] = {"STOP": "stop", "MAX_TOKENS": "length"}
_STATUS: dict[str, type[ProviderError]] = {
    "RESOURCE_EXHAUSTED": RateLimitedError,
    "UNAVAILABLE": ProviderUnavailableError,
    "INTERNAL": ProviderUnavailableError,
    "DEADLINE_EXCEEDED": ProviderTimeoutError,
    "UNAUTHENTICATED": ProviderAuthError,
    "PERMISSION_DENIED": ProviderAuthError,
}


def _parts(message: Message) -> list[dict[str, Any]]:
    if not isinstance(message.content, list):
        return [{"text": message.text()}]
    parts: list[dict[str, Any]] = []
    for part in message.content:
        if isinstance(part, ImagePart):
            if part.url.startswith("data:"):
                header, _, data = part.url.partition(",")
                mime = header[5:].split(";")[0] or "image/png"
                parts.append({"inline_data": {"mime_type": mime, "data": data}})
            else:
                parts.append({"file_data": {"file_uri": part.url, "mime_type": "image/*"}})
        else:
            parts.append({"text": part.text})
    return parts


def _choice_config(request: ProviderRequest) -> dict[str, Any]:
    """n, logprobs and penalties in generationConfig's names; only what is set."""
    config: dict[str, Any] = {}
    if request.n > 1:
        config["candidateCount"] = request.n
    if request.logprobs:
        config["responseLogprobs"] = True
        if request.top_logprobs:
            config["logprobs"] = request.top_logprobs
    if request.presence_penalty is not None:
        config["presencePenalty"] = request.presence_penalty
    if request.frequency_penalty is not None:
        config["frequencyPenalty"] = request.frequency_penalty
    if request.top_k is not None:
        config["topK"] = request.top_k
    return config


def _openai_logprobs(result: Any) -> dict[str, Any] | None:
    """Gemini's ``logprobsResult`` in OpenAI's per-choice shape: one entry per chosen token, with its
    top alternatives."""
    if not isinstance(result, dict):
        return None
    chosen = result.get("chosenCandidates") or []
    tops = result.get("topCandidates") or []

    def entry(candidate: dict[str, Any]) -> dict[str, Any]:
        token = str(candidate.get("token", ""))
        return {"token": token, "logprob": float(candidate.get("logProbability", 0.0)), "bytes": list(token.encode())}

    content = []
    for i, candidate in enumerate(chosen):
        alternatives = tops[i].get("candidates", []) if i < len(tops) else []
        content.append({**entry(candidate), "top_logprobs": [entry(c) for c in alternatives]})
    return {"content": content, "refusal": None}


class GeminiProvider(Provider):
    name = "gemini"
    rate_limit_dialect = "gemini"
    native_n = True

    def build_request(self, request: ProviderRequest) -> WireRequest:
        if request.tools and request.native_structured:
            # Gemini refuses function calling with a JSON response type: the schema goes in the prompt.
            request = request.model_copy(update={"native_structured": False})
        fmt = request.response_format
        json_mode = request.native_structured and isinstance(fmt, JsonSchemaFormat | JsonObjectFormat)
        response_schema: dict[str, Any] | None = None
        if json_mode and isinstance(fmt, JsonSchemaFormat):
            try:
                response_schema = gemini_schema(fmt.json_schema)
            except UntranslatableSchema:
                # JSON mode with the full schema in the prompt instead (the answer is validated either way).
                request = request.model_copy(update={"native_structured": False})
        messages = with_json_instruction(request)
        system = "\n\n".join(m.text() for m in messages if m.role == "system")
        contents = gemini_tools.contents(messages, _parts, with_tools=bool(request.tools))
        config: dict[str, Any] = {"maxOutputTokens": request.max_tokens}
        if request.temperature is not None:
            config["temperature"] = request.temperature
        if request.top_p is not None:
            config["topP"] = request.top_p
        if request.stop:
            config["stopSequences"] = request.stop
        if request.seed is not None:
            config["seed"] = request.seed
        config.update(_choice_config(request))
        if json_mode:
            config["responseMimeType"] = "application/json"
        if response_schema is not None:
            config["responseSchema"] = response_schema
        body: dict[str, Any] = {"contents": contents, "generationConfig": config}
        if system:
            body["systemInstruction"] = {"parts": [{"text": system}]}
        if request.tools:
            body["tools"] = gemini_tools.tools_field(request)
            if (tool_config := gemini_tools.tool_config(request)) is not None:
                body["toolConfig"] = tool_config
        headers = {"content-type": "application/json"}
        if self.api_key:
            headers["x-goog-api-key"] = self.api_key
        url = f"{self.base_url}/v1beta/models/{request.model}:generateContent"
        return WireRequest(url=url, headers=headers, body=body)

    def parse_response(self, data: Any, request: ProviderRequest) -> ProviderResponse:
        feedback = data.get("promptFeedback") or {}
        candidates = data.get("candidates") or []
        if feedback.get("blockReason") or not candidates:
            if feedback.get("blockReason"):
                raise ContentFilteredError(
                    f"{self.name} blocked the prompt: {feedback['blockReason']}",
                    provider=self.name,
                    model=request.model,
                )
            raise ValueError("no candidates in the answer")
        ordered = sorted(candidates, key=lambda c: int(c.get("index", 0)))
        first, *rest = [self._choice(c, request) for c in ordered]
        parts = (ordered[0].get("content") or {}).get("parts") or []
        # Tool calls ride on the first choice (the response's own); alternatives carry text.
        tool_calls = gemini_tools.tool_calls_from(parts, data.get("responseId"), request) if request.tools else []
        finish = first.finish_reason
        if tool_calls and finish == "stop":
            finish = "tool_calls"  # Gemini says STOP after function calls too
        usage = data.get("usageMetadata") or {}
        return ProviderResponse(
            content=first.content,
            finish_reason=finish,
            tool_calls=tool_calls or None,
            logprobs=first.logprobs,
            alternatives=rest,
            usage=Usage(
                input_tokens=int(usage.get("promptTokenCount", 0)),
                # Thinking tokens are billed as output.
                output_tokens=int(usage.get("candidatesTokenCount", 0)) + int(usage.get("thoughtsTokenCount", 0)),
                cached_input_tokens=int(usage.get("cachedContentTokenCount", 0)),
            ),
            provider_request_id=data.get("responseId"),
            raw_model=data.get("modelVersion"),
        )

    def _choice(self, candidate: Any, request: ProviderRequest) -> Choice:
        reason = str(candidate.get("finishReason", ""))
        if reason in _BLOCKED:
            raise ContentFilteredError(
                f"{self.name} blocked the answer: {reason}", provider=self.name, model=request.model
            )
        parts = (candidate.get("content") or {}).get("parts") or []
        content = "".join(p.get("text", "") for p in parts if not p.get("thought"))
        logprobs = _openai_logprobs(candidate.get("logprobsResult")) if request.logprobs else None
        return Choice(content=content, finish_reason=_FINISH.get(reason, "error"), logprobs=logprobs)

    def build_stream_request(self, request: ProviderRequest) -> WireRequest:
        wire = self.build_request(request)
        url = wire.url.removesuffix(":generateContent") + ":streamGenerateContent?alt=sse"
        return WireRequest(url=url, headers={**wire.headers, "accept": "text/event-stream"}, body=wire.body)

    def stream_decoder(self, request: ProviderRequest) -> StreamDecoder:
        def error_of(body: Any) -> ProviderError:
            code = body["error"].get("code") if isinstance(body.get("error"), dict) else None
            status = code if isinstance(code, int) and 400 <= code <= 599 else 500
            return in_stream_error(self, body, request.model, status)

        return GeminiStreamDecoder(
            request, provider=self.name, finish_reasons=_FINISH, blocked=_BLOCKED, error_of=error_of
        )

    def error_message(self, body: Any) -> tuple[str, str]:
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            return str(body["error"].get("message", "")), str(body["error"].get("status", ""))
        return "", ""

    def classify_error(self, status: int, message: str, error_type: str, body: Any) -> type[ProviderError] | None:
        if "exceeds the maximum number of tokens" in message or "input token count" in message:
            return ContextTooLongError
        if "API key not valid" in message or "API_KEY_INVALID" in json.dumps(body or {}):
            return ProviderAuthError
        return _STATUS.get(error_type)
