"""Local provider simulator: OpenAI, Anthropic and Gemini wire formats on one HTTP server.

The simulator lets the gateway's HTTP adapters run against real sockets without real
providers. Answers are deterministic (derived from a sha256 of the prompt), usage is
computed from text lengths, and faults (rate limits, overload, dropped connections,
malformed bodies, ...) can be injected per request or per run.

Token accounting (documented here because tests assert on it):
    input tokens  = sum over messages (system prompt counts as one message) of
                    ceil(len(text) / 4) + MESSAGE_OVERHEAD_TOKENS
    output tokens = ceil(len(answer text) / 4)   (for Anthropic tool_use: of the JSON input)

Run standalone with ``python -m local.simulator --port 8900``.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from local.sim_schema_rules import anthropic_tools_problem, gemini_schema_problem, openai_strict_problem

MESSAGE_OVERHEAD_TOKENS = 4
PROVIDERS = ("openai", "compat", "anthropic", "gemini")
FAULTS = frozenset(
    {
        "rate_limit",
        "server_error",
        "overloaded",
        "slow",
        "drop",
        "malformed",
        "malformed_shape",
        "auth",
        "bad_request",
        "context_length",
        "content_filter",
    }
)
FINISH_REASONS = frozenset({"stop", "length", "content_filter"})
_MARKER = re.compile(r"\[\[sim:fault=([a-z_]+)((?:\s*,\s*[a-z_]+\s*=\s*[0-9.]+)*)\s*\]\]")
_GEMINI_ROUTE = re.compile(r"^/gemini/(v1beta|v1)/models/([^/]+):generateContent$")
_JSON = "application/json"

Json = dict[str, Any]


# --------------------------------------------------------------------------- data


@dataclass
class Fault:
    name: str
    retry_after: float = 1.0
    delay_s: float = 5.0


@dataclass
class FaultRule:
    fault: str
    provider: str = "*"
    model: str | None = None
    times: int | None = None
    retry_after: float = 1.0
    delay_s: float = 5.0


@dataclass
class Reply:
    """A scripted answer; finish_reason is provider-neutral (stop/length/content_filter)."""

    content: str
    finish_reason: str | None = None
    cached_tokens: int = 0
    input_tokens: int | None = None  # bill this many input tokens instead of the count (a different tokenizer)


@dataclass
class ChatRequest:
    """The provider-neutral view of one chat request."""

    provider: str
    model: str
    texts: list[str]
    max_tokens: int | None = None
    json_mode: bool = False
    schema: Json | None = None
    tool_name: str | None = None  # Anthropic forced tool (structured output)

    @property
    def joined(self) -> str:
        return "\n".join(self.texts)

    @property
    def input_tokens(self) -> int:
        return sum(_tokens(t) + MESSAGE_OVERHEAD_TOKENS for t in self.texts)


@dataclass
class Answer:
    text: str
    finish: str  # provider-neutral: stop | length | content_filter
    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0
    tool_input: Json | None = None  # set when Anthropic should answer with a tool_use block


@dataclass
class Response:
    status: int
    body: bytes | None  # None means: drop the connection without answering
    headers: dict[str, str] = field(default_factory=dict)
    fault: str | None = None


def _tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


def _json_response(status: int, obj: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(status, _dumps(obj), {"Content-Type": _JSON, **(headers or {})})


def _num(value: float) -> str:
    """Header-friendly number: 1.0 -> "1", 0.5 -> "0.5"."""
    return f"{value:g}"


def _ident(prefix: str, length: int = 24) -> str:
    return prefix + uuid.uuid4().hex[:length]


# --------------------------------------------------------------------------- answers

_SUBJECTS = (
    "The quiet river",
    "A careful engineer",
    "The old lighthouse",
    "Every small request",
    "The morning train",
    "A patient gardener",
    "The distant observatory",
    "This short answer",
    "The northern wind",
    "A curious student",
    "The busy harbour",
    "An honest ledger",
    "The paper lantern",
    "A steady compass",
    "The silver kettle",
    "A wandering poet",
)
_VERBS = (
    "considers",
    "remembers",
    "follows",
    "describes",
    "carries",
    "balances",
    "explains",
    "observes",
    "gathers",
    "measures",
    "questions",
    "celebrates",
    "organises",
    "illuminates",
    "shelters",
    "revisits",
)
_OBJECTS = (
    "the shape of the question",
    "a small set of facts",
    "the evening light",
    "a well-formed reply",
    "the distant hills",
    "every token it sees",
    "an orderly list of ideas",
    "the simplest path forward",
    "a handful of old maps",
    "the rhythm of the tide",
    "the quiet hours",
    "a bright new plan",
    "the weight of the evidence",
    "a long list of numbers",
    "the spirit of the task",
    "a clear summary",
)
_ENDINGS = (
    "with quiet confidence.",
    "before the rain arrives.",
    "in plain words.",
    "one step at a time.",
    "without any hurry.",
    "as the clock strikes noon.",
    "for the benefit of all.",
    "with remarkable care.",
)


def deterministic_sentences(text: str) -> str:
    """Two English sentences picked by the sha256 of ``text`` (same text, same answer)."""
    d = hashlib.sha256(text.encode()).digest()
    first = f"{_SUBJECTS[d[0] % 16]} {_VERBS[d[1] % 16]} {_OBJECTS[d[2] % 16]} {_ENDINGS[d[3] % 8]}"
    second = f"{_SUBJECTS[d[4] % 16]} {_VERBS[d[5] % 16]} {_OBJECTS[d[6] % 16]} {_ENDINGS[d[7] % 8]}"
    return f"{first} {second}"


def _compose(req: ChatRequest, reply: Reply | None) -> Answer:
    """Build the provider-neutral answer: scripted reply, schema instance or prose."""
    tool_input: Json | None = None
    if reply is not None:
        text = reply.content
        if req.tool_name is not None:
            with suppress(ValueError):
                parsed = json.loads(text)
                if isinstance(parsed, dict):
                    tool_input = parsed
    elif req.schema is not None or req.json_mode or req.tool_name is not None:
        schema = req.schema if req.schema is not None else {}
        value = schema_instance(schema) if schema else {"answer": deterministic_sentences(req.joined)}
        if req.tool_name is not None:
            tool_input = value if isinstance(value, dict) else {"value": value}
        text = json.dumps(value)
    else:
        text = f"[sim {req.provider}/{req.model}] {deterministic_sentences(req.joined)}"

    counted = json.dumps(tool_input) if tool_input is not None else text
    billed_input = reply.input_tokens if reply is not None and reply.input_tokens is not None else req.input_tokens
    cached = min(reply.cached_tokens, billed_input) if reply else 0
    if reply is not None and reply.finish_reason is not None:
        finish = reply.finish_reason
    elif req.max_tokens is not None and _tokens(counted) > req.max_tokens:
        # Truncate like a real model that ran out of budget; a cut tool call carries no input.
        finish = "length"
        text = counted[: req.max_tokens * 4]
        if tool_input is not None:
            tool_input = {}
        return Answer(text, finish, billed_input, req.max_tokens, cached, tool_input)
    else:
        finish = "stop"
    return Answer(text, finish, billed_input, _tokens(counted), cached, tool_input)


# --------------------------------------------------------------------------- JSON schema instances

_STRING_FORMATS = {
    "date": "2024-01-01",
    "date-time": "2024-01-01T00:00:00Z",
    "time": "00:00:00",
    "email": "user@example.com",
    "uri": "https://example.com",
    "url": "https://example.com",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "127.0.0.1",
}
_MAX_DEPTH = 16
_FORMAT_HINT = re.compile(r"\bformat: ([A-Za-z0-9-]+)")  # e.g. Gemini schemas carry formats as hints


def schema_instance(schema: Json, root: Json | None = None, name: str = "", depth: int = 0) -> Any:
    """A deterministic minimal instance valid against ``schema`` (JSON Schema or Gemini OpenAPI subset)."""
    root = schema if root is None else root
    schema = _resolve(schema, root)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            branches = [_resolve(b, root) for b in schema[key]]
            non_null = [b for b in branches if _type_of(b) != "null"]
            return schema_instance((non_null or branches)[0], root, name, depth + 1)
    if schema.get("allOf"):
        merged = _merge_all_of(schema, root)
        return schema_instance(merged, root, name, depth + 1)

    kind = _type_of(schema)
    if depth > _MAX_DEPTH:  # recursive schemas: stop with the smallest value of the type
        return {"object": {}, "array": [], "null": None}.get(kind, _scalar(kind, schema, name))
    if kind == "object":
        props: Json = schema.get("properties") or {}
        wanted = schema.get("required") or list(props)
        return {key: schema_instance(props.get(key, {}), root, key, depth + 1) for key in wanted}
    if kind == "array":
        count = max(1, int(schema.get("minItems", 1)))
        if "maxItems" in schema:
            count = min(count, int(schema["maxItems"]))
        items = schema.get("items")
        item_schema = items if isinstance(items, dict) else {"type": "string"}
        return [schema_instance(item_schema, root, name, depth + 1) for _ in range(count)]
    return _scalar(kind, schema, name)


def _resolve(schema: Json, root: Json) -> Json:
    seen = 0
    while isinstance(schema.get("$ref"), str) and seen < 32:
        ref: str = schema["$ref"]
        if not ref.startswith("#"):
            return {}
        target: Any = root
        for part in ref.lstrip("#").strip("/").split("/"):
            if part:
                target = target.get(part.replace("~1", "/").replace("~0", "~"), {})
        schema = target if isinstance(target, dict) else {}
        seen += 1
    return schema


def _merge_all_of(schema: Json, root: Json) -> Json:
    merged: Json = {k: v for k, v in schema.items() if k != "allOf"}
    for part in schema["allOf"]:
        sub = _resolve(part, root)
        for key, value in sub.items():
            if key == "properties":
                merged.setdefault("properties", {}).update(value)
            elif key == "required":
                merged["required"] = [*merged.get("required", []), *value]
            else:
                merged.setdefault(key, value)
    return merged


def _type_of(schema: Json) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        non_null = [str(k).lower() for k in kind if str(k).lower() != "null"]
        return non_null[0] if non_null else "null"
    if isinstance(kind, str):
        return kind.lower()
    if "properties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    return "string"


def _scalar(kind: str, schema: Json, name: str) -> Any:
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    if kind in ("integer", "number"):
        value: float = 1
        if "minimum" in schema:
            value = max(value, schema["minimum"])
        if "exclusiveMinimum" in schema and not isinstance(schema["exclusiveMinimum"], bool):
            value = max(value, schema["exclusiveMinimum"] + 1)
        if "maximum" in schema:
            value = min(value, schema["maximum"])
        return math.ceil(value) if kind == "integer" else value
    fmt = schema.get("format")
    if not isinstance(fmt, str):  # like a real model, read a format the schema could only hint at
        hinted = _FORMAT_HINT.search(str(schema.get("description") or ""))
        fmt = hinted.group(1) if hinted else None
    text = _STRING_FORMATS.get(fmt, f"sample {name}".strip()) if isinstance(fmt, str) else f"sample {name}"
    text = text.strip()
    min_len = int(schema.get("minLength", 0))
    if len(text) < min_len:
        text = text + "x" * (min_len - len(text))
    if "maxLength" in schema:
        text = text[: int(schema["maxLength"])]
    return text


# --------------------------------------------------------------------------- helpers on bodies


def _get(obj: Json, *keys: str) -> Any:
    """First present key: Gemini's REST API accepts both camelCase and snake_case."""
    for key in keys:
        if key in obj:
            return obj[key]
    return None


