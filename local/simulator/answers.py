"""Deterministic answers: placeholder prose from a prompt hash and minimal instances of a JSON schema."""

from __future__ import annotations

import hashlib
import json
import math
import re
from contextlib import suppress
from typing import Any

from local.simulator.wire import (
    Answer,
    ChatRequest,
    Json,
    Reply,
    _tokens,
)

# --------------------------------------------------------------------------- answers

ECHO = "[[sim:echo]]"  # in a prompt: the answer is that text, the marker left out

_SUBJECTS = (
    "The quiet river",
    "A careful engineer",
    "The old lighthouse",
    "Every small request",
    "The morning train",
    "A patient gardener",
    "The distant observatory",
    "This short answer",
    "The northern wind",
    "A curious student",
    "The busy harbour",
    "An honest ledger",
    "The paper lantern",
    "A steady compass",
    "The silver kettle",
    "A wandering poet",
)
_VERBS = (
    "considers",
    "remembers",
    "follows",
    "describes",
    "carries",
    "balances",
    "explains",
    "observes",
    "gathers",
    "measures",
    "questions",
    "celebrates",
    "organises",
    "illuminates",
    "shelters",
    "revisits",
)
_OBJECTS = (
    "the shape of the question",
    "a small set of facts",
    "the evening light",
    "a well-formed reply",
    "the distant hills",
    "every token it sees",
    "an orderly list of ideas",
    "the simplest path forward",
    "a handful of old maps",
    "the rhythm of the tide",
    "the quiet hours",
    "a bright new plan",
    "the weight of the evidence",
    "a long list of numbers",
    "the spirit of the task",
    "a clear summary",
)
_ENDINGS = (
    "with quiet confidence.",
    "before the rain arrives.",
    "in plain words.",
    "one step at a time.",
    "without any hurry.",
    "as the clock strikes noon.",
    "for the benefit of all.",
    "with remarkable care.",
)


def deterministic_sentences(text: str) -> str:
    """Two English sentences picked by the sha256 of ``text`` (same text, same answer)."""
    d = hashlib.sha256(text.encode()).digest()
    first = f"{_SUBJECTS[d[0] % 16]} {_VERBS[d[1] % 16]} {_OBJECTS[d[2] % 16]} {_ENDINGS[d[3] % 8]}"
    second = f"{_SUBJECTS[d[4] % 16]} {_VERBS[d[5] % 16]} {_OBJECTS[d[6] % 16]} {_ENDINGS[d[7] % 8]}"
    return f"{first} {second}"


def _compose(req: ChatRequest, reply: Reply | None) -> Answer:
    """Build the provider-neutral answer: scripted reply, schema instance or prose."""
    tool_input: Json | None = None
    if reply is not None:
        text = reply.content
        if req.tool_name is not None:
            with suppress(ValueError):
                parsed = json.loads(text)
                if isinstance(parsed, dict):
                    tool_input = parsed
    elif req.schema is not None or req.json_mode or req.tool_name is not None:
        schema = req.schema if req.schema is not None else {}
        value = schema_instance(schema) if schema else {"answer": deterministic_sentences(req.joined)}
        if req.tool_name is not None:
            tool_input = value if isinstance(value, dict) else {"value": value}
        text = json.dumps(value)
    elif ECHO in req.joined:  # the last text said back as it arrived (what a redacting gateway sent)
        text = next((t for t in reversed(req.texts) if ECHO in t), "").replace(ECHO, "").strip()
    else:
        text = f"[sim {req.provider}/{req.model}] {deterministic_sentences(req.joined)}"

    counted = json.dumps(tool_input) if tool_input is not None else text
    billed_input = reply.input_tokens if reply is not None and reply.input_tokens is not None else req.input_tokens
    cached = min(reply.cached_tokens, billed_input) if reply else 0
    if reply is not None and reply.finish_reason is not None:
        finish = reply.finish_reason
    elif req.max_tokens is not None and _tokens(counted) > req.max_tokens:
        # Truncate like a real model that ran out of budget; a cut tool call carries no input.
        finish = "length"
        text = counted[: req.max_tokens * 4]
        if tool_input is not None:
            tool_input = {}
        return Answer(text, finish, billed_input, req.max_tokens, cached, tool_input)
    else:
        finish = "stop"
    return Answer(text, finish, billed_input, _tokens(counted), cached, tool_input)


