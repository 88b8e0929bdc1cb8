"""Caller-supplied regular expressions run on RE2 (linear time) or are refused with invalid_schema."""

from __future__ import annotations

import time
from typing import Any

import pytest

from llm_gateway.errors import SchemaError
from llm_gateway.structured import patterns, schemas

EVIL = "^(a+)+$"  # exponential on Python's re against "aaaa…!"
HOSTILE_TEXT = "a" * 30 + "!"  # ~2^30 backtracking steps on Python's re (minutes); microseconds on RE2


def _object(**properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties}


def test_a_catastrophic_pattern_is_matched_in_linear_time() -> None:
    schema = schemas.check_schema(_object(a={"type": "string", "pattern": EVIL}))
    started = time.perf_counter()
    problems = schemas.validation_problems(schema, {"a": HOSTILE_TEXT})
    assert time.perf_counter() - started < 0.5
    assert [p["path"] for p in problems] == ["/a"] and "does not match" in problems[0]["message"]
    assert schemas.validation_problems(schema, {"a": "aaaa"}) == []


def test_pattern_properties_and_additional_properties_run_on_re2() -> None:
    schema = schemas.check_schema(
        {"type": "object", "patternProperties": {EVIL: {"type": "integer"}}, "additionalProperties": False}
    )
    started = time.perf_counter()
    problems = schemas.validation_problems(schema, {HOSTILE_TEXT * 100: 1, "aa": "x", "ok": 1})
    assert time.perf_counter() - started < 0.5
    messages = {p["path"]: p["message"] for p in problems}
    assert messages["/aa"] == "'x' is not of type 'integer'"
    assert "Additional properties are not allowed" in messages["/"] and "'ok'" in messages["/"]
    assert schemas.validation_problems(schema, {"aaa": 3}) == []


@pytest.mark.parametrize(
    ("schema", "keyword"),
    [
        (_object(a={"type": "string", "pattern": r"^(a)\1$"}), "pattern"),  # backreference
        (_object(a={"type": "string", "pattern": r"^(?=a)a$"}), "pattern"),  # lookahead
        (_object(a={"type": "array", "items": {"type": "string", "pattern": r"(?<!x)y"}}), "pattern"),
        ({"type": "object", "patternProperties": {r"(\w)\1": {}}}, "patternProperties"),
        (_object(a={"type": "string", "pattern": "a" * (patterns.MAX_PATTERN_CHARS + 1)}), "pattern"),
    ],
)
def test_patterns_re2_cannot_run_are_refused(schema: dict[str, Any], keyword: str) -> None:
    with pytest.raises(SchemaError, match="regular expression") as info:
        schemas.check_schema(schema)
    assert (info.value.http_status, info.value.code, info.value.details["keyword"]) == (400, "invalid_schema", keyword)


def test_unevaluated_properties_with_pattern_properties_is_refused() -> None:
    # jsonschema's unevaluatedProperties would run the patternProperties keys on Python's re.
    schema = {"type": "object", "patternProperties": {"^x": {}}, "unevaluatedProperties": False}
    with pytest.raises(SchemaError, match="unevaluatedProperties"):
        schemas.check_schema(schema)


def test_re2_does_not_write_the_pattern_to_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(patterns.UnsafePatternError):
        patterns.linear_pattern(r"(secret-pattern-text)\1")
    assert "secret-pattern-text" not in capfd.readouterr().err
