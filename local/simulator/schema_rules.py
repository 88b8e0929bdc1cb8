"""What each provider refuses in a structured-output schema, for the simulator to refuse it too (400).

Written apart from the gateway's own translations (``llm_gateway.structured.strict``, ``providers/
gemini_schema.py``) so that a translation bug shows up as the provider's error in tests, not as a
silent pass. Each check returns the provider's error message, or None when the schema is accepted.

* Gemini ``responseSchema``: the OpenAPI-3.0 subset. Unknown fields, type lists or unknown types,
  formats other than enum/date-time on strings (int32/int64, float/double on numbers), ``enum`` on
  non-strings, objects without properties, arrays without items, nodes without a type, ``required``
  names that are not properties.
* OpenAI ``json_schema`` with ``strict: true``: a root object; every object with
  ``additionalProperties: false`` and every property required; a type on every node; no unsupported
  keywords or formats; at most 10 levels of nesting (objects and arrays), 5000 properties and 1000
  enum values.
* Anthropic ``tools[].input_schema``: present, and an object schema.
"""

from __future__ import annotations

import json
import re
from typing import Any

Json = dict[str, Any]

# --------------------------------------------------------------------------- Gemini

GEMINI_FIELDS = frozenset(
    {
        "type",
        "format",
        "title",
        "description",
        "nullable",
        "enum",
        "maxItems",
        "minItems",
        "properties",
        "required",
        "minProperties",
        "maxProperties",
        "minLength",
        "maxLength",
        "pattern",
        "example",
        "anyOf",
        "propertyOrdering",
        "default",
        "items",
        "minimum",
        "maximum",
    }
)
GEMINI_TYPES = frozenset({"STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT"})
GEMINI_FORMATS = {
    "STRING": ("enum", "date-time"),
    "NUMBER": ("float", "double"),
    "INTEGER": ("int32", "int64"),
}
_MAX_WALK_DEPTH = 64


def _camel(name: str) -> str:
    """Gemini's REST API takes both spellings: ``property_ordering`` is ``propertyOrdering``."""
    return re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)


def gemini_schema_problem(schema: Any, where: str = "generation_config.response_schema") -> str | None:
    problems: list[str] = []
    _gemini_node(schema, where, problems, 0)
    if not problems:
        return None
    if problems[0].startswith("Invalid"):
        return problems[0]
    return "".join(f"* GenerateContentRequest.{p}\n" for p in problems)


def _gemini_node(node: Any, where: str, problems: list[str], depth: int) -> None:
    if depth > _MAX_WALK_DEPTH:
        problems.append(f"{where}: nested too deeply")
        return
    if not isinstance(node, dict):
        problems.append(f"Invalid JSON payload received. Expected an object at '{where}'.")
        return
    fields = {_camel(k): v for k, v in node.items()}
    for name in node:
        if _camel(name) not in GEMINI_FIELDS:
            problems.append(f"Invalid JSON payload received. Unknown name \"{name}\" at '{where}': Cannot find field.")
            return
    raw_type = fields.get("type")
    if raw_type is not None and (not isinstance(raw_type, str) or raw_type.upper() not in GEMINI_TYPES):
        problems.append(
            f"Invalid value at '{where}.type' (type.googleapis.com/google.ai.generativelanguage.v1beta.Type), "
            f"{json.dumps(raw_type)}"
        )
        return
    kind = raw_type.upper() if isinstance(raw_type, str) else None
    branches = fields.get("anyOf")
    if kind is None and not branches:
        problems.append(f"{where}.type: must be specified")
    fmt = fields.get("format")
    if fmt is not None and kind is not None and fmt not in GEMINI_FORMATS.get(kind, ()):
        allowed = " and ".join(f"'{f}'" for f in GEMINI_FORMATS.get(kind, ())) or "no formats"
        problems.append(f"{where}.format: only {allowed} are supported for {kind} type")
    if "enum" in fields and kind != "STRING":
        problems.append(f"{where}.enum: only allowed for STRING type")
    if kind == "OBJECT":
        properties = fields.get("properties")
        if not isinstance(properties, dict) or not properties:
            problems.append(f"{where}.properties: should be non-empty for OBJECT type")
            properties = {}
        for i, name in enumerate(fields.get("required") or []):
            if name not in properties:
                problems.append(f"{where}.required[{i}]: property is not defined")
        for name, sub in properties.items():
            _gemini_node(sub, f"{where}.properties[{name}]", problems, depth + 1)
    if kind == "ARRAY":
        if "items" not in fields:
            problems.append(f"{where}.items: missing field.")
        else:
            _gemini_node(fields["items"], f"{where}.items", problems, depth + 1)
    if isinstance(branches, list):
        for i, branch in enumerate(branches):
            _gemini_node(branch, f"{where}.any_of[{i}]", problems, depth + 1)


# --------------------------------------------------------------------------- OpenAI strict mode

