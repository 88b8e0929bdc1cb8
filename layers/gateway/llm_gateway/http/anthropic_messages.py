"""Anthropic's Messages API (``POST /v1/messages``), for callers that use the official ``anthropic`` client.

In: the Messages request becomes the gateway's ``CompletionRequest`` (``system`` as a system turn, content
blocks as text and image parts, ``tool_use`` blocks as an assistant turn's tool calls, ``tool_result``
blocks as tool turns, ``tools``/``tool_choice`` as the gateway's OpenAI-shaped tool fields), so any
provider may serve it through the same routing, fallback, cache, budgets and ledger as chat completions.
Out: the result as a Messages ``message`` (text and ``tool_use`` blocks, ``stop_reason``, usage with
``cache_read_input_tokens``); errors as ``{"type": "error", "error": {"type", "message"}}``.

What the gateway cannot carry is refused with a 400 naming the parameter, never dropped silently:
extended ``thinking``, server tools, ``document`` blocks, images inside a ``tool_result``.
``cache_control`` on system and user text blocks is carried to the Anthropic adapter (a prompt-caching
breakpoint, and to Bedrock as a ``cachePoint``); elsewhere it is checked, not passed on (README).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from llm_gateway.documents.tokens import estimate_message_tokens, estimate_text_tokens
from llm_gateway.errors import GatewayError, InvalidRequestError
from llm_gateway.http import framing as api
from llm_gateway.http.openai_chat import gateway_fields, model_or_tier
from llm_gateway.models import CompletionRequest, CompletionResult, FinishReason, Usage

MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
TOOL_ERROR_PREFIX = "[tool error] "  # the gateway's tool turns have no is_error: it is said in the text
_NOT_CARRIED = "is not supported by this gateway (it cannot pass it to every provider); leave it out"


def anthropic_shaped(path: str) -> bool:
    """Routes the anthropic clients call answer errors in Anthropic's shape."""
    return path.endswith(MESSAGES_PATH) or path.endswith(COUNT_TOKENS_PATH)


