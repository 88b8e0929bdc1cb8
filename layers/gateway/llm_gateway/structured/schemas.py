"""JSON Schemas for structured output: checks, validation, named schemas (provider dialects: strict_schema.py,
providers/gemini_schema.py).

A schema from a caller is checked once before any provider is called (a bad schema is the caller's
400, not a provider's), validated with ``jsonschema`` (draft 2020-12), and bounded in size and depth.
``jsonschema`` is imported on first use: only functions that validate pay for it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any

from llm_gateway.errors import SchemaError, SchemaNotFoundError
from llm_gateway.resources import shared_dir
from llm_gateway.structured import patterns

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

MAX_SCHEMA_BYTES = 32 * 1024
MAX_SCHEMA_DEPTH = 12  # nested subschemas (object -> property -> array -> item ...), root is 1
MAX_SCHEMA_PROPERTIES = 300  # across the whole schema
MAX_JSON_NESTING = 64  # raw nesting of the schema document, checked before anything recurses into it
MAX_PROBLEMS = 20
MAX_MESSAGE_CHARS = 300
SCHEMA_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")

# Keywords whose value is a subschema, a list of subschemas, or a map of name -> subschema.
_ONE = (
    "items",
    "additionalProperties",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
    "contentSchema",
)
_LIST = ("anyOf", "oneOf", "allOf", "prefixItems")
_MAP = ("properties", "$defs", "definitions", "patternProperties", "dependentSchemas")

# --------------------------------------------------------------------------- checks


def check_schema(schema: Any) -> dict[str, Any]:
    """``schema`` if it is a usable JSON Schema for structured output, else a SchemaError saying why."""
    if not isinstance(schema, dict):
        raise SchemaError("the schema must be a JSON object (a JSON Schema)", details={"param": "schema"})
    _check_nesting(schema)
    size = len(json.dumps(schema, separators=(",", ":")).encode("utf-8"))
    if size > MAX_SCHEMA_BYTES:
        raise SchemaError(
            f"the schema is {size} bytes; the limit is {MAX_SCHEMA_BYTES}", details={"limit": MAX_SCHEMA_BYTES}
        )
    _check_is_json_schema(schema)
    if schema.get("type") != "object":
        raise SchemaError(
            'the schema\'s root must be {"type": "object", ...}: providers return an object, not a bare value',
            details={"param": "schema.type"},
        )
    depth = 0
    properties = 0
    for node, node_depth in _subschemas(schema):
        depth = max(depth, node_depth)
        properties += len(node.get("properties") or {})
        ref = node.get("$ref")
        if isinstance(ref, str):
            _check_ref(schema, ref)
    if depth > MAX_SCHEMA_DEPTH:
        raise SchemaError(
            f"the schema nests {depth} levels deep; the limit is {MAX_SCHEMA_DEPTH}",
            details={"limit": MAX_SCHEMA_DEPTH},
        )
    if properties > MAX_SCHEMA_PROPERTIES:
        raise SchemaError(
            f"the schema declares {properties} properties; the limit is {MAX_SCHEMA_PROPERTIES}",
            details={"limit": MAX_SCHEMA_PROPERTIES},
        )
    _check_no_ref_cycle(schema)
    patterns.check_patterns(node for node, _ in _subschemas(schema))
    return schema


def _check_nesting(schema: dict[str, Any]) -> None:
    """Iteratively, so that a hostile schema cannot exhaust the stack of the checks that follow."""
    stack: list[tuple[Any, int]] = [(schema, 1)]
    while stack:
        node, level = stack.pop()
        if level > MAX_JSON_NESTING:
            raise SchemaError(
                f"the schema is nested more than {MAX_JSON_NESTING} levels deep", details={"limit": MAX_JSON_NESTING}
            )
        if isinstance(node, dict):
            stack.extend((v, level + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, level + 1) for v in node)


def _check_is_json_schema(schema: dict[str, Any]) -> None:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError as JsonSchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except JsonSchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        raise SchemaError(
            f"not a valid JSON Schema (draft 2020-12): {_short(exc.message)}" + (f" at /{where}" if where else ""),
            details={"param": "schema", "path": f"/{where}"},
        ) from None


def _subschemas(schema: dict[str, Any]) -> Iterator[tuple[dict[str, Any], int]]:
    """Every subschema with its depth (the root is 1). ``$defs`` entries count from the root's level."""
    stack: list[tuple[dict[str, Any], int]] = [(schema, 1)]
    while stack:
        node, depth = stack.pop()
        yield node, depth
        for key in _ONE:
            if isinstance(node.get(key), dict):
                stack.append((node[key], depth + 1))
        for key in _LIST:
            stack.extend((s, depth + 1) for s in node.get(key) or [] if isinstance(s, dict))
        for key in _MAP:
            child_depth = depth if key in ("$defs", "definitions") else depth + 1
            value = node.get(key)
            if isinstance(value, dict):
                stack.extend((s, child_depth) for s in value.values() if isinstance(s, dict))


