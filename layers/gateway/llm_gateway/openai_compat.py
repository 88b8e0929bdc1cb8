"""The OpenAI Chat Completions wire shape, for callers that use the official ``openai`` client."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .errors import GatewayError, InvalidRequestError
from .models import CompletionRequest, CompletionResult, ImagePart, Message, TextPart


class ChatCompletionsBody(BaseModel):
    """The subset of the OpenAI request the gateway honours; unknown fields are ignored, like OpenAI does."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    messages: list[dict[str, Any]] = Field(min_length=1)
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


def to_gateway_request(body: ChatCompletionsBody) -> CompletionRequest:
    if body.stream:
        raise InvalidRequestError("streaming is not supported by this gateway; send stream=false")
    model, tier = (None, body.model.removeprefix("tier:")) if body.model.startswith("tier:") else (body.model, None)
    fmt: dict[str, Any] | None = None
    if body.response_format and body.response_format.get("type") == "json_schema":
        spec = body.response_format.get("json_schema") or {}
        fmt = {
            "type": "json_schema",
            "name": spec.get("name", "result"),
            "schema": spec.get("schema", {}),
            "strict": bool(spec.get("strict", True)),
        }
    elif body.response_format and body.response_format.get("type") == "json_object":
        fmt = {"type": "json_object"}
    stop = [body.stop] if isinstance(body.stop, str) else body.stop
    return CompletionRequest.model_validate(
        {
            "model": model,
            "tier": tier,
            "messages": [_message(m) for m in body.messages],
            "max_tokens": body.max_completion_tokens or body.max_tokens,
            "temperature": body.temperature,
            "top_p": body.top_p,
            "stop": stop,
            "seed": body.seed,
            "response_format": fmt,
            "metadata": body.metadata or {},
        }
    )


def _message(raw: dict[str, Any]) -> Message:
    role = raw.get("role")
    if role == "developer":
        role = "system"
    content = raw.get("content")
    if isinstance(content, list):
        parts: list[TextPart | ImagePart] = []
        for part in content:
            if not isinstance(part, dict):
                raise InvalidRequestError("message content parts must be objects")
            if part.get("type") == "text":
                parts.append(TextPart(text=str(part.get("text", ""))))
            elif part.get("type") == "image_url":
                image = part.get("image_url") or {}
                parts.append(ImagePart(url=str(image.get("url", "")), detail=image.get("detail")))
            else:
                raise InvalidRequestError(f"unsupported content part type '{part.get('type')}'")
        return Message.model_validate({"role": role, "content": parts})
    return Message.model_validate({"role": role, "content": content})


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
                "finish_reason": result.finish_reason,
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
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def openai_error_body(err: GatewayError) -> dict[str, Any]:
    return {
        "error": {
            "message": err.message,
            "type": _OPENAI_ERROR_TYPES.get(err.http_status, "api_error"),
            "param": err.details.get("param"),
            "code": err.code,
        }
    }
