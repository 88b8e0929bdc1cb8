"""Tool calling in the simulator, provider-neutral: what each dialect reads from its wire format, and
the deterministic decision the dialects render back.

The model's policy (deterministic, so tests can predict it):

* a named function (OpenAI ``{"type": "function"}``, Anthropic ``tool``, Gemini ``ANY`` with one allowed
  name): call it;
* ``required`` / ``any``: call the functions the last user turn names, else the first one; after tool
  results, the first function not called yet in the conversation (else the first): a forced choice
  always calls, which is how an agent's output tool ends its loop;
* ``auto``: after tool results, answer in text quoting them (so a test sees they arrived); else call the
  functions the last user turn names, else answer in text;
* ``none``: answer in text.

With parallel calls allowed every named function is called (in the order declared), else the first
only. Arguments are a minimal instance of the function's parameter schema, valid against it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from local.simulator.answers import schema_instance
from local.simulator.wire import Answer, ChatRequest, Reply, _tokens

Json = dict[str, Any]


@dataclass
class SimTool:
    name: str
    schema: Json  # the parameters as the provider got them (JSON Schema or Gemini's subset); {} for none


@dataclass
class ToolTurns:
    """The tool side of one request, as a dialect read it."""

    tools: list[SimTool] = field(default_factory=list)
    mode: str = "auto"  # auto | any | none | named
    named: str | None = None
    allowed: list[str] | None = None  # Gemini's allowedFunctionNames
    parallel: bool = True
    last_user_text: str = ""
    results_after: list[str] | None = None  # the tool results, when they are the last turn
    called: list[str] = field(default_factory=list)  # functions already called in the conversation


@dataclass
class PlannedCall:
    name: str
    arguments: Json


def plan_calls(turns: ToolTurns) -> list[PlannedCall]:
    """The calls the simulated model makes; [] means it answers in text."""
    if not turns.tools or turns.mode == "none" or (turns.results_after is not None and turns.mode == "auto"):
        return []
    offered = [t for t in turns.tools if turns.allowed is None or t.name in turns.allowed]
    if turns.mode == "named":
        chosen = [t for t in offered if t.name == turns.named]
    elif turns.results_after is not None:
        chosen = ([t for t in offered if t.name not in turns.called] or offered)[:1]
    else:
        chosen = [t for t in offered if re.search(rf"\b{re.escape(t.name)}\b", turns.last_user_text)]
        if not chosen and turns.mode == "any":
            chosen = offered[:1]
    if not turns.parallel:
        chosen = chosen[:1]
    return [PlannedCall(t.name, _arguments(t.schema)) for t in chosen]


def _arguments(schema: Json) -> Json:
    if not schema:
        return {}
    value = schema_instance(schema)
    return value if isinstance(value, dict) else {}


def continuation_text(provider: str, model: str, results: list[str]) -> str:
    return f"[sim {provider}/{model}] Based on {len(results)} tool result(s): " + " | ".join(results)


def tool_answer(req: ChatRequest, reply: Reply | None) -> Answer | None:
    """The answer of a request with tools, or None to answer as without (a scripted reply wins)."""
    turns: ToolTurns | None = req.tool_turns
    if reply is not None or turns is None or req.tool_name is not None:
        return None
    calls = plan_calls(turns)
    if calls:
        counted = json.dumps([[c.name, c.arguments] for c in calls])
        return Answer("", "tool_calls", req.input_tokens, _tokens(counted), tool_calls=calls)
    if turns.results_after is not None:
        text = continuation_text(req.provider, req.model, turns.results_after)
        return Answer(text, "stop", req.input_tokens, _tokens(text))
    return None
