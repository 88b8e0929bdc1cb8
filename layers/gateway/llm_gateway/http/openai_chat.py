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
from llm_gateway.models import CompletionRequest, CompletionResult

TIERS = ("fast", "balanced", "best")
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
_TOOL_ROLES = frozenset({"tool", "function"})
_IMAGE_DETAILS = ("auto", "low", "high")
NO_TOOLS = "tool calling is not supported by this gateway"


class ChatCompletionsBody(BaseModel):
    """The subset of the OpenAI request the gateway honours; unknown fields are ignored, like OpenAI does."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=160)
    messages: list[Any] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = Field(default=None, ge=1, le=1)
    stream: bool | None = None
    response_format: dict[str, Any] | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    # Declared only to refuse them clearly (ignoring them would answer without the tools asked for).
    tools: list[Any] | None = None
    functions: list[Any] | None = None


def to_gateway_request(body: ChatCompletionsBody) -> CompletionRequest:
    if body.stream:
        raise api.invalid("stream", "streaming is not supported by this gateway; send stream=false")
    if body.tools or body.functions:
        raise api.invalid("tools" if body.tools else "functions", NO_TOOLS)
    model, tier = _model_or_tier(body.model)
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
        },
        rename={
            "tier": "model",
            "max_tokens": "max_completion_tokens" if body.max_completion_tokens else "max_tokens",
        },
    )
    api.check_response_format(request, param="response_format.json_schema.schema")
    return request


def _model_or_tier(name: str) -> tuple[str | None, str | None]:
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
    if role in _TOOL_ROLES:
        raise api.invalid(f"{where}.role", f"role '{role}' carries a tool result; {NO_TOOLS}")
    if not isinstance(role, str) or role not in _ROLES:
        raise api.invalid(f"{where}.role", "must be one of 'system', 'developer', 'user' or 'assistant'")
    for key in ("tool_calls", "function_call"):
        if raw.get(key):
            raise api.invalid(f"{where}.{key}", NO_TOOLS)
    content = raw.get("content")
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
_OPENAI_FINISH = {"error": "stop"}


def to_chat_completion(result: CompletionResult) -> dict[str, Any]:
    usage = result.usage
    return {
        "id": f"chatcmpl-{result.id.removeprefix('gw-')}",
        "object": "chat.completion",
        "created": result.created,
        "model": result.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.content, "refusal": None},
                "finish_reason": _OPENAI_FINISH.get(result.finish_reason, result.finish_reason),
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": usage.input_tokens,
            "completion_tokens": usage.output_tokens,
            "total_tokens": usage.total_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
        },
        "system_fingerprint": None,
        # Extra fields the openai client keeps on the object (model_extra) for callers who want them.
        "x_gateway": {
            "provider": result.provider,
            "finish_reason": result.finish_reason,  # the gateway's own, e.g. "error" for an unknown stop
            "cost_usd": result.cost_usd,
            "cached": result.cached,
            "latency_ms": result.latency_ms,
            "attempts": [a.model_dump() for a in result.attempts],
        },
    }


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
