"""The OpenAI Chat Completions wire shape, for callers that use the official ``openai`` client.

Every problem with a request is a 400 ``invalid_request`` naming the OpenAI parameter at fault
(``messages.1.content.0.image_url``), never a 500: messages are checked here, field by field, and the
converted request goes through :func:`api.validate` like the gateway's own shape.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from llm_gateway.errors import GatewayError
from llm_gateway.http import framing as api
from llm_gateway.http import openai_tools
from llm_gateway.http.chat_params import refuse_unsupported
from llm_gateway.models import MAX_CHOICES, MAX_TOP_LOGPROBS, Choice, CompletionRequest, CompletionResult, Usage

TIERS = ("fast", "balanced", "best")
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
_IMAGE_DETAILS = ("auto", "low", "high")


class ChatCompletionsBody(BaseModel):
    """The OpenAI request: fields the gateway honours are declared; the rest are kept (``extra``) only to be
    checked by :func:`chat_params.refuse_unsupported` (a default value passes, anything else is a 400)."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=160)
    messages: list[Any] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = Field(default=None, ge=1, le=MAX_CHOICES)
    stream: bool | None = None
    stream_options: Any = None  # checked with stream (http/stream_params.py): only with stream: true
    response_format: dict[str, Any] | None = None
    user: str | None = Field(default=None, max_length=256)
    safety_identifier: str | None = Field(default=None, max_length=256)  # OpenAI's newer name for user
    metadata: dict[str, str] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, int] | None = None
    # Tool calling (http/openai_tools.py); the legacy functions API is declared only to refuse it clearly.
    tools: Any = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    functions: Any = None
    function_call: Any = None


def to_gateway_request(body: ChatCompletionsBody) -> CompletionRequest:
    refuse_unsupported({**body.model_dump(exclude_unset=True), **(body.model_extra or {})})
    openai_tools.refuse_legacy(body.functions, body.function_call)
    model, tier = model_or_tier(body.model)
    stop = [body.stop] if isinstance(body.stop, str) else body.stop
    request = api.validate(
        CompletionRequest,
        {
            "model": model,
            "tier": tier,
            "messages": [_message(m, i) for i, m in enumerate(body.messages)],
            "max_tokens": body.max_completion_tokens or body.max_tokens,
            "temperature": body.temperature,
            "top_p": body.top_p,
            "stop": stop,
            "seed": body.seed,
            "response_format": _response_format(body.response_format),
            "metadata": body.metadata or {},
            **_choice_fields(body),
            **openai_tools.tool_fields(body.tools, body.tool_choice, body.parallel_tool_calls),
        },
        rename={
            "tier": "model",
            "max_tokens": "max_completion_tokens" if body.max_completion_tokens else "max_tokens",
        },
    )
    api.check_response_format(request, param="response_format.json_schema.schema")
    return request


def _choice_fields(body: ChatCompletionsBody) -> dict[str, Any]:
    """n, logprobs, penalties, logit_bias and user, as the gateway's request takes them (defaults left out)."""
    if body.top_logprobs and not body.logprobs:
        raise api.invalid("top_logprobs", "top_logprobs needs logprobs: true")
    fields: dict[str, Any] = {
        "n": body.n or 1,
        "logprobs": bool(body.logprobs),
        "top_logprobs": body.top_logprobs,
        "presence_penalty": body.presence_penalty,
        "frequency_penalty": body.frequency_penalty,
        "logit_bias": body.logit_bias,
        "user": body.user or body.safety_identifier,
    }
    return {k: v for k, v in fields.items() if v is not None}


def model_or_tier(name: str) -> tuple[str | None, str | None]:
    if not name.startswith("tier:"):
        return name, None
    tier = name.removeprefix("tier:")
    if tier not in TIERS:
        raise api.invalid("model", f"unknown tier {_quoted(tier)}; use one of {', '.join('tier:' + t for t in TIERS)}")
    return None, tier


def _message(raw: Any, index: int) -> dict[str, Any]:
    where = f"messages.{index}"
    if not isinstance(raw, dict):
        raise api.invalid(where, "each message must be an object with 'role' and 'content'")
    role = raw.get("role")
    if role == "function" or raw.get("function_call"):
        raise api.invalid(f"{where}.role" if role == "function" else f"{where}.function_call", openai_tools.LEGACY)
    if role == "tool":
        return openai_tools.tool_message(raw, where)
    if not isinstance(role, str) or role not in _ROLES:
        raise api.invalid(f"{where}.role", "must be one of 'system', 'developer', 'user', 'assistant' or 'tool'")
    if raw.get("tool_calls") and role != "assistant":
        raise api.invalid(f"{where}.tool_calls", "only an assistant message can carry tool calls")
    content = raw.get("content")
    if role == "assistant" and (calls := openai_tools.assistant_tool_calls(raw, where)):
        turn = _message({**raw, "tool_calls": None, "content": content or ""}, index)
        return {**turn, "content": turn["content"] or None, "tool_calls": calls}
    if content is None:
        raise api.invalid(f"{where}.content", "is required: a string, or an array of content parts")
    if isinstance(content, str):
        return {"role": _ROLES[role], "content": content}
    if not isinstance(content, list):
        raise api.invalid(f"{where}.content", "must be a string or an array of content parts")
    if not content:
        raise api.invalid(f"{where}.content", "must not be an empty array")
    return {"role": _ROLES[role], "content": [_part(p, f"{where}.content.{i}") for i, p in enumerate(content)]}


