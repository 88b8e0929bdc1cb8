"""OpenAI Chat Completions dialect (also the generic OpenAI-compatible server)."""

from __future__ import annotations

import time
from typing import Any

from local.simulator import tool_wire
from local.simulator.choices import openai_logprobs
from local.simulator.dialect import Dialect, _block_texts, _positive_int
from local.simulator.faults import Fault
from local.simulator.openai_stream import openai_stream, openai_stream_fault_event
from local.simulator.schema_rules import openai_strict_problem
from local.simulator.wire import (
    _JSON,
    Answer,
    ChatRequest,
    Json,
    Response,
    _ident,
    _json_response,
    _num,
)


class OpenAIDialect(Dialect):
    """OpenAI Chat Completions (also used, without mandatory auth, for the generic compat server)."""

    CONTEXT_LIMIT = 128_000
    MAX_N = 128

    def __init__(self, name: str = "openai", require_auth: bool = True) -> None:
        self.name = name
        self.require_auth = require_auth

    def error(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
        return _json_response(status, body, {**self._headers(), **(headers or {})})

    def _headers(self) -> dict[str, str]:
        return {
            "x-request-id": _ident("req_", 32),
            "openai-processing-ms": "1",
            "openai-version": "2020-10-01",
        }

    def check_auth(self, headers: dict[str, str], query: dict[str, str]) -> Response | None:
        auth = headers.get("authorization", "")
        key = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        if not key and self.require_auth:
            return self.error(
                401,
                "You didn't provide an API key. You need to provide your API key in an Authorization "
                "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        if key == "invalid":
            return self.error(
                401,
                "Incorrect API key provided: invalid. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )
        return None

    def invalid_json(self) -> Response:
        return self.error(
            400,
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
            "using your HTTP library correctly. The OpenAI API expects a JSON payload.)",
        )

    def not_found(self, method: str, path: str) -> Response:
        return self.error(404, f"Invalid URL ({method} {path})")

    def client_error(self, message: str) -> Response:
        return self.error(400, message)

    def parse(self, body: Any, headers: dict[str, str], path_model: str | None) -> ChatRequest | Response:
        if not isinstance(body, dict):
            return self.invalid_json()
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return self.error(400, "you must provide a model parameter")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return self.error(
                400,
                "Invalid 'messages': empty array. Expected an array with minimum length 1, "
                "but got an empty array instead.",
                param="messages",
                code="empty_array",
            )
        req = ChatRequest(self.name, model, [])
        refused = self._stream_options(body, req)
        if refused is not None:
            return refused
        for message in messages:
            if isinstance(message, dict):
                req.texts.append("".join(_block_texts(message.get("content"))))
        req.max_tokens = _positive_int(body.get("max_completion_tokens")) or _positive_int(body.get("max_tokens"))
        refused = self._choices_and_logprobs(body, req)
        if refused is not None:
            return refused
        fmt = body.get("response_format")
        if isinstance(fmt, dict):
            if fmt.get("type") == "json_schema":
                spec = fmt.get("json_schema")
                if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
                    return self.error(
                        400,
                        "Missing required parameter: 'response_format.json_schema'.",
                        param="response_format.json_schema",
                        code="missing_required_parameter",
                    )
                req.json_mode = True
                schema = spec.get("schema")
                if spec.get("strict") is True:
                    problem = openai_strict_problem(schema, spec["name"])
                    if problem:
                        return self.error(400, problem, param="response_format")
                req.schema = schema if isinstance(schema, dict) else None
            elif fmt.get("type") == "json_object":
                req.json_mode = True
        turns = tool_wire.openai_turns(body)
        if isinstance(turns, str):
            return self.error(400, turns, param="messages")
        req.tool_turns = turns
        return req

    def _stream_options(self, body: Json, req: ChatRequest) -> Response | None:
        """``stream`` (a boolean) and ``stream_options``, which OpenAI refuses without ``stream: true``."""
        stream = body.get("stream")
        if stream is not None and not isinstance(stream, bool):
            return self.error(
                400, f"Invalid type for 'stream': expected a boolean, but got {type(stream).__name__} instead.",
                param="stream", code="invalid_type",
            )  # fmt: skip
        options = body.get("stream_options")
        if options is not None:
            if stream is not True:
                return self.error(
                    400, "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                    param="stream_options",
                )  # fmt: skip
            if not isinstance(options, dict):
                return self.error(
                    400, "Invalid type for 'stream_options': expected an object.",
                    param="stream_options", code="invalid_type",
                )  # fmt: skip
            req.include_usage = options.get("include_usage") is True
        req.stream = stream is True
        return None

    def stream_fault_event(self, fault: Fault) -> bytes:
        return openai_stream_fault_event(fault.name)

    def _choices_and_logprobs(self, body: Json, req: ChatRequest) -> Response | None:
        """n (1..128), logprobs and top_logprobs (0..20, only with logprobs), refused as OpenAI does."""
        n = body.get("n", 1)
        if n is not None:
            if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= self.MAX_N:
                return self.error(400, f"Invalid 'n': expected an integer from 1 to {self.MAX_N}.", param="n")
            req.n = n
        req.logprobs = body.get("logprobs") is True
        top = body.get("top_logprobs")
        if top is not None:
            if not isinstance(top, int) or isinstance(top, bool) or not 0 <= top <= 20:
                return self.error(
                    400, "Invalid 'top_logprobs': expected an integer from 0 to 20.", param="top_logprobs"
                )
            if not req.logprobs:
                return self.error(
                    400,
                    "Invalid value for 'logprobs': must be true when 'top_logprobs' is specified.",
                    param="logprobs",
                )
            req.top_logprobs = top
        return None

    def _choice(self, req: ChatRequest, answer: Answer, index: int) -> Json:
        content = "" if answer.finish == "content_filter" and not answer.text else answer.text
        message = {"role": "assistant", "content": content, "refusal": None, "annotations": []}
        if answer.tool_calls:
            message = tool_wire.openai_message(answer.tool_calls)
        return {
            "index": index,
            "message": message,
            "logprobs": openai_logprobs(content, req.top_logprobs) if req.logprobs else None,
            "finish_reason": answer.finish,
        }

    def render(self, req: ChatRequest, answer: Answer) -> Response:
        output_tokens = sum(a.output_tokens for a in answer.choices)  # OpenAI bills every choice
        body = {
            "id": _ident("chatcmpl-", 29),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": req.model,
            "choices": [self._choice(req, a, i) for i, a in enumerate(answer.choices)],
            "usage": {
                "prompt_tokens": answer.input_tokens,
                "completion_tokens": output_tokens,
                "total_tokens": answer.input_tokens + output_tokens,
                "prompt_tokens_details": {"cached_tokens": answer.cached_tokens, "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": 0,
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0,
                },
            },
            "service_tier": "default",
            "system_fingerprint": "fp_sim",
        }
        headers = {**self._headers(), **self._ratelimit_headers(59)}
        if req.stream:
            return openai_stream(req, body, headers)
        return _json_response(200, body, headers)

    def _ratelimit_headers(self, remaining: int, reset: str = "1s") -> dict[str, str]:
        return {
            "x-ratelimit-limit-requests": "60",
            "x-ratelimit-remaining-requests": str(remaining),
            "x-ratelimit-reset-requests": reset,
            "x-ratelimit-limit-tokens": "150000",
            "x-ratelimit-remaining-tokens": "149000" if remaining else "0",
            "x-ratelimit-reset-tokens": reset,
        }

    def fault(self, fault: Fault, req: ChatRequest) -> Response:
        name = fault.name
        if name == "rate_limit":
            ra = _num(fault.retry_after)
            return self.error(
                429,
                f"Rate limit reached for {req.model} in organization org-sim on requests per min (RPM): "
                f"Limit 60, Used 60, Requested 1. Please try again in {ra}s.",
                type_="requests",
                code="rate_limit_exceeded",
                headers={"Retry-After": ra, **self._ratelimit_headers(0, f"{ra}s")},
            )
        if name == "server_error":
            return self.error(
                500, "The server had an error while processing your request. Sorry about that!", "server_error"
            )
        if name == "overloaded":
            return self.error(
                503,
                "That model is currently overloaded with other requests. You can retry your request.",
                "server_error",
            )
        if name == "auth":
            return self.error(401, "Incorrect API key provided: sk-sim****.", code="invalid_api_key")
        if name == "bad_request":
            return self.error(400, "Invalid value for 'messages': simulated bad request.", param="messages")
        if name == "context_length":
            return self.error(
                400,
                f"This model's maximum context length is {self.CONTEXT_LIMIT} tokens. However, your "
                f"messages resulted in {self.CONTEXT_LIMIT + req.input_tokens} tokens. "
                "Please reduce the length of the messages.",
                param="messages",
                code="context_length_exceeded",
            )
        if name == "content_filter":
            answer = Answer("", "content_filter", req.input_tokens, 0)
            return self.render(req, answer)
        if name == "malformed":
            body = b'{"id": "chatcmpl-sim", "object": "chat.completion", "choices": [{"index": 0, "mess'
            return Response(200, body, {"Content-Type": _JSON, **self._headers()})
        if name == "malformed_shape":
            shape = {"id": _ident("chatcmpl-", 29), "object": "chat.completion", "model": req.model}
            return _json_response(200, shape, self._headers())
        raise ValueError(name)
