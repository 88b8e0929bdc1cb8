"""Chat requests to Bedrock's Converse shape and back (no I/O, no AWS imports: unit-testable alone).

Out: system text as ``system`` blocks; turns as ``messages`` with ``text``, ``image`` (inline bytes
only: Converse reads no URLs), ``toolUse`` and ``toolResult`` blocks, consecutive same-role turns
merged (Converse wants alternation, starting with a user turn); sampling as ``inferenceConfig``;
tools and forced structured output as ``toolConfig``.
In: ``output.message.content`` text and ``toolUse`` blocks, ``stopReason``, ``usage`` with cache
reads and writes.

Converse refuses ``toolUse``/``toolResult`` blocks without a ``toolConfig`` and has no
``toolChoice: none``: such history is sent as text, as the Anthropic adapter does.
"""

from __future__ import annotations

import json
import re
from typing import Any

from llm_gateway.errors import ProviderBadRequestError
from llm_gateway.models import FinishReason, ImagePart, JsonSchemaFormat, Message, ProviderRequest, Usage
from llm_gateway.providers.anthropic_tools import wire_id
from llm_gateway.tool_models import NamedToolChoice, ToolCall

# Anything else (a new or unknown reason) is "error": the answer is returned but never cached as complete.
FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
}
FILTERED = frozenset({"content_filtered", "guardrail_intervened"})
# ValidationException's texts for a prompt over the model's window (Claude's, Nova's, Llama's wording).
TOO_LONG = re.compile(r"too long|too many (input )?tokens|context (length|window)|maximum context", re.IGNORECASE)
_IMAGE_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}


def image_block(part: ImagePart, model: str) -> dict[str, Any]:
    if not part.url.startswith("data:"):
        raise ProviderBadRequestError(
            "bedrock takes images inline only (data: URLs), not by URL", provider="bedrock", model=model
        )
    header, _, data = part.url.partition(",")
    media_type = header[5:].split(";")[0].lower()
    image_format = _IMAGE_FORMATS.get(media_type)
    if image_format is None:
        raise ProviderBadRequestError(
            "bedrock takes png, jpeg, gif or webp images", provider="bedrock", model=model, details={"type": media_type}
        )
    return {"image": {"format": image_format, "source": {"bytes": data}}}


# Bedrock's prompt caching is for Claude and Nova models; others refuse a cachePoint, so none is sent to them.
_CACHING_FAMILIES = ("anthropic.claude", "amazon.nova")
CACHE_POINT = {"cachePoint": {"type": "default"}}


def caches_prompts(model: str) -> bool:
    return any(family in model for family in _CACHING_FAMILIES)


def _part_blocks(message: Message, model: str) -> list[dict[str, Any]]:
    """A message's parts as blocks; a caching breakpoint (``cache_control``) after its text as a cachePoint."""
    if not isinstance(message.content, list):
        return [{"text": message.text()}]
    blocks: list[dict[str, Any]] = []
    for part in message.content:
        if isinstance(part, ImagePart):
            blocks.append(image_block(part, model))
        elif part.text:  # Converse refuses blank text blocks
            blocks.append({"text": part.text})
            if part.cache_control is not None and caches_prompts(model):
                blocks.append(CACHE_POINT)
    return blocks


def _plain_blocks(message: Message, model: str) -> list[dict[str, Any]]:
    blocks = [b for b in _part_blocks(message, model) if b.get("text", True)]
    return blocks if any("cachePoint" not in b for b in blocks) else [{"text": "(empty)"}]


def _tool_blocks(message: Message, *, with_tools: bool) -> list[dict[str, Any]] | None:
    """The blocks of a turn that involves tools; None for any other turn."""
    if message.role == "tool":
        text = message.text()
        if not with_tools:
            return [{"text": f"[result of tool call {message.tool_call_id}]\n{text}"}]
        result = {"toolUseId": wire_id(message.tool_call_id or ""), "content": [{"text": text or "(empty)"}]}
        return [{"toolResult": result}]
    if message.role == "assistant" and message.tool_calls:
        blocks: list[dict[str, Any]] = [{"text": message.text()}] if message.text() else []
        for call in message.tool_calls:
            if with_tools:
                use = {"toolUseId": wire_id(call.id), "name": call.function.name, "input": call.arguments_object()}
                blocks.append({"toolUse": use})
            else:
                blocks.append({"text": f"[tool call {call.id}: {call.function.name}({call.function.arguments})]"})
        return blocks
    return None