def _block_texts(content: Any) -> Iterator[str]:
    """Text of OpenAI parts / Anthropic blocks / plain strings (images and the like are skipped)."""
    if isinstance(content, str):
        yield content
        return
    if not isinstance(content, list):
        return
    for block in content:
        if isinstance(block, str):
            yield block
        elif isinstance(block, dict):
            if isinstance(block.get("text"), str):
                yield block["text"]
            elif block.get("type") == "tool_result":
                yield from _block_texts(block.get("content"))
            elif block.get("type") == "tool_use":
                yield json.dumps(block.get("input", {}))


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


# --------------------------------------------------------------------------- dialects


class Dialect:
    """One provider's wire format: auth, validation, parsing, answers and errors."""

    name = ""

    def check_auth(self, headers: dict[str, str], query: dict[str, str]) -> Response | None:
        raise NotImplementedError

    def parse(self, body: Any, headers: dict[str, str], path_model: str | None) -> ChatRequest | Response:
        raise NotImplementedError

    def render(self, req: ChatRequest, answer: Answer) -> Response:
        raise NotImplementedError

    def fault(self, fault: Fault, req: ChatRequest) -> Response:
        raise NotImplementedError

    def invalid_json(self) -> Response:
        raise NotImplementedError

    def not_found(self, method: str, path: str) -> Response:
        raise NotImplementedError

    def client_error(self, message: str) -> Response:
        """A plain 400 in this provider's error shape."""
        raise NotImplementedError