OPENAI_STRICT_UNSUPPORTED = frozenset(
    {
        "allOf",
        "oneOf",
        "not",
        "if",
        "then",
        "else",
        "dependentRequired",
        "dependentSchemas",
        "patternProperties",
        "unevaluatedProperties",
        "unevaluatedItems",
        "propertyNames",
        "minProperties",
        "maxProperties",
        "contains",
        "minContains",
        "maxContains",
        "uniqueItems",
        "minLength",
        "maxLength",
        "prefixItems",
        "default",
    }
)
OPENAI_STRICT_FORMATS = frozenset(
    {"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"}
)
OPENAI_MAX_NESTING = 10
OPENAI_MAX_PROPERTIES = 5_000
OPENAI_MAX_ENUM_VALUES = 1_000


def openai_strict_problem(schema: Any, name: str) -> str | None:
    prefix = f"Invalid schema for response_format '{name}': "
    if not isinstance(schema, dict) or schema.get("type") != "object" or "anyOf" in schema:
        got = schema.get("type") if isinstance(schema, dict) else type(schema).__name__
        return prefix + f"schema must be a JSON Schema of 'type: \"object\"', got 'type: \"{got}\"'."
    counts = {"properties": 0, "enum": 0}
    problem = _openai_node(schema, (), counts, 0)
    if problem:
        return prefix + problem
    nesting = _nesting(schema, schema, 0, 0)
    if nesting > OPENAI_MAX_NESTING:
        return prefix + f"{nesting} levels of nesting exceeds limit of {OPENAI_MAX_NESTING}."
    if counts["properties"] > OPENAI_MAX_PROPERTIES:
        return prefix + f"Total number of object properties {counts['properties']} exceeds limit of 5000."
    if counts["enum"] > OPENAI_MAX_ENUM_VALUES:
        return prefix + f"Total number of enum values {counts['enum']} exceeds limit of 1000."
    return None


def _openai_node(node: Any, path: tuple[str, ...], counts: dict[str, int], depth: int) -> str | None:
    context = f"In context={path}, "
    if depth > _MAX_WALK_DEPTH:
        return context + "schema is nested too deeply."
    if not isinstance(node, dict):
        return context + "schema must be a JSON object."
    for key in node:
        if key in OPENAI_STRICT_UNSUPPORTED:
            return context + f"'{key}' is not permitted."
    fmt = node.get("format")
    if fmt is not None and fmt not in OPENAI_STRICT_FORMATS:
        return context + f"'{fmt}' is not a valid format."
    children: list[tuple[Any, tuple[str, ...]]] = []
    for defs in ("$defs", "definitions"):
        for def_name, sub in (node.get(defs) or {}).items():
            children.append((sub, (*path, defs, def_name)))
    for i, branch in enumerate(node.get("anyOf") or []):
        children.append((branch, (*path, "anyOf", str(i))))
    if isinstance(node.get("enum"), list):
        counts["enum"] += len(node["enum"])
    kinds = node.get("type")
    kinds = [kinds] if isinstance(kinds, str) else kinds if isinstance(kinds, list) else []
    if not kinds and not ({"$ref", "anyOf", "enum", "const"} & node.keys()):
        return context + "schema must have a 'type' key."
    if "object" in kinds or "properties" in node:
        properties = node.get("properties") or {}
        if node.get("additionalProperties") is not False:
            return context + "'additionalProperties' is required to be supplied and to be false."
        missing = [key for key in properties if key not in (node.get("required") or [])]
        if missing:
            return (
                context + "'required' is required to be supplied and to be an array including every key in "
                f"properties. Missing '{missing[0]}'."
            )
        counts["properties"] += len(properties)
        children += [(sub, (*path, "properties", key)) for key, sub in properties.items()]
    if "array" in kinds:
        if not isinstance(node.get("items"), dict):
            return context + "'items' is required to be supplied for arrays."
        children.append((node["items"], (*path, "items")))
    for child, child_path in children:
        problem = _openai_node(child, child_path, counts, depth + 1)
        if problem:
            return problem
    return None


def _nesting(node: Any, root: Json, level: int, hops: int) -> int:
    """Objects and arrays on the deepest path (references followed; counting stops past the limit)."""
    if level > OPENAI_MAX_NESTING or hops > 32 or not isinstance(node, dict):
        return level
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#"):
        target: Any = root
        for part in ref[1:].strip("/").split("/") if ref != "#" else []:
            target = target.get(part) if isinstance(target, dict) else None
        return _nesting(target, root, level, hops + 1)
    kinds = node.get("type")
    kinds = [kinds] if isinstance(kinds, str) else kinds if isinstance(kinds, list) else []
    nests = bool({"object", "array"} & set(kinds)) or "properties" in node or "items" in node
    here = level + 1 if nests else level
    children = [*(node.get("properties") or {}).values(), node.get("items"), *(node.get("anyOf") or [])]
    return max([here, *(_nesting(child, root, here, hops) for child in children)])


# --------------------------------------------------------------------------- Anthropic


def anthropic_tools_problem(tools: list[Any]) -> str | None:
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or ("type" in tool and tool["type"] not in ("custom", None)):
            continue  # server tools (web search, ...) carry no input schema
        schema = tool.get("input_schema")
        if schema is None:
            return f"tools.{i}.custom.input_schema: Field required"
        if not isinstance(schema, dict) or schema.get("type") != "object":
            return f"tools.{i}.custom.input_schema.type: Input should be 'object'"
    return None
