"""Caller-supplied regular expressions (JSON Schema ``pattern`` and ``patternProperties`` keys) in linear time.

``jsonschema`` runs them with Python's backtracking ``re`` on a model's output: ``^(a+)+$`` against a long
"aaaa…!" takes seconds to centuries. Here they run on RE2 (``google-re2``), whose matching is linear in the
input whatever the pattern; a pattern RE2 cannot run (backreferences, lookaround: the constructs that
need backtracking) is refused up front with a 400 ``invalid_schema``, never tried with ``re``.

Why RE2 rather than a construct or length limit: which patterns backtrack badly is not decidable by a
simple rule (``(a|a)*$``, ``\\s*\\s*$`` and ``(\\w+\\s?)+$`` all do; ``(\\d{3}-)?\\d{4}`` is harmless), and
a rule strict enough to be safe refuses ordinary patterns. RE2 is a 0.5 MB manylinux wheel for
Python 3.12, imported (≈ 4 ms) only when a schema has a pattern.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any

from llm_gateway.errors import SchemaError

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

MAX_PATTERN_CHARS = 1000  # a pattern's own length; RE2 also bounds the compiled program's memory
_RE2_MAX_MEM = 1 << 20  # bytes for one compiled pattern: larger ones are refused, not built


class UnsafePatternError(ValueError):
    """A pattern RE2 cannot run in linear time (or at all)."""


@lru_cache(maxsize=256)
def linear_pattern(pattern: str) -> Any:
    """``pattern`` compiled by RE2, or UnsafePatternError saying why not (the reason quotes no input)."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise UnsafePatternError(f"is {len(pattern)} characters long; the limit is {MAX_PATTERN_CHARS}")
    import re2  # type: ignore[import-untyped]  # lazy: only schemas with patterns pay for it

    options = re2.Options()
    options.log_errors = False  # RE2 would write the pattern (the caller's text) to stderr, i.e. the logs
    options.max_mem = _RE2_MAX_MEM
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise UnsafePatternError(
            f"cannot be run in linear time ({reason[:120]}); backreferences and lookaround are not supported"
        ) from None


def check_patterns(subschemas: Iterable[dict[str, Any]]) -> None:
    """Every ``pattern`` and ``patternProperties`` key in ``subschemas`` compiles on RE2, else a 400."""
    uses_unevaluated = uses_pattern_properties = False
    for node in subschemas:
        pattern = node.get("pattern")
        if isinstance(pattern, str):
            _compile_or_refuse(pattern, "pattern")
        pattern_properties = node.get("patternProperties")
        if isinstance(pattern_properties, dict):
            uses_pattern_properties = True
            for key in pattern_properties:
                _compile_or_refuse(key, "patternProperties")
        uses_unevaluated = uses_unevaluated or "unevaluatedProperties" in node
    if uses_unevaluated and uses_pattern_properties:
        # jsonschema's unevaluatedProperties re-runs patternProperties keys on Python's re, out of reach here.
        raise SchemaError(
            "unevaluatedProperties together with patternProperties is not supported; use additionalProperties",
            details={"param": "schema"},
        )


def _compile_or_refuse(pattern: str, keyword: str) -> None:
    try:
        linear_pattern(pattern)
    except UnsafePatternError as exc:
        raise SchemaError(
            f"a {keyword} regular expression {exc}", details={"param": "schema", "keyword": keyword}
        ) from None


# --------------------------------------------------------------------------- the validator


@cache
def linear_validator_class() -> type[Validator]:
    """Draft 2020-12 with every keyword that runs a caller's pattern on an instance moved onto RE2."""
    from jsonschema import Draft202012Validator, validators

    extended: type[Validator] = validators.extend(  # type: ignore[no-untyped-call]
        Draft202012Validator,
        {
            "pattern": _pattern,
            "patternProperties": _pattern_properties,
            "additionalProperties": _additional_properties,
        },
    )
    return extended


def _search(pattern: str, text: str) -> bool:
    return linear_pattern(pattern).search(text) is not None


def _pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Iterator[Any]:
    from jsonschema.exceptions import ValidationError

    if validator.is_type(instance, "string") and not _search(pattern, instance):
        yield ValidationError(f"{_cut(instance)!r} does not match the pattern {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: dict[str, Any], instance: Any, schema: dict[str, Any]
) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if _search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(validator: Any, extra_schema: Any, instance: Any, schema: dict[str, Any]) -> Iterator[Any]:
    from jsonschema.exceptions import ValidationError

    if not validator.is_type(instance, "object"):
        return
    declared = schema.get("properties") or {}
    patterns = list(schema.get("patternProperties") or {})
    extras = [key for key in instance if key not in declared and not any(_search(pattern, key) for pattern in patterns)]
    if validator.is_type(extra_schema, "object"):
        for key in extras:
            yield from validator.descend(instance[key], extra_schema, path=key)
    elif extra_schema is False and extras:
        listed = ", ".join(repr(_cut(key)) for key in sorted(extras)[:10])
        more = f" and {len(extras) - 10} more" if len(extras) > 10 else ""
        verb = "was" if len(extras) == 1 else "were"
        yield ValidationError(f"Additional properties are not allowed ({listed}{more} {verb} unexpected)")


def _cut(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