class OpenAIDialect(Dialect):
    """OpenAI Chat Completions (also used, without mandatory auth, for the generic compat server)."""

    CONTEXT_LIMIT = 128_000

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
        if body.get("stream"):
            return self.error(400, "The provider simulator does not support streaming.", param="stream")
        req = ChatRequest(self.name, model, [])
        for message in messages:
            if isinstance(message, dict):
                req.texts.append("".join(_block_texts(message.get("content"))))
        req.max_tokens = _positive_int(body.get("max_completion_tokens")) or _positive_int(body.get("max_tokens"))
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
        return req

    def render(self, req: ChatRequest, answer: Answer) -> Response:
        content = "" if answer.finish == "content_filter" and not answer.text else answer.text
        body = {
            "id": _ident("chatcmpl-", 29),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": req.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None, "annotations": []},
                    "logprobs": None,
                    "finish_reason": answer.finish,
                }
            ],
            "usage": {
                "prompt_tokens": answer.input_tokens,
                "completion_tokens": answer.output_tokens,
                "total_tokens": answer.input_tokens + answer.output_tokens,
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
        return _json_response(200, body, {**self._headers(), **self._ratelimit_headers(59)})

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


class AnthropicDialect(Dialect):
    """Anthropic Messages API."""

    name = "anthropic"
    CONTEXT_LIMIT = 200_000
    _STOP = {"stop": "end_turn", "length": "max_tokens", "content_filter": "refusal"}

    def error(self, status: int, type_: str, message: str, headers: dict[str, str] | None = None) -> Response:
        request_id = _ident("req_011", 21)
        body = {"type": "error", "error": {"type": type_, "message": message}, "request_id": request_id}
        extra = {"request-id": request_id}
        if status == 429 or status >= 500:
            extra["x-should-retry"] = "true"
        return _json_response(status, body, {**extra, **(headers or {})})

    def check_auth(self, headers: dict[str, str], query: dict[str, str]) -> Response | None:
        key = headers.get("x-api-key", "")
        if not key:
            return self.error(401, "authentication_error", "x-api-key header is required")
        if key == "invalid":
            return self.error(401, "authentication_error", "invalid x-api-key")
        return None

    def invalid_json(self) -> Response:
        return self.error(400, "invalid_request_error", "There was an error parsing the body of your request.")

    def not_found(self, method: str, path: str) -> Response:
        return self.error(404, "not_found_error", "Not Found")

    def client_error(self, message: str) -> Response:
        return self.error(400, "invalid_request_error", message)

    def parse(self, body: Any, headers: dict[str, str], path_model: str | None) -> ChatRequest | Response:
        if not headers.get("anthropic-version"):
            return self.error(400, "invalid_request_error", "anthropic-version: header is required")
        if not isinstance(body, dict):
            return self.invalid_json()
        for field_name in ("model", "max_tokens", "messages"):
            if field_name not in body:
                return self.error(400, "invalid_request_error", f"{field_name}: Field required")
        model, max_tokens, messages = body["model"], body["max_tokens"], body["messages"]
        if not isinstance(model, str) or not model:
            return self.error(400, "invalid_request_error", "model: Input should be a valid string")
        if _positive_int(max_tokens) is None:
            return self.error(400, "invalid_request_error", "max_tokens: Input should be a valid integer")
        if not isinstance(messages, list) or not messages:
            return self.error(400, "invalid_request_error", "messages: at least one message is required")
        if body.get("stream"):
            return self.error(400, "invalid_request_error", "The provider simulator does not support streaming.")

        req = ChatRequest(self.name, model, [], max_tokens=max_tokens)
        system = "".join(_block_texts(body.get("system")))
        if system:
            req.texts.append(system)
        for message in messages:
            if isinstance(message, dict):
                req.texts.append("".join(_block_texts(message.get("content"))))
        return self._forced_tool(body, req)

    def _forced_tool(self, body: Json, req: ChatRequest) -> ChatRequest | Response:
        """tool_choice {"type":"tool"} (or "any") is how structured output is requested."""
        choice = body.get("tool_choice")
        tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
        problem = anthropic_tools_problem(tools)
        if problem:
            return self.error(400, "invalid_request_error", problem)
        if not isinstance(choice, dict) or choice.get("type") not in ("tool", "any"):
            return req
        if not tools:
            return self.error(
                400, "invalid_request_error", "tool_choice: tool_choice may only be specified while providing tools"
            )
        wanted = choice.get("name") if choice["type"] == "tool" else tools[0].get("name")
        tool = next((t for t in tools if t.get("name") == wanted), None)
        if tool is None:
            return self.error(400, "invalid_request_error", f"Tool '{wanted}' not found in provided tools")
        req.tool_name = str(wanted)
        schema = tool.get("input_schema")
        req.schema = schema if isinstance(schema, dict) else {"type": "object"}
        return req

    def render(self, req: ChatRequest, answer: Answer) -> Response:
        content: list[Json]
        if answer.finish == "content_filter":
            content = [{"type": "text", "text": answer.text}] if answer.text else []
            stop_reason = "refusal"
        elif answer.tool_input is not None:
            content = [
                {"type": "tool_use", "id": _ident("toolu_01", 22), "name": req.tool_name, "input": answer.tool_input}
            ]
            stop_reason = "tool_use" if answer.finish == "stop" else self._STOP[answer.finish]
        else:
            content = [{"type": "text", "text": answer.text}]
            stop_reason = self._STOP[answer.finish]
        body = {
            "id": _ident("msg_01", 22),
            "type": "message",
            "role": "assistant",
            "model": req.model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {
                # Anthropic reports cache reads separately from (not inside) input_tokens.
                "input_tokens": answer.input_tokens - answer.cached_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": answer.cached_tokens,
                "output_tokens": answer.output_tokens,
                "service_tier": "standard",
            },
        }
        return _json_response(200, body, {"request-id": _ident("req_011", 21)})

    def fault(self, fault: Fault, req: ChatRequest) -> Response:
        name = fault.name
        if name == "rate_limit":
            ra = _num(fault.retry_after)
            return self.error(
                429,
                "rate_limit_error",
                "This request would exceed the rate limit for your organization of 50 requests per minute. "
                "Please try again later.",
                headers={
                    "retry-after": ra,
                    "anthropic-ratelimit-requests-limit": "50",
                    "anthropic-ratelimit-requests-remaining": "0",
                },
            )
        if name == "server_error":
            return self.error(500, "api_error", "Internal server error")
        if name == "overloaded":
            return self.error(529, "overloaded_error", "Overloaded")
        if name == "auth":
            return self.error(401, "authentication_error", "invalid x-api-key")
        if name == "bad_request":
            return self.error(400, "invalid_request_error", "messages: simulated bad request")
        if name == "context_length":
            total = self.CONTEXT_LIMIT + req.input_tokens
            return self.error(
                400, "invalid_request_error", f"prompt is too long: {total} tokens > {self.CONTEXT_LIMIT} maximum"
            )
        if name == "content_filter":
            return self.render(req, Answer("", "content_filter", req.input_tokens, 0))
        if name == "malformed":
            body = b'{"id": "msg_01sim", "type": "message", "role": "assistant", "content": [{"type": "te'
            return Response(200, body, {"Content-Type": _JSON})
        if name == "malformed_shape":
            shape = {"id": _ident("msg_01", 22), "type": "message", "role": "assistant", "model": req.model}
            return _json_response(200, shape)
        raise ValueError(name)


class GeminiDialect(Dialect):
    """Google Gemini generateContent (Generative Language API)."""

    name = "gemini"
    CONTEXT_LIMIT = 1_048_576
    _FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "content_filter": "SAFETY"}
    _CT = "application/json; charset=UTF-8"

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
        return req

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

    def render(self, req: ChatRequest, answer: Answer) -> Response:
        candidate: Json = {"finishReason": self._FINISH[answer.finish], "index": 0}
        if answer.finish == "content_filter":
            candidate["safetyRatings"] = self._safety_ratings()
            if answer.text:
                candidate["content"] = {"parts": [{"text": answer.text}], "role": "model"}
        else:
            candidate["content"] = {"parts": [{"text": answer.text}], "role": "model"}
        body = {
            "candidates": [candidate],
            "usageMetadata": self._usage(answer),
            "modelVersion": req.model,
            "responseId": _ident("", 22),
        }
        return _json_response(200, body, {"Content-Type": self._CT})

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
            return _json_response(200, body, {"Content-Type": self._CT})
        if name == "malformed":
            body_bytes = b'{"candidates": [{"content": {"parts": [{"text": "trunc'
            return Response(200, body_bytes, {"Content-Type": self._CT})
        if name == "malformed_shape":
            return _json_response(
                200, {"modelVersion": req.model, "responseId": _ident("", 22)}, {"Content-Type": self._CT}
            )
        raise ValueError(name)