# --------------------------------------------------------------------------- JSON schema instances

_STRING_FORMATS = {
    "date": "2024-01-01",
    "date-time": "2024-01-01T00:00:00Z",
    "time": "00:00:00",
    "email": "user@example.com",
    "uri": "https://example.com",
    "url": "https://example.com",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "127.0.0.1",
}
_MAX_DEPTH = 16
_FORMAT_HINT = re.compile(r"\bformat: ([A-Za-z0-9-]+)")  # e.g. Gemini schemas carry formats as hints


def schema_instance(schema: Json, root: Json | None = None, name: str = "", depth: int = 0) -> Any:
    """A deterministic minimal instance valid against ``schema`` (JSON Schema or Gemini OpenAPI subset)."""
    root = schema if root is None else root
    schema = _resolve(schema, root)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            branches = [_resolve(b, root) for b in schema[key]]
            non_null = [b for b in branches if _type_of(b) != "null"]
            return schema_instance((non_null or branches)[0], root, name, depth + 1)
    if schema.get("allOf"):
        merged = _merge_all_of(schema, root)
        return schema_instance(merged, root, name, depth + 1)

    kind = _type_of(schema)
    if depth > _MAX_DEPTH:  # recursive schemas: stop with the smallest value of the type
        return {"object": {}, "array": [], "null": None}.get(kind, _scalar(kind, schema, name))
    if kind == "object":
        props: Json = schema.get("properties") or {}
        wanted = schema.get("required") or list(props)
        return {key: schema_instance(props.get(key, {}), root, key, depth + 1) for key in wanted}
    if kind == "array":
        count = max(1, int(schema.get("minItems", 1)))
        if "maxItems" in schema:
            count = min(count, int(schema["maxItems"]))
        items = schema.get("items")
        item_schema = items if isinstance(items, dict) else {"type": "string"}
        return [schema_instance(item_schema, root, name, depth + 1) for _ in range(count)]
    return _scalar(kind, schema, name)


def _resolve(schema: Json, root: Json) -> Json:
    seen = 0
    while isinstance(schema.get("$ref"), str) and seen < 32:
        ref: str = schema["$ref"]
        if not ref.startswith("#"):
            return {}
        target: Any = root
        for part in ref.lstrip("#").strip("/").split("/"):
            if part:
                target = target.get(part.replace("~1", "/").replace("~0", "~"), {})
        schema = target if isinstance(target, dict) else {}
        seen += 1
    return schema


def _merge_all_of(schema: Json, root: Json) -> Json:
    merged: Json = {k: v for k, v in schema.items() if k != "allOf"}
    for part in schema["allOf"]:
        sub = _resolve(part, root)
        for key, value in sub.items():
            if key == "properties":
                merged.setdefault("properties", {}).update(value)
            elif key == "required":
                merged["required"] = [*merged.get("required", []), *value]
            else:
                merged.setdefault(key, value)
    return merged


def _type_of(schema: Json) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        non_null = [str(k).lower() for k in kind if str(k).lower() != "null"]
        return non_null[0] if non_null else "null"
    if isinstance(kind, str):
        return kind.lower()
    if "properties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    return "string"


def _scalar(kind: str, schema: Json, name: str) -> Any:
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    if kind in ("integer", "number"):
        value: float = 1
        if "minimum" in schema:
            value = max(value, schema["minimum"])
        if "exclusiveMinimum" in schema and not isinstance(schema["exclusiveMinimum"], bool):
            value = max(value, schema["exclusiveMinimum"] + 1)
        if "maximum" in schema:
            value = min(value, schema["maximum"])
        return math.ceil(value) if kind == "integer" else value
    fmt = schema.get("format")
    if not isinstance(fmt, str):  # like a real model, read a format the schema could only hint at
        hinted = _FORMAT_HINT.search(str(schema.get("description") or ""))
        fmt = hinted.group(1) if hinted else None
    text = _STRING_FORMATS.get(fmt, f"sample {name}".strip()) if isinstance(fmt, str) else f"sample {name}"
    text = text.strip()
    min_len = int(schema.get("minLength", 0))
    if len(text) < min_len:
        text = text + "x" * (min_len - len(text))
    if "maxLength" in schema:
        text = text[: int(schema["maxLength"])]
    return text
