"""Each provider's tool-calling wire format in the simulator: read into :class:`ToolTurns` (refusing
what the real provider refuses, with its wording where known) and the planned calls rendered back.

Readers return a ToolTurns, None (no tools involved), or an error message (a 400 in the dialect's shape).
"""

from __future__ import annotations

import json

from local.simulator.dialect import _block_texts, _get
from local.simulator.schema_rules import gemini_schema_problem
from local.simulator.tool_calls import PlannedCall, SimTool, ToolTurns
from local.simulator.wire import Json, _ident

Read = ToolTurns | str | None

# --------------------------------------------------------------------------- OpenAI


def openai_turns(body: Json) -> Read:
    tools = body.get("tools")
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    has_turns = any(m.get("role") == "tool" or m.get("tool_calls") for m in messages)
    if not tools:
        if body.get("tool_choice") is not None:
            return "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified."
        if body.get("parallel_tool_calls") is not None:
            return "Invalid value for 'parallel_tool_calls': only allowed when 'tools' are specified."
    turns = ToolTurns(parallel=body.get("parallel_tool_calls") is not False)
    for index, tool in enumerate(tools or []):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict):
            return f"Invalid value for 'tools[{index}]': expected a function tool."
        if not isinstance(function.get("name"), str):
            return f"Missing required parameter: 'tools[{index}].function.name'."
        params = function.get("parameters")
        if params is not None and (not isinstance(params, dict) or params.get("type") != "object"):
            return (
                f"Invalid schema for function '{function['name']}': schema must be a JSON Schema of 'type: \"object\"'."
            )
        turns.tools.append(SimTool(function["name"], params or {}))
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        turns.mode, turns.named = "named", (choice.get("function") or {}).get("name")
        if turns.named not in [t.name for t in turns.tools]:
            return f"Invalid value for 'tool_choice': function '{turns.named}' is not among the tools."
    elif choice is not None:
        turns.mode = {"auto": "auto", "none": "none", "required": "any"}.get(str(choice), "")
        if not turns.mode:
            return "Invalid value for 'tool_choice': must be 'none', 'auto', 'required' or a named function."
    problem = _openai_sequence(messages)
    if problem:
        return problem
    if not tools and not has_turns:
        return None
    users = [m for m in messages if m.get("role") == "user"]
    turns.last_user_text = "".join(_block_texts(users[-1].get("content"))) if users else ""
    turns.called = [
        str((c.get("function") or {}).get("name"))
        for m in messages
        for c in m.get("tool_calls") or []
        if isinstance(c, dict)
    ]
    if messages and messages[-1].get("role") == "tool":
        tail = []
        for message in reversed(messages):
            if message.get("role") != "tool":
                break
            tail.append("".join(_block_texts(message.get("content"))))
        turns.results_after = tail[::-1]
    return turns


def _openai_sequence(messages: list[Json]) -> str | None:
    pending: set[str] = set()
    for index, message in enumerate(messages):
        if message.get("role") == "tool":
            if message.get("tool_call_id") not in pending:
                return (
                    f"Invalid parameter: messages with role 'tool' must be a response to a preceeding message "
                    f"with 'tool_calls'. (messages[{index}])"
                )
            pending.discard(message["tool_call_id"])
            continue
        if pending:
            return (
                "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
                "'tool_call_id'. The following tool_call_ids did not have response messages: "
                + ", ".join(sorted(pending))
            )
        pending = {str(c.get("id")) for c in message.get("tool_calls") or [] if isinstance(c, dict)}
    return None


def openai_message(calls: list[PlannedCall]) -> Json:
    wire = [
        {
            "id": _ident("call_", 24),
            "type": "function",
            "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
        }
        for c in calls
    ]
    return {"role": "assistant", "content": None, "tool_calls": wire, "refusal": None, "annotations": []}


# --------------------------------------------------------------------------- Anthropic


def anthropic_turns(body: Json) -> Read:
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    blocks_of = [
        [b for b in m.get("content") or [] if isinstance(b, dict)] if isinstance(m.get("content"), list) else []
        for m in messages
    ]
    has_turns = any(b.get("type") in ("tool_use", "tool_result") for blocks in blocks_of for b in blocks)
    if has_turns and not tools:
        return "Requests which include `tool_use` or `tool_result` blocks must define tools."
    for index in range(len(messages)):
        uses = [b.get("id") for b in blocks_of[index] if b.get("type") == "tool_use"]
        following = blocks_of[index + 1] if index + 1 < len(messages) else None
        if uses and following is not None:
            answered = {b.get("tool_use_id") for b in following if b.get("type") == "tool_result"}
            missing = [u for u in uses if u not in answered]
            if messages[index + 1].get("role") != "user" or missing:
                return (
                    f"messages.{index}: `tool_use` ids were found without `tool_result` blocks immediately after: "
                    f"{', '.join(map(str, missing or uses))}. Each `tool_use` block must have a corresponding "
                    "`tool_result` block in the next message."
                )
        previous = {b.get("id") for b in blocks_of[index - 1] if b.get("type") == "tool_use"} if index else set()
        seen_other = False
        for position, block in enumerate(blocks_of[index]):
            if block.get("type") != "tool_result":
                seen_other = True
                continue
            if seen_other:
                return f"messages.{index}.content.{position}: tool_result blocks must come first in a user message."
            if block.get("tool_use_id") not in previous:
                return (
                    f"messages.{index}.content.{position}: unexpected `tool_use_id` found in `tool_result` blocks: "
                    f"{block.get('tool_use_id')}. Each `tool_result` block must have a corresponding `tool_use` "
                    "block in the previous message."
                )
    if not tools:
        return None
    choice = body.get("tool_choice") if isinstance(body.get("tool_choice"), dict) else {}
    turns = ToolTurns(parallel=not choice.get("disable_parallel_tool_use"))
    turns.tools = [SimTool(str(t.get("name")), t.get("input_schema") or {}) for t in tools]
    kind = choice.get("type", "auto")
    turns.mode = {"auto": "auto", "any": "any", "none": "none", "tool": "named"}.get(kind, "auto")
    turns.named = choice.get("name")
    turns.called = [str(b.get("name")) for blocks in blocks_of for b in blocks if b.get("type") == "tool_use"]
    last = messages[-1] if messages else {}
    results = [b for b in blocks_of[-1] if b.get("type") == "tool_result"] if messages else []
    if last.get("role") == "user" and results:
        turns.results_after = ["".join(_block_texts(b.get("content"))) for b in results]
        texts = [b.get("text", "") for b in blocks_of[-1] if b.get("type") == "text"]
        turns.last_user_text = "".join(texts)
    else:
        users = [m for m in messages if m.get("role") == "user"]
        turns.last_user_text = "".join(_block_texts(users[-1].get("content"))) if users else ""
    return turns


