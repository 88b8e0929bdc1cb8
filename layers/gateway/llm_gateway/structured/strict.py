"""OpenAI strict structured outputs: rewrite a JSON Schema into the strict subset, and undo what it adds.

Strict mode (``json_schema.strict: true``) constrains decoding to the schema, but accepts only a subset
of JSON Schema: every object closed (``additionalProperties: false``) with every property listed in
``required``, at most 10 levels of nesting and 5000 properties, and none of a list of keywords. Most
callers' schemas have optional properties and open objects; rather than give up strict mode for them,
:func:`strict_form` rewrites them:

* open objects are closed (an answer without extra keys is still valid against the original);
* optional properties become required but nullable; :func:`drop_added_nulls` then removes the nulls
  that only the rewrite allowed, before the answer is validated against the caller's own schema.

A schema that cannot be rewritten without changing what it means (unsupported keywords or formats,
free-form maps, over the limits) gets ``None``, and the adapter sends it as it is with ``strict: false``.
Every answer is validated against the caller's original schema either way.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from llm_gateway.structured.schemas import local_ref_target

MAX_NESTING = 10  # objects and arrays on one path, the root counting as 1
MAX_PROPERTIES = 5_000
MAX_ENUM_VALUES = 1_000
MAX_REF_HOPS = 32

# Keywords strict mode refuses (a schema using them is sent with strict: false).
UNSUPPORTED = frozenset(
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
    }
)
FORMATS = frozenset({"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"})
_ANNOTATIONS_REFUSED = ("default",)  # says nothing about the answer; strict mode rejects it
_DEFS = ("$defs", "definitions")


class _NotStrict(Exception):
    """The schema has no strict form that means the same."""


def strict_form(schema: dict[str, Any]) -> dict[str, Any] | None:
    """``schema`` rewritten for OpenAI strict mode, or None when it cannot be (send it non-strict)."""
    text = _strict_json(json.dumps(schema, separators=(",", ":")))
    return json.loads(text) if text is not None else None  # a fresh copy: callers may not share it


def is_strict(schema: dict[str, Any]) -> bool:
    """Whether strict mode accepts ``schema`` exactly as it is (its strict form changes nothing)."""
    return strict_form(schema) == schema


@lru_cache(maxsize=64)
def _strict_json(schema_json: str) -> str | None:
    schema = json.loads(schema_json)
    rewriter = _Rewriter()
    try:
        result = rewriter.node(schema)
    except _NotStrict:
        return None
    if rewriter.properties > MAX_PROPERTIES or rewriter.enum_values > MAX_ENUM_VALUES:
        return None
    if _nesting(schema, schema, 0, 0) > MAX_NESTING:
        return None
    return json.dumps(result, separators=(",", ":"))


class _Rewriter:
    def __init__(self) -> None:
        self.properties = 0
        self.enum_values = 0

    def node(self, node: Any) -> dict[str, Any]:
        if not isinstance(node, dict):
            raise _NotStrict("boolean schemas have no strict form")
        if UNSUPPORTED & node.keys():
            raise _NotStrict("unsupported keyword")
        fmt = node.get("format")
        if fmt is not None and fmt not in FORMATS:
            raise _NotStrict("unsupported format")
        out = {k: v for k, v in node.items() if k not in _ANNOTATIONS_REFUSED}
        for key in _DEFS:
            if isinstance(node.get(key), dict):
                out[key] = {name: self.node(sub) for name, sub in node[key].items()}
        if isinstance(node.get("enum"), list):
            self.enum_values += len(node["enum"])
        if isinstance(node.get("anyOf"), list):
            out["anyOf"] = [self.node(branch) for branch in node["anyOf"]]
        if "$ref" in node or "anyOf" in node:
            return out
        kinds = _kinds(node)
        if not kinds and "enum" not in node and "const" not in node:
            raise _NotStrict("a schema without a type (any value) has no strict form")
        if "object" in kinds or "properties" in node:
            out.update(self._object(node))
        if "array" in kinds or "items" in node:
            if not isinstance(node.get("items"), dict):
                raise _NotStrict("an array needs an items schema")
            out["items"] = self.node(node["items"])
        return out

    def _object(self, node: dict[str, Any]) -> dict[str, Any]:
        properties = node.get("properties") or {}
        extra = node.get("additionalProperties")
        if not properties and extra is not False:
            raise _NotStrict("a free-form object (a map) has no strict form")
        if isinstance(extra, dict) and extra:
            raise _NotStrict("closing an object with typed extra keys would change its meaning")
        self.properties += len(properties)
        required = set(node.get("required") or [])
        rewritten: dict[str, Any] = {}
        for name, sub in properties.items():
            strict_sub = self.node(sub)
            rewritten[name] = strict_sub if name in required else nullable(strict_sub)
        return {"properties": rewritten, "required": list(properties), "additionalProperties": False}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` that also accepts null (how strict mode spells an optional property)."""
    kinds = schema.get("type")
    listed = kinds if isinstance(kinds, list) else [kinds]
    # A type list only for scalars; objects, arrays, references, enums and consts get an anyOf with null.
    plain = not ({"$ref", "anyOf", "enum", "const"} & schema.keys()) and isinstance(kinds, str | list)
    if not plain or {"object", "array"} & set(listed):
        if {"type": "null"} in (schema.get("anyOf") or []):
            return schema
        return {"anyOf": [schema, {"type": "null"}]}
    return schema if "null" in listed else {**schema, "type": [*listed, "null"]}


