"""Tool calling on the OpenAI Chat Completions route: the request's tool fields and tool turns in, the
answer's ``tool_calls`` out. The shapes are the gateway's own already (tool_models.py mirrors OpenAI's),
so this is mostly the per-field 400s OpenAI's clients expect, naming the parameter at fault.

The legacy ``functions``/``function_call`` API (and the ``function`` role) is refused with a 400 that
says what to send instead: its answer shape (``message.function_call``) has no ids to continue a
conversation on another provider with.
"""

from __future__ import annotations

from typing import Any

from llm_gateway.http import framing as api
from llm_gateway.models import Choice, CompletionResult

LEGACY = "the legacy functions API is not supported; send 'tools' (type 'function') and 'tool_choice' instead"


def refuse_legacy(functions: Any, function_call: Any) -> None:
    if functions is not None:
        raise api.invalid("functions", LEGACY)
    if function_call is not None:
        raise api.invalid("function_call", LEGACY)


def tool_fields(tools: Any, tool_choice: Any, parallel_tool_calls: Any) -> dict[str, Any]:
    """The request's tool fields for the gateway's request (validated there, field by field)."""
    fields: dict[str, Any] = {}
    if tools is not None:
        if not isinstance(tools, list):
            raise api.invalid("tools", "must be an array of tools")
        for index, tool in enumerate(tools):
            kind = tool.get("type") if isinstance(tool, dict) else None
            if kind != "function":
                raise api.invalid(f"tools.{index}.type", "only 'function' tools are supported")
        fields["tools"] = tools or None  # an empty list means no tools, as for OpenAI
    if tool_choice is not None:
        if isinstance(tool_choice, dict) and tool_choice.get("type") != "function":
            raise api.invalid("tool_choice.type", "must be 'function' (or tool_choice 'auto', 'none', 'required')")
        fields["tool_choice"] = tool_choice
    if parallel_tool_calls is not None:
        fields["parallel_tool_calls"] = parallel_tool_calls
    return fields


def tool_message(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """A ``tool`` turn: the result of one call, as text (a string or text parts)."""
    call_id = raw.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise api.invalid(f"{where}.tool_call_id", "is required on a tool message: the id of the call it answers")
    content = raw.get("content")
    if isinstance(content, list):
        texts = []
        for index, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise api.invalid(f"{where}.content.{index}", "a tool message's content parts must be text parts")
            texts.append(part["text"])
        content = "\n".join(texts)
    if not isinstance(content, str):
        raise api.invalid(f"{where}.content", "is required on a tool message: a string or text parts")
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def assistant_tool_calls(raw: dict[str, Any], where: str) -> list[dict[str, Any]] | None:
    """An assistant turn's ``tool_calls``, checked enough to name the field at fault."""
    calls = raw.get("tool_calls")
    if calls is None or calls == []:
        return None
    if not isinstance(calls, list):
        raise api.invalid(f"{where}.tool_calls", "must be an array of tool calls")
    out = []
    for index, call in enumerate(calls):
        here = f"{where}.tool_calls.{index}"
        if not isinstance(call, dict) or call.get("type", "function") != "function":
            raise api.invalid(here, "must be a function tool call: {id, type: 'function', function: {name, arguments}}")
        function = call.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise api.invalid(f"{here}.function", "must be an object with a 'name' and 'arguments' (a JSON string)")
        arguments = function.get("arguments", "")
        if not isinstance(arguments, str):
            raise api.invalid(f"{here}.function.arguments", "must be a string (JSON text)")
        if not isinstance(call.get("id"), str) or not call["id"]:
            raise api.invalid(f"{here}.id", "is required: the id the tool message answers")
        out.append(
            {"id": call["id"], "type": "function", "function": {"name": function["name"], "arguments": arguments}}
        )
    return out


def response_message(result: CompletionResult | Choice) -> dict[str, Any]:
    """The answer's ``message``: ``content`` is null when the model only called tools, as OpenAI's is."""
    message: dict[str, Any] = {"role": "assistant", "content": result.content, "refusal": None}
    if result.tool_calls:
        message["tool_calls"] = [call.model_dump(mode="json") for call in result.tool_calls]
        if not result.content:
            message["content"] = None
    return message
