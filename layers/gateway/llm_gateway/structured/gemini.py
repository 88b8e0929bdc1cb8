"""JSON Schema to Gemini's ``responseSchema`` dialect (a subset of the OpenAPI 3.0 schema object).

Gemini refuses a request (400, no fallback helps) whose schema uses anything outside its subset: unknown
keywords, a ``format`` other than ``enum``/``date-time`` on strings (``int32``/``int64``, ``float``/
``double`` on numbers), ``enum`` on anything but strings, type lists, objects without properties, nodes
without a type. So the translation keeps what the subset can say and moves the rest where the model
still reads it, the description:

* ``$ref`` is inlined; ``allOf`` is merged; ``oneOf`` becomes ``anyOf`` (Gemini supports ``anyOf``);
* ``type: [x, "null"]`` and null branches become ``nullable``; ``type: [x, y]`` becomes ``anyOf``;
* ``const`` on a string becomes a one-value ``enum``; numeric and boolean ``enum``/``const``, string
  formats other than ``date-time``, ``pattern``, lengths, exclusive bounds become a hint in the
  description;
* ``additionalProperties`` and other keywords Gemini lacks are dropped.

That schema is weaker than the caller's, which is fine: the gateway validates every answer against the
full schema. What the subset cannot express at all (a free-form object or value, an array without an
items schema, a mixed-type enum, a null-only value) raises :class:`UntranslatableSchema`, and the
adapter asks for JSON in the text instead.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from llm_gateway.structured.schemas import local_ref_target

MAX_DEPTH = 32
MAX_REF_HOPS = 32
_FORMATS = {"string": {"date-time", "enum"}, "integer": {"int32", "int64"}, "number": {"float", "double"}}
_SCALARS = {"string", "integer", "number", "boolean"}
_JSON_TYPES = {str: "string", bool: "boolean", int: "integer", float: "number"}


class UntranslatableSchema(ValueError):
    """The schema has a part Gemini's responseSchema cannot express."""


