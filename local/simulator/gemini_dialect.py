"""Google Gemini generateContent dialect."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from local.simulator import tool_wire
from local.simulator.choices import gemini_logprobs
from local.simulator.dialect import Dialect, _get, _positive_int
from local.simulator.faults import Fault
from local.simulator.gemini_stream import gemini_stream, gemini_stream_fault_event, sse_or_array
from local.simulator.schema_rules import gemini_schema_problem
from local.simulator.wire import (
    Answer,
    ChatRequest,
    Json,
    Response,
    _ident,
    _json_response,
    _num,
)


class GeminiDialect(Dialect):
    """Google Gemini generateContent (Generative Language API)."""

    name = "gemini"
    CONTEXT_LIMIT = 1_048_576
    _FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "content_filter": "SAFETY"}
    _CT = "application/json; charset=UTF-8"
    MAX_CANDIDATES = 8
    NO_LOGPROBS_OR_PENALTIES = ("gemini-2.5",)

    def error(
        self,
        code: int,
        status: str,
        message: str,
        details: list[Json] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        err: Json = {"code": code, "message": message, "status": status}
        if details:
            err["details"] = details
        return _json_response(code, {"error": err}, {"Content-Type": self._CT, **(headers or {})})

    def check_auth(self, headers: dict[str, str], query: dict[str, str]) -> Response | None:
        key = headers.get("x-goog-api-key") or query.get("key", "")
        if not key:
            return self.error(
                403,
                "PERMISSION_DENIED",
                "Method doesn't allow unregistered callers (callers without established identity). "
                "Please use API Key or other form of API consumer identity to call this API.",
            )
        if key == "invalid":
            message = "API key not valid. Please pass a valid API key."
            details = [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                },
                {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US", "message": message},
            ]
            return self.error(400, "INVALID_ARGUMENT", message, details)
        return None

    def invalid_json(self) -> Response:
        return self.error(400, "INVALID_ARGUMENT", "Invalid JSON payload received. Unexpected token.")

    def not_found(self, method: str, path: str) -> Response:
        return self.error(404, "NOT_FOUND", f"Requested entity was not found: {method} {path}")

    def client_error(self, message: str) -> Response:
        return self.error(400, "INVALID_ARGUMENT", message)

    def parse(self, body: Any, headers: dict[str, str], path_model: str | None) -> ChatRequest | Response:
        if not isinstance(body, dict):
            return self.invalid_json()
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            return self.error(400, "INVALID_ARGUMENT", "* GenerateContentRequest.contents: contents is not specified\n")
        model = (path_model or "").removeprefix("models/")
        req = ChatRequest(self.name, model, [])
        system = _get(body, "systemInstruction", "system_instruction")
        if isinstance(system, dict):
            req.texts.append(self._parts_text(system.get("parts")))
        for content in contents:
            if isinstance(content, dict):
                req.texts.append(self._parts_text(content.get("parts")))
        config = _get(body, "generationConfig", "generation_config")
        if isinstance(config, dict):
            refused = self._check_config(config, req)
            if refused is not None:
                return refused
            req.max_tokens = _positive_int(_get(config, "maxOutputTokens", "max_output_tokens"))
            if _get(config, "responseMimeType", "response_mime_type") == "application/json":
                req.json_mode = True
                schema = _get(config, "responseSchema", "response_schema")
                if schema is not None:
                    problem = gemini_schema_problem(schema)
                    if problem:
                        return self.error(400, "INVALID_ARGUMENT", problem)
                else:  # the newer field takes JSON Schema itself
                    schema = _get(config, "responseJsonSchema", "response_json_schema")
                req.schema = schema if isinstance(schema, dict) else None
        turns = tool_wire.gemini_turns(body)
        if isinstance(turns, str):
            return self.error(400, "INVALID_ARGUMENT", turns)
        req.tool_turns = turns
        return req

    # generationConfig's fields (camelCase; the REST API takes snake_case too). Anything else is refused.
    _CONFIG_FIELDS = frozenset(
        {
            "stopSequences", "responseMimeType", "responseSchema", "responseJsonSchema", "responseModalities",
            "candidateCount", "maxOutputTokens", "temperature", "topP", "topK", "seed", "presencePenalty",
            "frequencyPenalty", "responseLogprobs", "logprobs", "enableEnhancedCivicAnswers", "speechConfig",
            "thinkingConfig", "mediaResolution",
        }
    )  # fmt: skip

    def _check_config(self, config: Json, req: ChatRequest) -> Response | None:
        for key in config:
            camel = re.sub(r"_([a-z])", lambda m: m.group(1).upper(), key)
            if camel not in self._CONFIG_FIELDS:
                return self.error(
                    400,
                    "INVALID_ARGUMENT",
                    f"Invalid JSON payload received. Unknown name \"{key}\" at 'generation_config': Cannot find field.",
                )
        if req.model.startswith(self.NO_LOGPROBS_OR_PENALTIES):  # as the Gemini API answers for 2.5 models
            if _get(config, "responseLogprobs", "response_logprobs"):
                return self.error(400, "INVALID_ARGUMENT", f"Logprobs is not enabled for models/{req.model}")
            if any(_get(config, k) is not None for k in ("presencePenalty", "frequencyPenalty")):
                return self.error(400, "INVALID_ARGUMENT", f"Penalty is not enabled for models/{req.model}")
        count = _get(config, "candidateCount", "candidate_count")
        if count is not None:
            if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= self.MAX_CANDIDATES:
                return self.error(
                    400, "INVALID_ARGUMENT", f"candidateCount must be in the range [1, {self.MAX_CANDIDATES}]."
                )
            req.n = count
        req.logprobs = _get(config, "responseLogprobs", "response_logprobs") is True
        top = _get(config, "logprobs")
        if top is not None:
            if not req.logprobs:
                return self.error(400, "INVALID_ARGUMENT", "logprobs is only valid if responseLogprobs is true.")
            if not isinstance(top, int) or isinstance(top, bool) or not 0 <= top <= 20:
                return self.error(400, "INVALID_ARGUMENT", "logprobs must be in the range [0, 20].")
            req.top_logprobs = top
        return None

    @staticmethod
    def _parts_text(parts: Any) -> str:
        out = []
        for part in parts if isinstance(parts, list) else []:
            if isinstance(part, dict):
                if isinstance(part.get("text"), str):
                    out.append(part["text"])
                elif "functionCall" in part or "functionResponse" in part:
                    out.append(json.dumps(part.get("functionCall") or part.get("functionResponse")))
        return "".join(out)

    def _usage(self, answer: Answer) -> Json:
        usage: Json = {
            "promptTokenCount": answer.input_tokens,
            "candidatesTokenCount": answer.output_tokens,
            "totalTokenCount": answer.input_tokens + answer.output_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": answer.input_tokens}],
        }
        if answer.cached_tokens:  # the real API omits the field when nothing was cached
            usage["cachedContentTokenCount"] = answer.cached_tokens
        if not answer.output_tokens:
            del usage["candidatesTokenCount"]
        return usage

    def _candidate(self, req: ChatRequest, answer: Answer, index: int) -> Json:
        candidate: Json = {"finishReason": self._FINISH.get(answer.finish, "STOP"), "index": index}
        if answer.tool_calls:  # Gemini finishes with STOP after function calls too
            candidate["content"] = {"parts": tool_wire.gemini_parts(answer.tool_calls), "role": "model"}
        elif answer.finish == "content_filter":
            candidate["safetyRatings"] = self._safety_ratings()
            if answer.text:
                candidate["content"] = {"parts": [{"text": answer.text}], "role": "model"}
        else:
            candidate["content"] = {"parts": [{"text": answer.text}], "role": "model"}
        if req.logprobs:
            candidate["logprobsResult"] = gemini_logprobs(answer.text, req.top_logprobs)
        return candidate

    def render(self, req: ChatRequest, answer: Answer) -> Response:
        # candidatesTokenCount counts every candidate's tokens.
        total = dataclasses.replace(answer, output_tokens=sum(a.output_tokens for a in answer.choices), more=[])
        body = {
            "candidates": [self._candidate(req, a, i) for i, a in enumerate(answer.choices)],
            "usageMetadata": self._usage(total),
            "modelVersion": req.model,
            "responseId": _ident("", 22),
        }
        if req.stream:
            return gemini_stream(req, body, {})
        return _json_response(200, body, {"Content-Type": self._CT})

    def stream_fault_event(self, fault: Fault) -> bytes:
        return gemini_stream_fault_event(fault.name)

    @staticmethod
    def _safety_ratings() -> list[Json]:
        return [
            {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True},
            {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
        ]

    def fault(self, fault: Fault, req: ChatRequest) -> Response:
        name = fault.name
        if name == "rate_limit":
            ra = _num(fault.retry_after)
            details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{ra}s"}]
            return self.error(
                429,
                "RESOURCE_EXHAUSTED",
                "You exceeded your current quota, please check your plan and billing details.",
                details,
                headers={"Retry-After": ra},
            )
        if name == "server_error":
            return self.error(500, "INTERNAL", "An internal error has occurred. Please retry or report the issue.")
        if name == "overloaded":
            return self.error(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")
        if name == "auth":
            return self.error(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. "
                "Expected OAuth 2 access token, login cookie or other valid authentication credential.",
            )
        if name == "bad_request":
            return self.error(400, "INVALID_ARGUMENT", "Request contains an invalid argument.")
        if name == "context_length":
            total = self.CONTEXT_LIMIT + req.input_tokens
            return self.error(
                400,
                "INVALID_ARGUMENT",
                f"The input token count ({total}) exceeds the maximum number of tokens allowed ({self.CONTEXT_LIMIT}).",
            )
        if name == "content_filter":
            body = {
                "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": self._safety_ratings()},
                "usageMetadata": {"promptTokenCount": req.input_tokens, "totalTokenCount": req.input_tokens},
                "modelVersion": req.model,
                "responseId": _ident("", 22),
            }
            if req.stream:
                return sse_or_array(req, [body], {})
            return _json_response(200, body, {"Content-Type": self._CT})
        if name == "malformed":
            body_bytes = b'{"candidates": [{"content": {"parts": [{"text": "trunc'
            return Response(200, body_bytes, {"Content-Type": self._CT})
        if name == "malformed_shape":
            return _json_response(
                200, {"modelVersion": req.model, "responseId": _ident("", 22)}, {"Content-Type": self._CT}
            )
        raise ValueError(name)
