"""Tool calling in Anthropic's Messages API, both ways.

Out: ``tools[]`` with ``input_schema`` (an object schema), ``tool_choice`` ``auto``/``any``/``none``/
``tool`` with ``disable_parallel_tool_use`` for ``parallel_tool_calls: false``; an assistant turn's calls
as ``tool_use`` blocks; tool results as ``tool_result`` blocks in a user turn (the adapter merges
consecutive ones, so the results of one assistant turn share one user message, first in it).
In: ``tool_use`` blocks become OpenAI-shaped tool calls, ``arguments`` as JSON text.

Anthropic refuses ``tool_use``/``tool_result`` blocks in a request without ``tools``: such history
(a conversation that stopped offering tools) is sent as text instead.
"""

from __future__ import annotations

import json
import re
from typing import Any

from llm_gateway.models import Message, ProviderRequest
from llm_gateway.tool_models import NamedToolChoice, ToolCall

_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def wire_id(call_id: str) -> str:
    """Anthropic's ids match ``^[a-zA-Z0-9_-]+$``; other providers' (or a client's) may not. The same
    mapping is applied to a ``tool_use`` id and the ``tool_result`` that answers it, so they still pair."""
    return _ID_UNSAFE.sub("_", call_id)


def tool_definitions(request: ProviderRequest) -> list[dict[str, Any]]:
    out = []
    for tool in request.tools or []:
        definition: dict[str, Any] = {"name": tool.function.name, "input_schema": tool.function.parameters_schema()}
        if tool.function.description:
            definition["description"] = tool.function.description
        out.append(definition)
    return out


def tool_choice(request: ProviderRequest) -> dict[str, Any] | None:
    choice = request.tool_choice
    if isinstance(choice, NamedToolChoice):
        wire: dict[str, Any] = {"type": "tool", "name": choice.function.name}
    elif choice == "required":
        wire = {"type": "any"}
    elif choice == "none":
        return {"type": "none"}
    elif choice == "auto" or request.parallel_tool_calls is False:
        wire = {"type": "auto"}
    else:
        return None  # Anthropic's default with tools is auto
    if request.parallel_tool_calls is False:
        wire["disable_parallel_tool_use"] = True
    return wire


def message_blocks(message: Message, *, with_tools: bool) -> list[dict[str, Any]] | None:
    """The blocks of a turn that involves tools; None for any other turn (the adapter's own)."""
    if message.role == "tool":
        text = message.text()
        if not with_tools:
            return [{"type": "text", "text": f"[result of tool call {message.tool_call_id}]\n{text}"}]
        result: dict[str, Any] = {"type": "tool_result", "tool_use_id": wire_id(message.tool_call_id or "")}
        if text:
            result["content"] = text
        return [result]
    if message.role == "assistant" and message.tool_calls:
        blocks: list[dict[str, Any]] = []
        if message.text():
            blocks.append({"type": "text", "text": message.text()})
        for call in message.tool_calls:
            if with_tools:
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": wire_id(call.id),
                        "name": call.function.name,
                        "input": call.arguments_object(),
                    }
                )
            else:
                blocks.append(
                    {"type": "text", "text": f"[tool call {call.id}: {call.function.name}({call.function.arguments})]"}
                )
        return blocks
    return None


def tool_calls_from(blocks: list[dict[str, Any]]) -> list[ToolCall]:
    return [
        ToolCall.model_validate(
            {
                "id": block["id"],
                "function": {
                    "name": block["name"],
                    "arguments": json.dumps(block.get("input") or {}, ensure_ascii=False),
                },
            }
        )
        for block in blocks
        if block.get("type") == "tool_use"
    ]