def _check_ref(schema: dict[str, Any], ref: str) -> None:
    if not ref.startswith("#"):
        raise SchemaError(
            f"only local references (#/$defs/...) are supported, not '{_short(ref)}'", details={"param": "schema"}
        )
    if _resolve_pointer(schema, ref) is None:
        raise SchemaError(f"the reference '{_short(ref)}' points nowhere in the schema", details={"param": "schema"})


def local_ref_target(root: Any, ref: str) -> Any:
    """What a local ``$ref`` ("#/$defs/x", RFC 6901 escapes) points at in ``root``; None if nothing."""
    if not ref.startswith("#"):
        return None
    target: Any = root
    for part in ref[1:].strip("/").split("/") if ref != "#" else []:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(target, dict) and part in target:
            target = target[part]
        elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
            target = target[int(part)]
        else:
            return None
    return target


def _resolve_pointer(schema: dict[str, Any], ref: str) -> dict[str, Any] | None:
    target = local_ref_target(schema, ref)
    return target if isinstance(target, dict) else None


def _refs_under(node: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    stack: list[Any] = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("$ref"), str):
                found.add(item["$ref"])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _check_no_ref_cycle(schema: dict[str, Any]) -> None:
    """Recursive schemas cannot be inlined for Gemini nor shown to a model in full: refused up front."""
    edges: dict[str, set[str]] = {}
    pending = list(_refs_under(schema))
    while pending:
        ref = pending.pop()
        if ref in edges:
            continue
        target = _resolve_pointer(schema, ref)
        edges[ref] = _refs_under(target) if target is not None else set()
        pending.extend(edges[ref])
    visiting: set[str] = set()
    done: set[str] = set()

    def visit(ref: str) -> None:  # depth bounded by the number of distinct refs, itself bounded by size
        if ref in done:
            return
        if ref in visiting:
            raise SchemaError(
                f"recursive schemas are not supported ('{_short(ref)}' refers back to itself)",
                details={"param": "schema"},
            )
        visiting.add(ref)
        for nxt in edges.get(ref, ()):
            visit(nxt)
        visiting.discard(ref)
        done.add(ref)

    for ref in edges:
        visit(ref)


# --------------------------------------------------------------------------- validation


def validation_problems(schema: dict[str, Any], instance: Any) -> list[dict[str, str]]:
    """Where ``instance`` breaks ``schema``: ``[{"path": "/items/0/price", "message": ...}]``, empty if valid."""
    validator = _validator(json.dumps(schema, sort_keys=True, separators=(",", ":")))
    problems = []
    for error in sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path]):
        path = "/" + "/".join(str(p) for p in error.absolute_path)
        problems.append({"path": path, "message": _short(error.message)})
        if len(problems) >= MAX_PROBLEMS:
            break
    return problems


@lru_cache(maxsize=64)
def _validator(schema_json: str) -> Validator:
    from jsonschema import Draft202012Validator

    # Patterns run on RE2 (patterns.py); formats are checked (a "date" must look like one): a model
    # writing "March 3" gets reasked.
    validator_class = patterns.linear_validator_class()
    return validator_class(json.loads(schema_json), format_checker=Draft202012Validator.FORMAT_CHECKER)


# --------------------------------------------------------------------------- named schemas


def named_schema(name: str) -> dict[str, Any]:
    """A schema shipped in ``shared/schemas/<name>.json`` (checked once per process)."""
    if not SCHEMA_NAME.match(name):
        raise SchemaError(
            f"'{_short(name)}' is not a schema name (lowercase letters, digits, '-' and '_')",
            details={"param": "schema"},
        )
    if name not in schema_names():
        raise SchemaNotFoundError(f"no schema named '{name}'", details={"param": "schema", "schemas": schema_names()})
    return _load_named(name)


@cache
def schema_names() -> list[str]:
    folder = shared_dir() / "schemas"
    return sorted(p.stem for p in folder.glob("*.json") if SCHEMA_NAME.match(p.stem)) if folder.is_dir() else []


@cache
def _load_named(name: str) -> dict[str, Any]:
    path = shared_dir() / "schemas" / f"{name}.json"
    return check_schema(json.loads(path.read_text(encoding="utf-8")))


def _short(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"