# --------------------------------------------------------------------------- simulator


def _fault_from_marker(text: str) -> Fault | None:
    match = _MARKER.search(text)
    if match is None:
        return None
    fault = Fault(match.group(1))
    for pair in filter(None, (p.strip() for p in match.group(2).split(","))):
        key, _, value = pair.partition("=")
        if key.strip() == "retry_after":
            fault.retry_after = float(value)
        elif key.strip() in ("delay", "delay_s"):
            fault.delay_s = float(value)
    return fault


def _parse_reply(raw: Any) -> Reply:
    if isinstance(raw, str):
        return Reply(raw)
    if isinstance(raw, dict) and isinstance(raw.get("content"), str):
        finish = raw.get("finish_reason")
        if finish is not None and finish not in FINISH_REASONS:
            raise ValueError(f"finish_reason must be one of {sorted(FINISH_REASONS)}, got {finish!r}")
        cached = raw.get("cached_tokens", 0)
        if not isinstance(cached, int) or cached < 0:
            raise ValueError("cached_tokens must be a non-negative integer")
        billed = raw.get("input_tokens")
        if billed is not None and (not isinstance(billed, int) or billed < 0):
            raise ValueError("input_tokens must be a non-negative integer")
        return Reply(raw["content"], finish, cached, billed)
    raise ValueError(f"a reply is a string or an object with a string 'content', got {raw!r}")