class CountTokensBody(BaseModel):
    """``POST /v1/messages/count_tokens``: what is billed as input (no sampling fields)."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=160)
    messages: list[Any] = Field(min_length=1)
    system: str | list[Any] | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    thinking: Any = None  # only {"type": "disabled"}
    cache_control: Any = None  # the request-wide one: accepted, not passed on (as the blocks' own)


class MessagesBody(CountTokensBody):
    """``POST /v1/messages``. ``max_tokens`` is required, as Anthropic requires it."""

    max_tokens: int = Field(ge=1)
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=1)  # Anthropic and Gemini models only (routing/params.py)
    stop_sequences: list[str] | None = None
    metadata: dict[str, Any] | None = None
    stream: bool | None = None
    service_tier: str | None = None  # only "auto" (Anthropic's default)


# --------------------------------------------------------------------------- request


def to_gateway_request(body: CountTokensBody) -> CompletionRequest:
    _refuse_extras(body)
    model, tier = model_or_tier(body.model)
    messages = _system(body.system)
    origins = ["system"] * len(messages)  # where each of the gateway's turns came from, for error params
    for index, raw in enumerate(body.messages):
        turns = _turns(raw, index)
        messages += turns
        origins += [f"messages.{index}"] * len(turns)
    fields: dict[str, Any] = {"model": model, "tier": tier, "messages": messages, **_tool_fields(body)}
    if isinstance(body, MessagesBody):
        fields |= {
            "max_tokens": body.max_tokens,
            "temperature": body.temperature,
            "top_p": body.top_p,
            "top_k": body.top_k,
            "stop": body.stop_sequences or None,
            "user": _user_id(body.metadata),
        }
    rename = {"tier": "model", "stop": "stop_sequences", "user": "metadata.user_id"}
    try:
        return api.validate(CompletionRequest, fields, rename=rename)
    except InvalidRequestError as err:
        raise _caller_indexes(err, origins) from None


def _caller_indexes(err: InvalidRequestError, origins: list[str]) -> InvalidRequestError:
    """A problem the gateway's checks found in its turn N named as the caller's message it came from
    (a system prompt and split tool results make the gateway's turns differ from the caller's)."""
    param = err.details.get("param")
    head, _, rest = str(param).removeprefix("messages.").partition(".")
    if not str(param).startswith("messages.") or not head.isdigit() or int(head) >= len(origins):
        return err
    named = origins[int(head)] + (f".{rest}" if rest and not rest.startswith("content") else "")
    return api.invalid(named, err.message.removeprefix(f"{param}: "))


def _refuse_extras(body: CountTokensBody) -> None:
    for name in body.model_extra or {}:
        raise api.invalid(str(name)[:64], "unknown or unsupported parameter for the Messages API here")
    _check_cache_control({"cache_control": body.cache_control}, "")
    if body.thinking is not None and body.thinking != {"type": "disabled"}:
        raise api.invalid("thinking", "extended thinking " + _NOT_CARRIED)
    if isinstance(body, MessagesBody) and body.service_tier not in (None, "auto"):
        raise api.invalid("service_tier", "only 'auto' is supported")


def _user_id(metadata: dict[str, Any] | None) -> str | None:
    for name in metadata or {}:
        if name != "user_id":
            raise api.invalid(f"metadata.{str(name)[:64]}", "unknown field; metadata takes user_id only")
    user = (metadata or {}).get("user_id")
    if user is not None and not isinstance(user, str):
        raise api.invalid("metadata.user_id", "must be a string")
    return user


def _system(system: str | list[Any] | None) -> list[dict[str, Any]]:
    if system is None:
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}] if system else []
    parts = []
    for index, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise api.invalid(f"system.{index}", "system blocks must be text blocks")
        parts.append(_text_part(block, f"system.{index}"))
    return [{"role": "system", "content": parts}] if any(p["text"] for p in parts) else []


def _turns(raw: Any, index: int) -> list[dict[str, Any]]:
    """One Messages turn as the gateway's turns: a user turn's ``tool_result`` blocks become tool turns
    (first, as the gateway wants them right after the calls they answer), its other blocks one user turn."""
    where = f"messages.{index}"
    if not isinstance(raw, dict):
        raise api.invalid(where, "each message must be an object with 'role' and 'content'")
    role, content = raw.get("role"), raw.get("content")
    if role not in ("user", "assistant"):
        raise api.invalid(f"{where}.role", "must be 'user' or 'assistant' (the system prompt goes in 'system')")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise api.invalid(f"{where}.content", "must be a string or an array of content blocks")
    for extra in raw:
        if extra not in ("role", "content"):
            raise api.invalid(f"{where}.{str(extra)[:64]}", "unknown field")
    blocks = [(b, f"{where}.content.{i}") for i, b in enumerate(content)]
    return _assistant(blocks, where) if role == "assistant" else _user(blocks)


def _user(blocks: list[tuple[Any, str]]) -> list[dict[str, Any]]:
    results, parts = [], []
    for block, here in blocks:
        kind = _kind(block, here)
        if kind == "tool_result":
            results.append(_tool_result(block, here))
        elif kind == "text":
            parts.append(_text_part(block, here))
        elif kind == "image":
            parts.append({"type": "image_url", "url": _image_url(block, here)})
        else:
            raise _unsupported_block(kind, here, "'text', 'image' or 'tool_result'")
    return results + ([{"role": "user", "content": parts}] if parts else [])


def _assistant(blocks: list[tuple[Any, str]], where: str) -> list[dict[str, Any]]:
    texts, calls = [], []
    for block, here in blocks:
        kind = _kind(block, here)
        if kind == "text":
            texts.append(_text(block, here))
        elif kind == "tool_use":
            calls.append(_tool_use(block, here))
        else:
            raise _unsupported_block(kind, here, "'text' or 'tool_use'")
    text = "".join(texts)
    if calls:
        return [{"role": "assistant", "content": text or None, "tool_calls": calls}]
    return [{"role": "assistant", "content": text}]


def _kind(block: Any, here: str) -> str:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        raise api.invalid(here, "each content block must be an object with a 'type'")
    _check_cache_control(block, here)
    return str(block["type"])


def _unsupported_block(kind: str, here: str, allowed: str) -> GatewayError:
    shown = f"'{kind}'" if len(kind) <= 40 else "given"
    return api.invalid(f"{here}.type", f"unsupported content block type {shown} here; use {allowed}")


def _check_cache_control(block: dict[str, Any], here: str) -> dict[str, Any] | None:
    """Checked wherever Anthropic takes it (a typo is a 400); carried on system and user text blocks only."""
    control = block.get("cache_control")
    if control is None:
        return None
    if not isinstance(control, dict) or control.get("type") != "ephemeral" or set(control) - {"type", "ttl"}:
        where = f"{here}.cache_control" if here else "cache_control"
        raise api.invalid(where, "must be {'type': 'ephemeral'}, optionally with a 'ttl' of '5m' or '1h'")
    return control


def _text_part(block: dict[str, Any], here: str) -> dict[str, Any]:
    part = {"type": "text", "text": _text(block, here)}
    control = _check_cache_control(block, here)
    return part if control is None else {**part, "cache_control": control}


def _text(block: dict[str, Any], here: str) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise api.invalid(f"{here}.text", "must be a string")
    return text


def _image_url(block: dict[str, Any], here: str) -> str:
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "base64" and isinstance(source, dict):
        media, data = source.get("media_type"), source.get("data")
        if not isinstance(media, str) or not media.startswith("image/"):
            raise api.invalid(f"{here}.source.media_type", "must be an image type such as 'image/png'")
        if not isinstance(data, str) or not data:
            raise api.invalid(f"{here}.source.data", "must be the image's base64 text")
        return f"data:{media};base64,{data}"
    if kind == "url" and isinstance(source, dict):
        url = source.get("url")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise api.invalid(f"{here}.source.url", "must be an http(s) URL")
        return url
    raise api.invalid(f"{here}.source", "must be a 'base64' source (media_type, data) or a 'url' source")


def _tool_use(block: dict[str, Any], here: str) -> dict[str, Any]:
    call_id, name, arguments = block.get("id"), block.get("name"), block.get("input", {})
    if not isinstance(call_id, str) or not call_id:
        raise api.invalid(f"{here}.id", "is required: the id the tool_result answers")
    if not isinstance(name, str) or not name:
        raise api.invalid(f"{here}.name", "must be the tool's name")
    if not isinstance(arguments, dict):
        raise api.invalid(f"{here}.input", "must be an object")
    text = json.dumps(arguments, ensure_ascii=False, separators=(",", ":"))
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": text}}


def _tool_result(block: dict[str, Any], here: str) -> dict[str, Any]:
    call_id, content = block.get("tool_use_id"), block.get("content", "")
    if not isinstance(call_id, str) or not call_id:
        raise api.invalid(f"{here}.tool_use_id", "is required: the id of the tool_use it answers")
    if isinstance(content, list):
        texts = []
        for index, part in enumerate(content):
            if _kind(part, f"{here}.content.{index}") != "text":
                raise api.invalid(f"{here}.content.{index}.type", "a tool_result's blocks must be text blocks here")
            texts.append(_text(part, f"{here}.content.{index}"))
        content = "\n".join(texts)
    if not isinstance(content, str):
        raise api.invalid(f"{here}.content", "must be a string or an array of text blocks")
    is_error = block.get("is_error")
    if is_error is not None and not isinstance(is_error, bool):
        raise api.invalid(f"{here}.is_error", "must be a boolean")
    return {"role": "tool", "tool_call_id": call_id, "content": (TOOL_ERROR_PREFIX if is_error else "") + content}


def _tool_fields(body: CountTokensBody) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    tools = []
    for index, tool in enumerate(body.tools or []):
        here = f"tools.{index}"
        if not isinstance(tool, dict):
            raise api.invalid(here, "each tool must be an object with 'name' and 'input_schema'")
        if tool.get("type") not in (None, "custom"):
            raise api.invalid(f"{here}.type", "server tools " + _NOT_CARRIED)
        _check_cache_control(tool, here)
        if not isinstance(tool.get("input_schema"), dict):
            raise api.invalid(f"{here}.input_schema", "is required: a JSON Schema with type 'object'")
        function = {"name": tool.get("name"), "description": tool.get("description")}
        function = {k: v for k, v in function.items() if v is not None}
        tools.append({"type": "function", "function": {**function, "parameters": tool["input_schema"]}})
    if tools:
        fields["tools"] = tools
    choice = body.tool_choice
    if choice is not None:
        kind = choice.get("type") if isinstance(choice, dict) else None
        wire: Any = {"auto": "auto", "any": "required", "none": "none"}.get(str(kind))
        if kind == "tool":
            wire = {"type": "function", "function": {"name": choice.get("name")}}
        if wire is None:
            raise api.invalid("tool_choice.type", "must be 'auto', 'any', 'tool' or 'none'")
        fields["tool_choice"] = wire
        if choice.get("disable_parallel_tool_use") is True:
            fields["parallel_tool_calls"] = False
    return fields


def input_estimate(request: CompletionRequest) -> int:
    """The gateway's own estimate of the input tokens (no tokenizer): messages plus tool definitions."""
    tokens = estimate_message_tokens(request.messages)
    if request.tools:
        tools = [t.model_dump(mode="json", exclude_none=True) for t in request.tools]
        tokens += estimate_text_tokens(json.dumps(tools, separators=(",", ":")))
    return tokens


