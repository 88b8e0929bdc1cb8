"""Framing under hostile bodies: validation costs linear time however many values are wrong, and
JSON Python accepts but JSON forbids (NaN, infinities, overlong integers, lone surrogates) is a 400
naming the parameter, never a 500."""

from __future__ import annotations

import json
import time

import pytest

from llm_gateway.errors import InvalidRequestError
from llm_gateway.http import framing as api
from llm_gateway.models import CompletionRequest
from llm_gateway.operations.extraction import ExtractionRequest


@pytest.mark.parametrize("count", [32_000, 50_000])  # 16-25 s and a 504 before the fix
def test_many_wrong_values_answer_400_in_linear_time(count: int) -> None:
    body = json.dumps({"text": "x", "schema": "entities", "metadata": {f"k{i}": i for i in range(count)}})
    started = time.perf_counter()
    with pytest.raises(InvalidRequestError) as info:
        api.validate(ExtractionRequest, api.parse_json_body(body, max_bytes=2_000_000))
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, f"{count} wrong values took {elapsed:.2f} s"
    details = info.value.details
    assert len(details["errors"]) == api.MAX_ERRORS
    assert details["error_count"] == count
    assert details["param"] == "metadata.k0"
    assert info.value.message.endswith(f"(and {count - 1} more)")


def test_union_noise_is_dropped_in_linear_time() -> None:
    # Each bad content part fails both union members; "not a string" is noise next to the deeper error.
    parts = [{"type": "text", "text": i} for i in range(20_000)]
    data = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": parts}]}
    started = time.perf_counter()
    with pytest.raises(InvalidRequestError) as info:
        api.validate(CompletionRequest, data)
    assert time.perf_counter() - started < 1.0
    params = [e["param"] for e in info.value.details["errors"]]
    assert "messages.0.content" not in params
    assert all(p.startswith("messages.0.content.") for p in params)


def test_few_errors_list_them_all_without_a_count() -> None:
    with pytest.raises(InvalidRequestError) as info:
        api.validate(CompletionRequest, {"messages": "nope", "max_tokens": "x"})
    details = info.value.details
    assert {e["param"] for e in details["errors"]} == {"messages", "max_tokens"}
    assert "error_count" not in details


@pytest.mark.parametrize(
    ("raw", "param", "words"),
    [
        ('{"max_tokens": ' + "9" * 5000 + "}", "max_tokens", "4300 digits"),
        ('{"max_tokens": -' + "9" * 4301 + "}", "max_tokens", "4300 digits"),
        ('{"temperature": NaN}', "temperature", "NaN is not valid JSON"),
        ('{"a": {"b": [1, Infinity]}}', "a.b.1", "Infinity is not valid JSON"),
        ('{"a": -Infinity}', "a", "-Infinity is not valid JSON"),
        ('{"schema": {"maximum": 1e999}}', "schema.maximum", "finite"),
        ('{"schema": {"maximum": -1e999}}', "schema.maximum", "finite"),
        ('{"messages": [{"role": "user", "content": "hi \\ud800 there"}]}', "messages.0.content", "lone surrogate"),
        ('{"metadata": {"\\udfff": "x"}}', "metadata.\\udfff", "lone surrogate"),
        ("NaN", "body", "NaN"),
    ],
)
def test_values_json_cannot_carry_are_400s_naming_the_param(raw: str, param: str, words: str) -> None:
    with pytest.raises(InvalidRequestError, match=words) as info:
        api.parse_json_body(raw, max_bytes=100_000)
    assert (info.value.http_status, info.value.code, info.value.details["param"]) == (400, "invalid_request", param)
    json.dumps(api.error_body(info.value), ensure_ascii=False).encode("utf-8")  # the answer itself encodes


def test_ordinary_numbers_and_strings_still_parse() -> None:
    raw = '{"a": 1e308, "b": -0.0, "c": ' + "9" * 4300 + ', "d": "caf\\u00e9 \\ud83d\\ude00", "e": 12}'
    data = api.parse_json_body(raw, max_bytes=100_000)
    assert data["a"] == 1e308 and data["c"] == int("9" * 4300) and data["d"] == "café 😀" and data["e"] == 12


def test_decoded_events_are_checked_too() -> None:
    # A direct invocation's event was decoded by Lambda's json, which accepts NaN.
    with pytest.raises(InvalidRequestError) as info:
        api.check_json_depth({"temperature": float("nan")}, what="the event")
    assert info.value.details["param"] == "temperature"
    with pytest.raises(InvalidRequestError) as info:
        api.check_json_depth({"messages": [{"content": "\udc80"}]}, what="the event")
    assert info.value.details["param"] == "messages.0.content"


def test_long_keys_are_cut_in_the_param() -> None:
    key = "k" * 10_000
    with pytest.raises(InvalidRequestError) as info:
        api.parse_json_body(json.dumps({key: float("nan")}), max_bytes=100_000)
    assert len(info.value.details["param"]) <= api.MAX_PARAM_PART_CHARS + 3