def _nesting(node: Any, root: dict[str, Any], level: int, hops: int) -> int:
    """Objects and arrays on the deepest path below ``node`` (references followed), plus ``level``;
    counting stops just past the limit, so a recursive schema is simply "too deep"."""
    if level > MAX_NESTING or hops > MAX_REF_HOPS or not isinstance(node, dict):
        return level
    if isinstance(node.get("$ref"), str):
        return _nesting(_pointer(root, node["$ref"]), root, level, hops + 1)
    nests = {"object", "array"} & set(_kinds(node)) or "properties" in node or "items" in node
    here = level + 1 if nests else level
    children: list[Any] = [*(node.get("properties") or {}).values(), node.get("items"), *(node.get("anyOf") or [])]
    return max([here, *(_nesting(child, root, here, hops) for child in children)])


# --------------------------------------------------------------------------- undoing the rewrite


def drop_added_nulls(schema: dict[str, Any], value: Any) -> Any:
    """``value`` without the nulls only the strict rewrite allowed: a null given for an optional property
    whose own schema refuses null is dropped (the caller's schema lets the property be absent instead).
    Nulls the caller's schema allows are kept."""
    return _drop(schema, value, schema, 0)


def _drop(schema: Any, value: Any, root: dict[str, Any], depth: int) -> Any:
    node = _resolve(schema, root)
    if node is None or depth > 64:
        return value
    if isinstance(value, dict):
        node = _pick_branch(node, value, root)
        properties, required = _declared(node, root)
        out = {}
        for key, item in value.items():
            sub = properties.get(key)
            if item is None and isinstance(sub, dict) and key not in required and not allows_null(sub, root):
                continue
            out[key] = _drop(sub, item, root, depth + 1) if isinstance(sub, dict) else item
        return out
    if isinstance(value, list) and isinstance(node.get("items"), dict):
        return [_drop(node["items"], item, root, depth + 1) for item in value]
    return value


def _pick_branch(node: dict[str, Any], value: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """For anyOf/oneOf, the first object branch that declares every key of ``value`` (else the node)."""
    for key in ("anyOf", "oneOf"):
        for branch in node.get(key) or []:
            resolved = _resolve(branch, root)
            if resolved is not None and set(value) <= set(_declared(resolved, root)[0]):
                return resolved
    return node


def _declared(node: dict[str, Any], root: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """Properties and required names of an object schema, its allOf parts included."""
    properties: dict[str, Any] = {}
    required: set[str] = set()
    for part in [node, *(_resolve(p, root) for p in node.get("allOf") or [])]:
        if isinstance(part, dict):
            if isinstance(part.get("properties"), dict):
                properties.update(part["properties"])
            required.update(r for r in part.get("required") or [] if isinstance(r, str))
    return properties, required


def allows_null(schema: Any, root: dict[str, Any]) -> bool:
    """Whether ``null`` may be valid against ``schema`` (as far as type, enum, const and combinators say)."""
    node = _resolve(schema, root)
    if node is None:
        return True
    allowed = True
    kinds = node.get("type")
    if isinstance(kinds, str):
        allowed = kinds == "null"
    elif isinstance(kinds, list):
        allowed = "null" in kinds
    if isinstance(node.get("enum"), list):
        allowed = allowed and None in node["enum"]
    if "const" in node:
        allowed = allowed and node["const"] is None
    for key in ("anyOf", "oneOf"):
        if isinstance(node.get(key), list):
            allowed = allowed and any(allows_null(b, root) for b in node[key])
    if isinstance(node.get("allOf"), list):
        allowed = allowed and all(allows_null(b, root) for b in node["allOf"])
    return allowed


def _resolve(schema: Any, root: dict[str, Any]) -> dict[str, Any] | None:
    """Follow local ``$ref``s; None for a boolean schema or a reference that leads nowhere."""
    hops = 0
    while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and hops < MAX_REF_HOPS:
        schema = _pointer(root, schema["$ref"])
        hops += 1
    return schema if isinstance(schema, dict) else None


def _pointer(root: dict[str, Any], ref: str) -> Any:
    return local_ref_target(root, ref)


def _kinds(node: dict[str, Any]) -> list[str]:
    kinds = node.get("type")
    if isinstance(kinds, str):
        return [kinds]
    return [k for k in kinds if isinstance(k, str)] if isinstance(kinds, list) else []