def _check_provider(provider: str) -> None:
    if provider != "*" and provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}; expected one of {[*PROVIDERS, '*']}")


class ProviderSimulator:
    """A local fake of the OpenAI / Anthropic / Gemini HTTP APIs with fault injection."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, latency_ms: int = 0) -> None:
        self.host = host
        self.port = port
        self.verbose = False
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._script: list[tuple[str, Reply]] = []
        self._calls: list[Json] = []
        self._latency_ms = latency_ms
        self._epoch = 0  # bumped by reset() so in-flight requests don't log into the new run
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._dialects: dict[str, Dialect] = {
            "openai": OpenAIDialect("openai"),
            "compat": OpenAIDialect("compat", require_auth=False),
            "anthropic": AnthropicDialect(),
            "gemini": GeminiDialect(),
        }

    # ---- lifecycle

    def start(self) -> ProviderSimulator:
        if self._server is not None:
            return self
        self._server = _Server((self.host, self.port), _Handler)
        self._server.sim = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="provider-sim", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> ProviderSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("simulator not started")
        return f"http://{self.host}:{self.port}"

    def base_urls(self) -> dict[str, str]:
        return {
            "openai": f"{self.url}/openai/v1",
            "anthropic": f"{self.url}/anthropic",
            "gemini": f"{self.url}/gemini",
            "compat": f"{self.url}/compat/v1",
        }

    # ---- control API

    def add_fault(
        self,
        fault: str,
        provider: str = "*",
        model: str | None = None,
        times: int | None = None,
        retry_after: float = 1,
        delay_s: float = 5,
    ) -> None:
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; expected one of {sorted(FAULTS)}")
        _check_provider(provider)
        if times is not None and times <= 0:
            raise ValueError("times must be positive or None")
        with self._lock:
            self._rules.append(FaultRule(fault, provider, model, times, float(retry_after), float(delay_s)))

    def clear_faults(self) -> None:
        with self._lock:
            self._rules.clear()

    def faults(self) -> list[Json]:
        with self._lock:
            return [asdict(rule) for rule in self._rules]

    def script(self, provider: str, replies: list[str | Json]) -> None:
        """Queue exact replies; consumed FIFO by requests to ``provider`` ("*" matches any)."""
        _check_provider(provider)
        parsed = [_parse_reply(r) for r in replies]
        with self._lock:
            self._script.extend((provider, r) for r in parsed)

    def calls(self, provider: str | None = None) -> list[Json]:
        with self._lock:
            return [copy.deepcopy(c) for c in self._calls if provider is None or c["provider"] == provider]

    def clear_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    def set_latency(self, ms: int) -> None:
        if ms < 0:
            raise ValueError("latency must be >= 0")
        with self._lock:
            self._latency_ms = int(ms)

    def reset(self) -> None:
        with self._lock:
            self._rules.clear()
            self._script.clear()
            self._calls.clear()
            self._latency_ms = 0
            self._epoch += 1

    # ---- request handling (called from handler threads)

    def _take_rule(self, provider: str, model: str) -> Fault | None:
        with self._lock:
            for rule in self._rules:
                if rule.provider not in ("*", provider) or rule.model not in (None, model):
                    continue
                if rule.times is not None:
                    rule.times -= 1
                    if rule.times <= 0:
                        self._rules.remove(rule)
                return Fault(rule.fault, rule.retry_after, rule.delay_s)
        return None

    def _take_reply(self, provider: str) -> Reply | None:
        with self._lock:
            for i, (target, reply) in enumerate(self._script):
                if target in ("*", provider):
                    del self._script[i]
                    return reply
        return None

    def _pick_fault(self, req: ChatRequest, headers: dict[str, str]) -> Fault | None:
        """Header beats message marker beats run-wide rules."""
        name = headers.get("x-sim-fault")
        if name:
            fault = Fault(name.strip())
            with suppress(ValueError):
                fault.retry_after = float(headers.get("x-sim-retry-after", "1"))
            with suppress(ValueError):
                fault.delay_s = float(headers.get("x-sim-delay", "5"))
            return fault
        return _fault_from_marker(req.joined) or self._take_rule(req.provider, req.model)

    def handle_provider(
        self, provider: str, headers: dict[str, str], query: dict[str, str], raw: bytes, path_model: str | None
    ) -> tuple[Response, Any, str | None]:
        """Answer one provider request; returns the response, the parsed body and the model."""
        dialect = self._dialects[provider]
        with self._lock:
            latency = self._latency_ms
        if latency:
            time.sleep(latency / 1000)
        body: Any = None
        with suppress(ValueError):
            body = json.loads(raw) if raw else None
        model = body.get("model") if isinstance(body, dict) else None
        model = path_model if provider == "gemini" else model

        denied = dialect.check_auth(headers, query)
        if denied is not None:
            return denied, body, model
        if body is None:
            return dialect.invalid_json(), body, model
        req = dialect.parse(body, headers, path_model)
        if isinstance(req, Response):
            return req, body, model

        fault = self._pick_fault(req, headers)
        if fault is not None:
            if fault.name not in FAULTS:
                resp = dialect.client_error(f"unknown simulator fault {fault.name!r}")
                resp.fault = fault.name
                return resp, body, req.model
            if fault.name == "drop":
                return Response(0, None, fault="drop"), body, req.model
            if fault.name != "slow":
                resp = dialect.fault(fault, req)
                resp.fault = fault.name
                return resp, body, req.model
            time.sleep(max(0.0, fault.delay_s))

        resp = dialect.render(req, _compose(req, self._take_reply(provider)))
        resp.fault = fault.name if fault else None
        return resp, body, req.model

    def epoch(self) -> int:
        with self._lock:
            return self._epoch

    def record(self, call: Json, epoch: int | None = None) -> None:
        with self._lock:
            if epoch is None or epoch == self._epoch:
                self._calls.append(call)

    def handle_control(self, method: str, path: str, query: dict[str, str], raw: bytes) -> Response:
        """The /_sim/* endpoints that mirror the Python API."""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return _json_response(400, {"error": "body is not valid JSON"})
        routes: dict[tuple[str, str], Callable[[], Any]] = {
            ("GET", "/_sim/health"): lambda: {"ok": True, "base_urls": self.base_urls()},
            ("GET", "/_sim/calls"): lambda: self.calls(query.get("provider")),
            ("DELETE", "/_sim/calls"): self.clear_calls,
            ("GET", "/_sim/faults"): self.faults,
            ("POST", "/_sim/faults"): lambda: self.add_fault(**body),
            ("DELETE", "/_sim/faults"): self.clear_faults,
            ("POST", "/_sim/script"): lambda: self.script(body["provider"], body["replies"]),
            ("POST", "/_sim/config"): lambda: self.set_latency(int(body.get("latency_ms", 0))),
            ("POST", "/_sim/reset"): self.reset,
        }
        action = routes.get((method, path))
        if action is None:
            return _json_response(404, {"error": f"no simulator control route {method} {path}"})
        try:
            result = action()
        except (TypeError, ValueError, KeyError) as exc:
            return _json_response(400, {"error": str(exc)})
        return _json_response(200, {"ok": True} if result is None else result)


# --------------------------------------------------------------------------- HTTP plumbing


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default listen backlog of 5 resets connections when a client opens many at once
    # (parallel summarization opens 16): real providers accept such bursts.
    request_queue_size = 128
    sim: ProviderSimulator


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so clients reuse connections like with real APIs
    disable_nagle_algorithm = True
    server_version = "provider-sim/1.0"
    server: _Server

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.sim.verbose:
            super().log_message(format, *args)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self, method: str) -> None:
        sim = self.server.sim
        split = urlsplit(self.path)
        path = split.path
        query = {k: v[0] for k, v in parse_qs(split.query).items()}
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            raw = self._read_body()
            if path.startswith("/_sim/"):
                self._send(sim.handle_control(method, path, query, raw))
                return
            provider, path_model = self._route(method, path)
            if provider is None:
                self._send(self._not_found(method, path))
                return
            epoch = sim.epoch()
            resp, body, model = sim.handle_provider(provider, headers, query, raw, path_model)
            # The path is recorded without the query string: Gemini keys may travel in ?key=.
            sim.record(
                {
                    "provider": provider,
                    "model": model,
                    "path": path,
                    "body": body,
                    "fault": resp.fault,
                    "status": resp.status if resp.body is not None else None,
                    "ts": time.time(),
                },
                epoch,
            )
            self._send(resp)
        except Exception as exc:  # never let a simulator bug hang the client
            self.log_error("simulator error: %r", exc)
            self._send(_json_response(500, {"error": {"message": f"simulator error: {exc!r}"}}))

    @staticmethod
    def _route(method: str, path: str) -> tuple[str | None, str | None]:
        if method != "POST":
            return None, None
        if path == "/openai/v1/chat/completions":
            return "openai", None
        if path == "/compat/v1/chat/completions":
            return "compat", None
        if path == "/anthropic/v1/messages":
            return "anthropic", None
        match = _GEMINI_ROUTE.match(path)
        if match:
            return "gemini", unquote(match.group(2))
        return None, None

    def _not_found(self, method: str, path: str) -> Response:
        dialects = self.server.sim._dialects
        for prefix, name in (
            ("/openai/", "openai"),
            ("/compat/", "compat"),
            ("/anthropic/", "anthropic"),
            ("/gemini/", "gemini"),
        ):
            if path.startswith(prefix):
                return dialects[name].not_found(method, path.removeprefix(prefix.rstrip("/")))
        return _json_response(404, {"error": {"message": f"Not found: {method} {path}", "code": 404}})

    def _send(self, resp: Response) -> None:
        if resp.body is None:  # "drop": close the socket without a status line
            self.close_connection = True
            return
        reason = {529: "Overloaded"}.get(resp.status)
        try:
            self.send_response(resp.status, reason)
            for key, value in resp.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(resp.body)))
            self.end_headers()
            self.wfile.write(resp.body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # client gave up (e.g. timed out on a "slow" fault)


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Local OpenAI/Anthropic/Gemini provider simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument("--latency-ms", type=int, default=0, help="fixed delay added to every provider answer")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)

    sim = ProviderSimulator(args.host, args.port, args.latency_ms)
    sim.verbose = args.verbose
    sim.start()
    print(f"provider simulator listening on {sim.url}", flush=True)
    for name, url in sim.base_urls().items():
        print(f"  {name:<10} {url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