# --------------------------------------------------------------------------- answer

# The gateway's finish reasons; "stop" covers a stop sequence too (the core does not say which one).
STOP_REASONS: dict[FinishReason, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
    "error": "end_turn",  # an unexplained stop: x_gateway.finish_reason says "error"
}


def message_id(gateway_id: str) -> str:
    return f"msg_{gateway_id.removeprefix('gw-')}"


def to_message(result: CompletionResult) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": result.content}] if result.content else []
    content += [
        {"type": "tool_use", "id": call.id, "name": call.function.name, "input": call.arguments_object()}
        for call in result.tool_calls or []
    ]
    return {
        "id": message_id(result.id),
        "type": "message",
        "role": "assistant",
        "model": result.model,
        "content": content,
        "stop_reason": STOP_REASONS[result.finish_reason],
        "stop_sequence": None,
        "usage": anthropic_usage(result.usage),
        "x_gateway": gateway_fields(result),
    }


def anthropic_usage(usage: Usage) -> dict[str, int]:
    """Anthropic counts cache reads apart from ``input_tokens``; the gateway counts all input together."""
    return {
        "input_tokens": max(0, usage.input_tokens - usage.cached_input_tokens),
        "output_tokens": usage.output_tokens,
        "cache_read_input_tokens": usage.cached_input_tokens,
        "cache_creation_input_tokens": 0,  # no cache_control is passed on: nothing is written to a cache
    }


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


def anthropic_error_body(err: GatewayError) -> dict[str, Any]:
    """Anthropic's error shape; the gateway's ``code``, ``param`` and ``retryable`` ride along (its
    clients read ``type`` and ``message`` and keep the rest)."""
    kind = _ERROR_TYPES.get(err.http_status, "invalid_request_error" if err.http_status < 500 else "api_error")
    error = {"type": kind, "message": err.message, "code": err.code, "retryable": err.retryable}
    if (param := err.details.get("param")) is not None:
        error["param"] = param
    return {"type": "error", "error": error}