def conversation(
    messages: list[Message], model: str, *, with_tools: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system blocks, turns)."""
    system = [block for m in messages if m.role == "system" for block in _part_blocks(m, model) if block.get("text", 1)]
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            continue
        role = "user" if message.role == "tool" else message.role
        blocks = _tool_blocks(message, with_tools=with_tools) or _plain_blocks(message, model)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    if not turns or turns[0]["role"] == "assistant":
        turns.insert(0, {"role": "user", "content": [{"text": "(continue)"}]})
    return system, turns


def inference_config(request: ProviderRequest) -> dict[str, Any]:
    config: dict[str, Any] = {"maxTokens": request.max_tokens}
    if request.temperature is not None:
        config["temperature"] = min(request.temperature, 1.0)  # Bedrock's models take 0..1
    if request.top_p is not None:
        config["topP"] = request.top_p
    if request.stop:
        config["stopSequences"] = request.stop
    return config


def _tool_spec(name: str, description: str | None, schema: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": name, "inputSchema": {"json": schema}}
    if description:
        spec["description"] = description
    return {"toolSpec": spec}


def tool_config(request: ProviderRequest) -> dict[str, Any] | None:
    """The caller's tools (with their choice), or the forced tool that carries a structured answer."""
    if request.tools and request.tool_choice != "none":
        tools = [
            _tool_spec(t.function.name, t.function.description, t.function.parameters_schema()) for t in request.tools
        ]
        config: dict[str, Any] = {"tools": tools}
        choice = request.tool_choice
        if isinstance(choice, NamedToolChoice):
            config["toolChoice"] = {"tool": {"name": choice.function.name}}
        elif choice == "required":
            config["toolChoice"] = {"any": {}}
        elif choice == "auto":
            config["toolChoice"] = {"auto": {}}
        return config
    fmt = request.response_format
    if isinstance(fmt, JsonSchemaFormat) and request.native_structured:
        spec = _tool_spec(fmt.name, "Record the structured result.", fmt.json_schema)
        return {"tools": [spec], "toolChoice": {"tool": {"name": fmt.name}}}
    return None


def answer(
    blocks: list[dict[str, Any]], request: ProviderRequest, stop_reason: str
) -> tuple[str, FinishReason, list[ToolCall]]:
    """(content, finish reason, tool calls) from the answer's content blocks."""
    finish = FINISH.get(stop_reason, "error")
    uses = [b["toolUse"] for b in blocks if isinstance(b.get("toolUse"), dict)]
    calling = bool(request.tools) and request.tool_choice != "none"
    if uses and not calling:  # the forced structured-output tool: its input is the answer
        return (
            json.dumps(uses[0].get("input") or {}, ensure_ascii=False),
            "stop" if finish == "tool_calls" else finish,
            [],
        )
    text = "".join(b["text"] for b in blocks if isinstance(b.get("text"), str))
    calls = [
        ToolCall.model_validate(
            {
                "id": use["toolUseId"],
                "function": {"name": use["name"], "arguments": json.dumps(use.get("input") or {}, ensure_ascii=False)},
            }
        )
        for use in uses
    ]
    return text, finish, calls


def usage(counts: dict[str, Any]) -> Usage:
    """Converse's (and ConverseStream's) usage as the gateway counts it: Converse's ``inputTokens`` leaves
    cache reads and writes out; ours counts all input."""
    cache_read = int(counts.get("cacheReadInputTokens") or 0)
    cache_write = int(counts.get("cacheWriteInputTokens") or 0)
    return Usage(
        input_tokens=int(counts["inputTokens"]) + cache_read + cache_write,
        output_tokens=int(counts["outputTokens"]),
        cached_input_tokens=cache_read,
    )