def gemini_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` in Gemini's dialect; UntranslatableSchema when it has no faithful counterpart."""
    text = _translated(json.dumps(schema, separators=(",", ":")))
    if text is None:
        raise UntranslatableSchema("the schema has parts Gemini's responseSchema cannot express")
    result: dict[str, Any] = json.loads(text)
    return result


@lru_cache(maxsize=64)
def _translated(schema_json: str) -> str | None:
    schema = json.loads(schema_json)
    try:
        return json.dumps(_Translator(schema).node(schema, 0), separators=(",", ":"))
    except UntranslatableSchema:
        return None


class _Translator:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root

    def node(self, schema: Any, depth: int) -> dict[str, Any]:
        if depth > MAX_DEPTH:
            raise UntranslatableSchema("nested too deep")
        node = self._merged(self._resolve(schema))
        branches = node.get("anyOf") or node.get("oneOf")
        if isinstance(branches, list) and branches:
            return self._union(node, branches, depth)
        kinds, nullable = self._kinds(node)
        if not kinds:
            raise UntranslatableSchema("a value of any type (or only null)")
        if len(kinds) == 1:
            out = self._typed(kinds[0], node, depth)
            if nullable:
                out["nullable"] = True
            return out
        undescribed = {k: v for k, v in node.items() if k != "description"}  # said once, on the union
        options = [self._typed(kind, undescribed, depth) for kind in kinds]
        if nullable:
            options = [{**option, "nullable": True} for option in options]
        return _with_description({"anyOf": options}, node.get("description"), [])

    # ---- combinators

    def _union(self, node: dict[str, Any], branches: list[Any], depth: int) -> dict[str, Any]:
        """anyOf/oneOf: each branch with the node's other keywords (they apply to every branch)."""
        shared = {k: v for k, v in node.items() if k not in ("anyOf", "oneOf", "description")}
        resolved = [self._resolve(b) for b in branches]
        nullable = any(_is_null(b) for b in resolved)
        options = [self.node(_merge(shared, b), depth + 1) for b in resolved if not _is_null(b)]
        if not options:
            raise UntranslatableSchema("only null")
        if nullable:
            options = [{**option, "nullable": True} for option in options]
        if len(options) == 1:
            option = options[0]
            return _with_description(option, node.get("description"), []) if "description" not in option else option
        return _with_description({"anyOf": options}, node.get("description"), [])

    def _merged(self, node: dict[str, Any]) -> dict[str, Any]:
        """allOf folded into the node (properties and required combined, other keywords: first wins)."""
        parts = node.get("allOf")
        if not isinstance(parts, list):
            return node
        merged = {k: v for k, v in node.items() if k != "allOf"}
        for part in parts:
            merged = _merge(merged, self._merged(self._resolve(part)))
        return merged

    def _resolve(self, schema: Any) -> dict[str, Any]:
        hops = 0
        while isinstance(schema, dict) and isinstance(schema.get("$ref"), str):
            if hops >= MAX_REF_HOPS:
                raise UntranslatableSchema("references nested too deep (or recursive)")
            target = _pointer(self.root, schema["$ref"])
            siblings = {k: v for k, v in schema.items() if k != "$ref"}
            schema = _merge(siblings, target) if isinstance(target, dict) else target
            hops += 1
        if not isinstance(schema, dict) or not schema:
            raise UntranslatableSchema("a boolean or empty schema (any value)")
        return schema

    # ---- typed nodes

    def _kinds(self, node: dict[str, Any]) -> tuple[list[str], bool]:
        """The non-null types a node allows, and whether it allows null."""
        declared = node.get("type")
        if isinstance(declared, str):
            kinds = [declared]
        elif isinstance(declared, list):
            kinds = [k for k in declared if isinstance(k, str)]
        elif "properties" in node:
            kinds = ["object"]
        elif "items" in node:
            kinds = ["array"]
        elif "const" in node or isinstance(node.get("enum"), list):
            values = [node["const"]] if "const" in node else list(node["enum"])
            kinds = sorted({_JSON_TYPES.get(type(v), "other") for v in values if v is not None})
            if "other" in kinds or len(kinds) > 1:
                raise UntranslatableSchema("an enum of mixed or structured values")
            return kinds, None in values
        else:
            kinds = []
        nullable = "null" in kinds or node.get("nullable") is True or None in (node.get("enum") or [])
        return [k for k in kinds if k != "null"], nullable

    def _typed(self, kind: str, node: dict[str, Any], depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {"type": kind}
        hints: list[str] = []
        if kind == "object":
            self._object(node, out, depth)
        elif kind == "array":
            self._array(node, out, hints, depth)
        elif kind in _SCALARS:
            self._scalar(kind, node, out, hints)
        else:
            raise UntranslatableSchema(f"unknown type {kind!r}")
        return _with_description(out, node.get("description"), hints)

    def _object(self, node: dict[str, Any], out: dict[str, Any], depth: int) -> None:
        properties = node.get("properties")
        if not isinstance(properties, dict) or not properties:
            raise UntranslatableSchema("an object without properties (Gemini has no free-form object)")
        out["properties"] = {name: self.node(sub, depth + 1) for name, sub in properties.items()}
        required = [r for r in node.get("required") or [] if r in properties]
        if required:
            out["required"] = required
        # Gemini otherwise writes keys in alphabetical order; keep the schema author's order.
        out["propertyOrdering"] = list(properties)

    def _array(self, node: dict[str, Any], out: dict[str, Any], hints: list[str], depth: int) -> None:
        if "prefixItems" in node or not isinstance(node.get("items"), dict):
            raise UntranslatableSchema("an array without one items schema")
        out["items"] = self.node(node["items"], depth + 1)
        for key in ("minItems", "maxItems"):
            if isinstance(node.get(key), int):
                out[key] = node[key]
        if node.get("uniqueItems") is True:
            hints.append("items must be unique")

    def _scalar(self, kind: str, node: dict[str, Any], out: dict[str, Any], hints: list[str]) -> None:
        values = [node["const"]] if "const" in node else node.get("enum")
        if isinstance(values, list):
            present = [v for v in values if v is not None]
            if kind == "string" and all(isinstance(v, str) for v in present) and present:
                out["enum"] = present
            elif len(present) == 1:
                hints.append(f"exactly {json.dumps(present[0])}")
            elif present:
                hints.append("one of: " + ", ".join(json.dumps(v) for v in present))
        fmt = node.get("format")
        if isinstance(fmt, str):
            if fmt in _FORMATS.get(kind, set()) and not (fmt == "enum" and "enum" not in out):
                out["format"] = fmt
            else:
                hints.append(f"format: {fmt}")
        if kind in ("integer", "number"):
            for key in ("minimum", "maximum"):
                if isinstance(node.get(key), int | float) and not isinstance(node.get(key), bool):
                    out[key] = node[key]
            for key, words in (("exclusiveMinimum", "greater than"), ("exclusiveMaximum", "less than")):
                if isinstance(node.get(key), int | float) and not isinstance(node.get(key), bool):
                    hints.append(f"{words} {node[key]}")
            if "multipleOf" in node:
                hints.append(f"a multiple of {node['multipleOf']}")
        if kind == "string":
            if "pattern" in node:
                hints.append(f"matching the pattern {node['pattern']}")
            if "minLength" in node:
                hints.append(f"at least {node['minLength']} characters")
            if "maxLength" in node:
                hints.append(f"at most {node['maxLength']} characters")


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Both schemas' constraints in one node: properties and required combined, else ``base`` wins."""
    merged = {**extra, **base}
    if isinstance(base.get("properties"), dict) and isinstance(extra.get("properties"), dict):
        merged["properties"] = {**extra["properties"], **base["properties"]}
    if isinstance(base.get("required"), list) and isinstance(extra.get("required"), list):
        merged["required"] = list(dict.fromkeys([*base["required"], *extra["required"]]))
    if "type" in base and "type" in extra and base["type"] != extra["type"]:
        kinds = set(_as_list(base["type"])) & set(_as_list(extra["type"]))
        if not kinds:
            raise UntranslatableSchema("allOf parts with no type in common")
        merged["type"] = sorted(kinds) if len(kinds) > 1 else kinds.pop()
    return merged


def _as_list(kinds: Any) -> list[Any]:
    return kinds if isinstance(kinds, list) else [kinds]


def _is_null(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "null" or ("const" in schema and schema["const"] is None) or schema == {"enum": [None]}


def _with_description(out: dict[str, Any], description: Any, hints: list[str]) -> dict[str, Any]:
    text = description.strip() if isinstance(description, str) else ""
    if hints:
        text = f"{text} ({'; '.join(hints)})" if text else "; ".join(hints)
    if text:
        out["description"] = text
    return out


def _pointer(root: dict[str, Any], ref: str) -> Any:
    if not ref.startswith("#"):
        raise UntranslatableSchema("only local references can be inlined")
    target = local_ref_target(root, ref)
    if target is None:
        raise UntranslatableSchema(f"the reference {ref!r} leads nowhere")
    return target
