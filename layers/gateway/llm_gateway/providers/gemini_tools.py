"""Tool calling in Gemini's ``generateContent``, both ways.

Out: every function in ONE ``functionDeclarations`` entry, parameters translated into Gemini's schema
subset by the structured-output translation (``parametersJsonSchema``, which takes JSON Schema as is,
when the subset cannot say it; nothing for a function without arguments); ``toolConfig.
functionCallingConfig`` mode ``AUTO``/``ANY``/``NONE``, a named function as ``ANY`` with
``allowedFunctionNames``. An assistant turn's calls are ``functionCall`` parts of a ``model`` turn; the
results that follow are ``functionResponse`` parts of ONE ``user`` turn (Gemini refuses them split),
each named after its call, found by ``tool_call_id`` in the earlier assistant turns (Gemini's responses
carry names, not ids).

In: ``functionCall`` parts become OpenAI-shaped tool calls. Gemini gives ids only sometimes; a missing
one is derived from the response id, the part's position and the call itself: stable within (and
across replays of) a response. Gemini cannot be told to call at most one function: with
``parallel_tool_calls: false`` only the first call is returned.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from llm_gateway.models import Message, ProviderRequest
from llm_gateway.structured.gemini import UntranslatableSchema, gemini_schema
from llm_gateway.tool_models import NamedToolChoice, ToolCall, tool_names_by_call_id


def tools_field(request: ProviderRequest) -> list[dict[str, Any]]:
    declarations = []
    for tool in request.tools or []:
        function = tool.function
        declaration: dict[str, Any] = {"name": function.name}
        if function.description:
            declaration["description"] = function.description
        if function.takes_arguments():
            try:
                declaration["parameters"] = gemini_schema(function.parameters_schema())
            except UntranslatableSchema:
                declaration["parametersJsonSchema"] = function.parameters_schema()
        declarations.append(declaration)
    return [{"functionDeclarations": declarations}]


def tool_config(request: ProviderRequest) -> dict[str, Any] | None:
    choice = request.tool_choice
    if choice is None:
        return None
    if isinstance(choice, NamedToolChoice):
        config: dict[str, Any] = {"mode": "ANY", "allowedFunctionNames": [choice.function.name]}
    else:
        config = {"mode": {"auto": "AUTO", "required": "ANY", "none": "NONE"}[choice]}
    return {"functionCallingConfig": config}


def contents(messages: list[Message], parts_of: Any, *, with_tools: bool) -> list[dict[str, Any]]:
    """The ``contents`` of a conversation with tool turns; ``parts_of`` renders an ordinary message."""
    names = tool_names_by_call_id(messages)
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            continue
        if message.role == "tool":
            part = _response_part(message, names) if with_tools else {"text": _result_text(message)}
            if out and out[-1]["role"] == "user" and out[-1].get("_results"):
                out[-1]["parts"].append(part)  # the results of one turn go together
            else:
                out.append({"role": "user", "parts": [part], "_results": True})
            continue
        parts = [] if message.tool_calls and not message.text() else parts_of(message)
        for call in message.tool_calls or []:
            if with_tools:
                parts.append({"functionCall": {"name": call.function.name, "args": call.arguments_object()}})
            else:
                parts.append({"text": f"[tool call {call.id}: {call.function.name}({call.function.arguments})]"})
        out.append({"role": "model" if message.role == "assistant" else "user", "parts": parts})
    for turn in out:
        turn.pop("_results", None)
    return out


def _response_part(message: Message, names: dict[str, str]) -> dict[str, Any]:
    text = message.text()
    try:
        value: Any = json.loads(text)
    except ValueError:
        value = text
    # An object result is the response itself; anything else goes under "output", Gemini's key for it.
    response = value if isinstance(value, dict) else {"output": value}
    return {"functionResponse": {"name": names[message.tool_call_id or ""], "response": response}}


def _result_text(message: Message) -> str:
    return f"[result of tool call {message.tool_call_id}]\n{message.text()}"


def tool_calls_from(parts: list[dict[str, Any]], response_id: str | None, request: ProviderRequest) -> list[ToolCall]:
    calls = []
    for index, part in enumerate(parts):
        call = part.get("functionCall")
        if isinstance(call, dict):
            calls.append(tool_call_from(call, response_id, index))
    if request.parallel_tool_calls is False:
        return calls[:1]
    return calls


def tool_call_from(call: dict[str, Any], response_id: str | None, index: int) -> ToolCall:
    """One ``functionCall``; ``index`` is its part's position in the candidate's parts (streamed: across
    all chunks), which keeps a derived id the same for the same answer, streamed or not."""
    arguments = json.dumps(call.get("args") or {}, ensure_ascii=False, sort_keys=True)
    call_id = call.get("id") or _derived_id(response_id, index, call["name"], arguments)
    return ToolCall.model_validate({"id": call_id, "function": {"name": call["name"], "arguments": arguments}})


def _derived_id(response_id: str | None, index: int, name: str, arguments: str) -> str:
    digest = hashlib.sha256(f"{response_id or ''}\x00{index}\x00{name}\x00{arguments}".encode()).hexdigest()
    return f"call_{digest[:24]}"