def anthropic_blocks(calls: list[PlannedCall]) -> list[Json]:
    return [{"type": "tool_use", "id": _ident("toolu_01", 22), "name": c.name, "input": c.arguments} for c in calls]


# --------------------------------------------------------------------------- Gemini


def gemini_turns(body: Json) -> Read:
    declarations: list[Json] = []
    for index, tool in enumerate(body.get("tools") or []):
        found = _get(tool, "functionDeclarations", "function_declarations") if isinstance(tool, dict) else None
        for position, declaration in enumerate(found or []):
            where = f"tools[{index}].function_declarations[{position}]"
            if not isinstance(declaration, dict) or not isinstance(declaration.get("name"), str):
                return f"* GenerateContentRequest.{where}.name: Required"
            params = declaration.get("parameters")
            json_params = _get(declaration, "parametersJsonSchema", "parameters_json_schema")
            if params is not None and json_params is not None:
                return f"* GenerateContentRequest.{where}: parameters and parameters_json_schema are mutually exclusive"
            if params is not None and (problem := gemini_schema_problem(params, f"{where}.parameters")):
                return problem
            declarations.append({"name": declaration["name"], "schema": params or json_params or {}})
    contents = [c for c in body.get("contents") or [] if isinstance(c, dict)]
    problem = _gemini_sequence(contents)
    if problem:
        return problem
    has_turns = any(_calls(c) or _responses(c) for c in contents)
    if not declarations and not has_turns:
        return None
    config = _get(body, "generationConfig", "generation_config") or {}
    if declarations and _get(config, "responseMimeType", "response_mime_type") == "application/json":
        return "Function calling with a response mime type: 'application/json' is unsupported"
    tool_config = _get(body, "toolConfig", "tool_config") or {}
    calling = _get(tool_config, "functionCallingConfig", "function_calling_config") or {}
    mode = str(calling.get("mode", "AUTO")).upper()
    allowed = _get(calling, "allowedFunctionNames", "allowed_function_names")
    if allowed and mode != "ANY":
        return "allowed_function_names may only be set when the function calling mode is ANY"
    turns = ToolTurns(tools=[SimTool(d["name"], d["schema"]) for d in declarations])
    turns.mode = {"AUTO": "auto", "ANY": "any", "NONE": "none", "VALIDATED": "auto"}.get(mode, "auto")
    if allowed:
        turns.allowed = [str(name) for name in allowed]
        if len(turns.allowed) == 1:
            turns.mode, turns.named = "named", turns.allowed[0]
    users = [c for c in contents if c.get("role", "user") == "user" and not _responses(c)]
    turns.last_user_text = (
        "".join(p.get("text", "") for p in users[-1].get("parts") or [] if isinstance(p, dict)) if users else ""
    )
    turns.called = [str(c.get("name")) for content in contents for c in _calls(content)]
    if contents and _responses(contents[-1]):
        turns.results_after = [json.dumps(r.get("response"), sort_keys=True) for r in _responses(contents[-1])]
    return turns


def _calls(content: Json) -> list[Json]:
    return [
        p["functionCall"]
        for p in content.get("parts") or []
        if isinstance(p, dict) and isinstance(p.get("functionCall"), dict)
    ]


def _responses(content: Json) -> list[Json]:
    parts = content.get("parts") or []
    return [p["functionResponse"] for p in parts if isinstance(p, dict) and isinstance(p.get("functionResponse"), dict)]


def _gemini_sequence(contents: list[Json]) -> str | None:
    for index, content in enumerate(contents):
        responses = _responses(content)
        if not responses:
            continue
        calls = _calls(contents[index - 1]) if index else []
        if not calls:
            return "Please ensure that function response turn comes immediately after a function call turn."
        if len(responses) != len(calls):
            return (
                "Please ensure that the number of function response parts is equal to the number of function call "
                "parts of the function call turn."
            )
        names = {c.get("name") for c in calls}
        for response in responses:
            if not response.get("name"):
                return f"* GenerateContentRequest.contents[{index}].parts.function_response.name: Name cannot be empty."
            if response["name"] not in names:
                name = response["name"]
                return f"contents[{index}]: function response name '{name}' matches no call before it."
            if not isinstance(response.get("response"), dict):
                return f"* GenerateContentRequest.contents[{index}].parts.function_response.response: must be an object"
    return None


def gemini_parts(calls: list[PlannedCall]) -> list[Json]:
    return [{"functionCall": {"name": c.name, "args": c.arguments}} for c in calls]