def _part(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise api.invalid(where, "each content part must be an object with a 'type'")
    kind = raw.get("type")
    if kind == "text":
        text = raw.get("text")
        if not isinstance(text, str):
            raise api.invalid(f"{where}.text", "must be a string")
        return {"type": "text", "text": text}
    if kind == "image_url":
        image = raw.get("image_url")
        if not isinstance(image, dict):
            raise api.invalid(f"{where}.image_url", "must be an object with a 'url' (an https URL or a data: URI)")
        url = image.get("url")
        if not isinstance(url, str) or not url:
            raise api.invalid(f"{where}.image_url.url", "must be a non-empty string")
        detail = image.get("detail")
        if detail is not None and detail not in _IMAGE_DETAILS:
            raise api.invalid(f"{where}.image_url.detail", "must be 'auto', 'low' or 'high'")
        return {"type": "image_url", "url": url, "detail": detail}
    raise api.invalid(f"{where}.type", f"unsupported content part type {_quoted(kind)}; use 'text' or 'image_url'")


def _response_format(raw: dict[str, Any] | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    kind = raw.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind != "json_schema":
        raise api.invalid("response_format.type", "must be 'text', 'json_object' or 'json_schema'")
    spec = raw.get("json_schema")
    if not isinstance(spec, dict):
        raise api.invalid("response_format.json_schema", "must be an object with a 'name' and a 'schema'")
    fmt: dict[str, Any] = {"type": "json_schema", "name": spec.get("name", "result"), "schema": spec.get("schema", {})}
    if spec.get("strict") is not None:
        fmt["strict"] = spec["strict"]  # validated as a boolean by the request model
    return fmt


def _quoted(value: Any) -> str:
    """A short, safe rendering of a caller's value for an error message."""
    return f"'{value}'" if isinstance(value, str) and len(value) <= 40 else "given"


# OpenAI's clients know stop/length/content_filter/tool_calls only; an answer that ended for a reason the
# provider did not explain is reported as "stop" there, and as "error" in x_gateway (and never cached).
OPENAI_FINISH = {"error": "stop"}


def chat_completion_id(gateway_id: str) -> str:
    return f"chatcmpl-{gateway_id.removeprefix('gw-')}"


def to_chat_completion(result: CompletionResult) -> dict[str, Any]:
    return {
        "id": chat_completion_id(result.id),
        "object": "chat.completion",
        "created": result.created,
        "model": result.model,
        "choices": _choices(result),
        "usage": openai_usage(result.usage),
        "system_fingerprint": None,
        # Extra fields the openai client keeps on the object (model_extra) for callers who want them.
        "x_gateway": gateway_fields(result),
    }


def openai_usage(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
    }


def gateway_fields(result: CompletionResult) -> dict[str, Any]:
    """``x_gateway``: who answered, at what cost, after which attempts (streamed answers add more)."""
    return {
        "provider": result.provider,
        "finish_reason": result.finish_reason,  # the gateway's own, e.g. "error" for an unknown stop
        "cost_usd": result.cost_usd,
        "cached": result.cached,
        "latency_ms": result.latency_ms,
        "attempts": [a.model_dump() for a in result.attempts],
    }


def _choices(result: CompletionResult) -> list[dict[str, Any]]:
    first = Choice(
        content=result.content,
        finish_reason=result.finish_reason,
        logprobs=result.logprobs,
        tool_calls=result.tool_calls,
    )
    return [
        {
            "index": index,
            "message": openai_tools.response_message(choice),
            "finish_reason": OPENAI_FINISH.get(choice.finish_reason, choice.finish_reason),
            "logprobs": choice.logprobs,
        }
        for index, choice in enumerate([first, *result.alternatives])
    ]


_OPENAI_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def openai_error_body(err: GatewayError) -> dict[str, Any]:
    """OpenAI's error shape, with the gateway's ``retryable`` (its clients ignore fields they do not know)."""
    return {
        "error": {
            "message": err.message,
            "type": _OPENAI_ERROR_TYPES.get(err.http_status, "api_error"),
            "param": err.details.get("param"),
            "code": err.code,
            "retryable": err.retryable,
        }
    }
