"""Structured output in memory: lenient JSON, schema checks, and the bounded reask loop on a real Gateway."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from llm_gateway.catalog import default_catalog
from llm_gateway.errors import (
    AllProvidersFailedError,
    ExtractionFailedError,
    RateLimitedError,
    SchemaError,
    SchemaNotFoundError,
)
from llm_gateway.gateway import Gateway
from llm_gateway.interfaces import RequestContext
from llm_gateway.models import (
    Attempt,
    CacheControl,
    CompletionRequest,
    CompletionResult,
    Message,
    ProviderRequest,
    ProviderResponse,
    Usage,
)
from llm_gateway.routing.deadline import Deadline
from llm_gateway.routing.retry import RetryPolicy
from llm_gateway.routing.router import Router
from llm_gateway.structured.gemini import UntranslatableSchema, gemini_schema
from llm_gateway.structured.lenient_json import LenientJsonError, parse_json_lenient, without_trailing_commas
from llm_gateway.structured.reask import ReaskPolicy, complete_structured, reask_messages
from llm_gateway.structured.schemas import (
    MAX_SCHEMA_BYTES,
    check_schema,
    named_schema,
    schema_names,
    validation_problems,
)
from llm_gateway.structured.strict import drop_added_nulls, is_strict, strict_form

PERSON = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "age"],
    "properties": {"name": {"type": "string"}, "age": {"type": ["integer", "null"]}},
}

# --------------------------------------------------------------------------- lenient JSON


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ('  \ufeff{"a": 1}\n', {"a": 1}),
        ('```json\n{"a": [1, 2]}\n```', {"a": [1, 2]}),
        ('```\n{"a": 1}\n```', {"a": 1}),
        ('Here is the result:\n```json\n{"a": "b"}\n```\nHope this helps!', {"a": "b"}),
        ('Sure! {"a": {"b": "}"}} is the answer.', {"a": {"b": "}"}}),
        ('{"a": [1, 2,], "b": {"c": 3,},}', {"a": [1, 2], "b": {"c": 3}}),
        ('The JSON: {"x": "a, ]", "y": [1,\n  ],\n}', {"x": "a, ]", "y": [1]}),
        ('"{\\"a\\": 1}"', {"a": 1}),  # JSON-encoded inside a string
        ("[1, 2]", [1, 2]),
    ],
)
def test_lenient_parsing_reads_what_the_model_meant(text: str, expected: Any) -> None:
    assert parse_json_lenient(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('answer: ["x"] then {"a": 1}', {"a": 1}),
        ('Tags ["a", "b"], and the record:\n```json\n{"a": 1}\n```', {"a": 1}),
        ('"note" first, then {"a": [1, {"b": 2}]}', {"a": [1, {"b": 2}]}),
        ('[{"a": 1}, {"a": 2}]', [{"a": 1}, {"a": 2}]),  # an array answer is not mined for an element
        ('[[1], [2], [3], [4], [5], [6], [7], [8], [9]] and {"a": 1}', {"a": 1}),  # elements don't use up tries
        ('["x"]', ["x"]),  # no object anywhere: the first value, for a precise reask
    ],
)
def test_lenient_parsing_prefers_an_object_when_one_is_wanted(text: str, expected: Any) -> None:
    assert parse_json_lenient(text, prefer_object=True) == expected


def test_without_preference_the_first_value_wins() -> None:
    assert parse_json_lenient('answer: ["x"] then {"a": 1}') == ["x"]


def test_trailing_comma_removal_leaves_strings_alone() -> None:
    assert without_trailing_commas('{"s": "x,}", "t": [1,]}') == '{"s": "x,}", "t": [1]}'


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("I cannot find any data in this document.", "no JSON object"),
        ('{"a": 1, "b": ', "not valid JSON"),  # cut off
        ('{"a": 1 "b": 2}', "not valid JSON"),
    ],
)
def test_lenient_parsing_explains_failures(text: str, fragment: str) -> None:
    with pytest.raises(LenientJsonError, match=fragment):
        parse_json_lenient(text)


# --------------------------------------------------------------------------- schema checks


def test_shipped_schemas_are_valid_and_already_in_strict_form() -> None:
    assert {"entities", "invoice", "contact"} <= set(schema_names())
    for name in ("entities", "invoice", "contact"):
        schema = {k: v for k, v in named_schema(name).items() if k != "$schema"}
        assert schema["type"] == "object"
        assert is_strict(schema), name


def test_unknown_and_malformed_schema_names() -> None:
    with pytest.raises(SchemaNotFoundError) as missing:
        named_schema("nope")
    assert missing.value.http_status == 404 and "invoice" in missing.value.details["schemas"]
    with pytest.raises(SchemaError):
        named_schema("../catalog")


def _nested(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"x": schema}}
    return schema


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        (["not", "an", "object"], "must be a JSON object"),
        ({"type": "objekt"}, "not a valid JSON Schema"),
        ({"type": "object", "properties": {"a": {"type": "string", "minLength": -1}}}, "not a valid JSON Schema"),
        ({"type": "array", "items": {"type": "string"}}, "root must be"),
        (_nested(20), "nests 21 levels deep"),
        ({"type": "object", "description": "x" * (MAX_SCHEMA_BYTES + 1)}, "bytes; the limit"),
        ({"type": "object", "properties": {"a": {"$ref": "https://example.com/s.json"}}}, "only local references"),
        ({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}, "points nowhere"),
        (
            {
                "type": "object",
                "properties": {"node": {"$ref": "#/$defs/node"}},
                "$defs": {"node": {"type": "object", "properties": {"child": {"$ref": "#/$defs/node"}}}},
            },
            "recursive",
        ),
        (
            {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(301)}},
            "301 properties",
        ),
    ],
)
def test_bad_schemas_are_refused_with_a_reason(schema: Any, fragment: str) -> None:
    with pytest.raises(SchemaError, match=fragment) as caught:
        check_schema(schema)
    assert caught.value.http_status == 400 and caught.value.code == "invalid_schema"


def test_hostile_nesting_is_refused_without_recursing() -> None:
    deep: dict[str, Any] = {}
    for _ in range(5_000):
        deep = {"a": deep}
    with pytest.raises(SchemaError, match="nested more than"):
        check_schema({"type": "object", "description": deep})


def test_strict_form_leaves_a_strict_schema_alone_and_refuses_what_it_cannot_rewrite() -> None:
    assert strict_form(PERSON) == PERSON
    with_min_length = {**PERSON, "properties": {**PERSON["properties"], "name": {"type": "string", "minLength": 1}}}
    with_uri = {**PERSON, "properties": {**PERSON["properties"], "name": {"type": "string", "format": "uri"}}}
    free_map = {
        "type": "object",
        "properties": {"tags": {"type": "object", "additionalProperties": {"type": "string"}}},
    }
    anything = {"type": "object", "properties": {"x": {"description": "any value"}}}
    one_of = {"type": "object", "properties": {"x": {"oneOf": [{"type": "string"}, {"type": "integer"}]}}}
    for schema in (with_min_length, with_uri, free_map, anything, one_of):
        assert strict_form(schema) is None, schema


def test_strict_form_closes_objects_and_makes_optional_properties_nullable() -> None:
    loose = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "default": "?"},
            "age": {"type": "integer"},
            "kind": {"enum": ["a", "b"]},
            "home": {"$ref": "#/$defs/place"},
            "pets": {"type": "array", "items": {"type": "object", "properties": {"n": {"type": "string"}}}},
        },
        "required": ["name"],
        "$defs": {"place": {"type": "object", "properties": {"city": {"type": ["string", "null"]}}}},
    }
    strict = strict_form(loose)
    assert strict is not None and loose["required"] == ["name"]  # the caller's schema is not touched
    assert list(strict["properties"]) == list(loose["properties"])  # key order is answer order
    assert strict["additionalProperties"] is False and strict["required"] == list(loose["properties"])
    props = strict["properties"]
    assert props["name"] == {"type": "string"}  # required: not nullable; "default" is refused by strict mode
    assert props["age"] == {"type": ["integer", "null"]}
    assert props["kind"] == {"anyOf": [{"enum": ["a", "b"]}, {"type": "null"}]}
    assert props["home"] == {"anyOf": [{"$ref": "#/$defs/place"}, {"type": "null"}]}
    [pets, null] = props["pets"]["anyOf"]  # objects and arrays: an anyOf with null, not a type list
    assert null == {"type": "null"} and pets["type"] == "array"
    assert pets["items"] == {
        "type": "object",
        "properties": {"n": {"type": ["string", "null"]}},
        "required": ["n"],
        "additionalProperties": False,
    }
    place = strict["$defs"]["place"]
    assert place["additionalProperties"] is False and place["properties"]["city"] == {"type": ["string", "null"]}


def _object_chain(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"x": schema}, "required": ["x"], "additionalProperties": False}
    return schema


def test_strict_form_respects_openai_limits() -> None:
    assert strict_form(_object_chain(10)) is not None
    assert strict_form(_object_chain(11)) is None  # more than 10 levels of nesting
    array_levels = {"type": "object", "properties": {"x": {"type": "array", "items": _object_chain(9)}}}
    assert strict_form(array_levels) is None  # arrays count as levels too
    many = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(5_001)}}
    assert strict_form(many) is None


def test_added_nulls_are_dropped_before_validation_and_allowed_nulls_kept() -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer"},
            "note": {"type": ["string", "null"]},
            "home": {"$ref": "#/$defs/place"},
            "pets": {"type": "array", "items": {"type": "object", "properties": {"n": {"type": "string"}}}},
        },
        "required": ["name"],
        "$defs": {"place": {"type": "object", "properties": {"city": {"type": "string"}}}},
    }
    answer = {"name": "Ada", "age": None, "note": None, "home": {"city": None}, "pets": [{"n": None}, {"n": "Rex"}]}
    cleaned = drop_added_nulls(schema, answer)
    assert cleaned == {"name": "Ada", "note": None, "home": {}, "pets": [{}, {"n": "Rex"}]}
    assert validation_problems(schema, cleaned) == []
    # A null for a required property is a real mistake: it stays, and validation says so.
    assert drop_added_nulls(schema, {"name": None}) == {"name": None}
    assert validation_problems(schema, {"name": None})[0]["path"] == "/name"


def test_an_optional_field_left_null_under_strict_mode_costs_no_reask() -> None:
    optional_age = {**PERSON, "required": ["name"], "properties": {**PERSON["properties"], "age": {"type": "integer"}}}
    provider = Replies("openai", ['{"name": "Ada", "age": null}'])
    result = asyncio.run(
        complete_structured(gateway_with(provider), request(), ctx(), schema=optional_age, name="person")
    )
    assert result.asks == 1 and result.data == {"name": "Ada"}


# --------------------------------------------------------------------------- Gemini's dialect


def _gemini(schema: dict[str, Any]) -> dict[str, Any]:
    return gemini_schema({"type": "object", "properties": {"x": schema}})["properties"]["x"]


def test_shipped_schemas_translate_for_gemini_without_unsupported_formats() -> None:
    for name in ("entities", "invoice", "contact"):
        translated = json.dumps(gemini_schema(named_schema(name)))
        assert '"format"' not in translated and "additionalProperties" not in translated
        assert "$ref" not in translated and '"type": [' not in translated
    invoice = gemini_schema(named_schema("invoice"))
    assert invoice["properties"]["issue_date"] == {
        "type": "string",
        "nullable": True,
        "description": "Date of issue, YYYY-MM-DD. (format: date)",
    }
    assert invoice["properties"]["seller"]["propertyOrdering"] == ["name", "address", "tax_id"]
    assert invoice["propertyOrdering"] == list(named_schema("invoice")["properties"])


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "string", "format": "date-time"}, {"type": "string", "format": "date-time"}),
        ({"type": "string", "format": "email"}, {"type": "string", "description": "format: email"}),
        ({"const": "fixed"}, {"type": "string", "enum": ["fixed"]}),
        ({"const": 3}, {"type": "integer", "description": "exactly 3"}),
        ({"type": "integer", "enum": [1, 2]}, {"type": "integer", "description": "one of: 1, 2"}),
        ({"enum": ["a", "b", None]}, {"type": "string", "enum": ["a", "b"], "nullable": True}),
        (
            {"type": ["string", "number"], "description": "id"},
            {"anyOf": [{"type": "string"}, {"type": "number"}], "description": "id"},
        ),
        ({"type": ["integer", "null"], "minimum": 0}, {"type": "integer", "minimum": 0, "nullable": True}),
        ({"anyOf": [{"type": "string"}, {"type": "null"}]}, {"type": "string", "nullable": True}),
        (
            {"oneOf": [{"type": "string"}, {"type": "integer"}]},
            {"anyOf": [{"type": "string"}, {"type": "integer"}]},
        ),
        (
            {"allOf": [{"type": "object", "properties": {"a": {"type": "string"}}}, {"required": ["a"]}]},
            {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"], "propertyOrdering": ["a"]},
        ),
        (
            {"type": "string", "pattern": "^[A-Z]+$", "maxLength": 3},
            {"type": "string", "description": "matching the pattern ^[A-Z]+$; at most 3 characters"},
        ),
    ],
)
def test_gemini_translation_keeps_what_the_subset_can_say(schema: dict[str, Any], expected: dict[str, Any]) -> None:
    assert _gemini(schema) == expected


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object"},  # free-form object
        {"type": "object", "properties": {}, "additionalProperties": {"type": "string"}},
        {"description": "anything"},
        {"type": "array"},  # no items schema
        {"type": "null"},
        {"enum": ["a", 1]},  # mixed types
        {"allOf": [{"type": "string"}, {"type": "integer"}]},  # nothing in common
    ],
)
def test_gemini_translation_refuses_what_the_subset_cannot_say(schema: dict[str, Any]) -> None:
    with pytest.raises(UntranslatableSchema):
        _gemini(schema)


def test_validation_problems_name_the_path() -> None:
    assert validation_problems(PERSON, {"name": "Ada", "age": None}) == []
    problems = validation_problems(PERSON, {"name": 7, "extra": True})
    paths = {p["path"] for p in problems}
    assert "/name" in paths and "/" in paths  # wrong type; missing 'age' and the unexpected key at the root
    assert any("age" in p["message"] for p in problems)
    dated = {"type": "object", "properties": {"d": {"type": "string", "format": "date"}}}
    assert validation_problems(dated, {"d": "March 3rd"})[0]["path"] == "/d"


# --------------------------------------------------------------------------- the reask loop


class Replies:
    """An in-memory provider answering from a script; records the wire requests."""

    def __init__(self, name: str, replies: list[str | Exception], usage: Usage | None = None) -> None:
        self.name = name
        self.replies = list(replies)
        self.usage = usage or Usage(input_tokens=1_000, output_tokens=100)
        self.calls: list[ProviderRequest] = []
        self.on_call: Callable[[], None] = lambda: None

    async def complete(self, request: ProviderRequest, *, client: Any, timeout_s: float) -> ProviderResponse:
        self.calls.append(request)
        self.on_call()
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return ProviderResponse(content=reply, finish_reason="stop", usage=self.usage)


class Ledger:
    def __init__(self) -> None:
        self.attempts: list[Attempt] = []

    async def record(self, ctx: RequestContext, attempt: Attempt) -> None:
        self.attempts.append(attempt)


class DictCache:
    """Keyed on what the real cache keys on (messages, format, model): enough to observe store/lookup."""

    def __init__(self) -> None:
        self.entries: dict[str, CompletionResult] = {}
        self.stores: list[CompletionRequest] = []

    @staticmethod
    def key(request: CompletionRequest) -> str:
        return request.model_dump_json(include={"messages", "response_format", "model", "temperature"})

    async def lookup(self, ctx: RequestContext, request: CompletionRequest) -> CompletionResult | None:
        if request.cache and request.cache.no_cache:
            return None
        hit = self.entries.get(self.key(request))
        return hit.model_copy(update={"attempts": [], "cost_usd": 0.0}) if hit else None

    async def store(self, ctx: RequestContext, request: CompletionRequest, result: CompletionResult) -> None:
        if request.cache and request.cache.no_store:
            return
        self.stores.append(request)
        self.entries[self.key(request)] = result


async def _no_sleep(_: float) -> None:
    return None


def gateway_with(provider: Replies, *, cache: DictCache | None = None, ledger: Ledger | None = None) -> Gateway:
    catalog = default_catalog()
    return Gateway(
        catalog=catalog,
        router=Router(catalog, [provider.name], auto_fallback=False),
        providers={provider.name: provider},  # type: ignore[dict-item]
        client=lambda: None,  # type: ignore[arg-type, return-value]
        retry=RetryPolicy(max_attempts=2, sleep=_no_sleep),
        cache=cache,
        usage=ledger,
    )


def ctx(seconds: float = 30.0) -> RequestContext:
    return RequestContext(tenant="t", request_id="r", deadline=Deadline(seconds), operation="extraction")


def request(**kw: Any) -> CompletionRequest:
    kw.setdefault("messages", [{"role": "system", "content": "Extract."}, {"role": "user", "content": "Ada, 36"}])
    kw.setdefault("model", "gpt-4o-mini")
    kw.setdefault("max_tokens", 500)
    return CompletionRequest.model_validate(kw)


def run(gateway: Gateway, req: CompletionRequest, policy: ReaskPolicy | None = None, **kw: Any) -> Any:
    return asyncio.run(complete_structured(gateway, req, kw.pop("ctx", None) or ctx(), schema=PERSON, policy=policy))


COST_PER_CALL = (1_000 * 0.15 + 100 * 0.60) / 1e6  # gpt-4o-mini at the scripted usage


def test_valid_first_answer_is_one_ask_at_temperature_zero_with_the_schema() -> None:
    provider = Replies("openai", ['{"name": "Ada", "age": 36}'])
    result = run(gateway_with(provider), request(temperature=0.9))
    assert result.data == {"name": "Ada", "age": 36} and result.asks == 1
    wire = provider.calls[0]
    assert wire.temperature == 0.0 and wire.native_structured
    assert wire.response_format is not None and wire.response_format.json_schema == PERSON
    assert result.cost_usd == pytest.approx(COST_PER_CALL)


def test_malformed_then_invalid_then_valid_reasks_with_the_errors_and_counts_everything() -> None:
    provider = Replies(
        "openai",
        [
            "Sorry, here you go: {name: Ada}",  # not JSON
            '```json\n{"name": 36, "age": "old",}\n```',  # JSON (leniently), wrong types
            '{"name": "Ada", "age": 36}',
        ],
    )
    ledger = Ledger()
    result = run(gateway_with(provider, ledger=ledger), request(), ReaskPolicy(max_reasks=2))
    assert result.data == {"name": "Ada", "age": 36}
    assert result.asks == 3 and len(result.attempts) == 3 == len(ledger.attempts)
    assert result.cost_usd == pytest.approx(3 * COST_PER_CALL)
    assert result.usage.input_tokens == 3_000
    original = provider.calls[0].messages
    second, third = provider.calls[1].messages, provider.calls[2].messages
    # Each reask: the original messages + the last bad answer + its errors, never the whole history.
    assert len(second) == len(third) == len(original) + 2
    assert second[:2] == third[:2] == original
    assert second[-2].role == "assistant" and "{name: Ada}" in second[-2].text()
    assert "not valid JSON" in second[-1].text()
    assert third[-2].text().startswith("```json") and "/name" in third[-1].text() and "/age" in third[-1].text()
    assert "Ada, 36" not in second[-1].text()


def test_an_array_before_the_object_costs_no_reask() -> None:
    provider = Replies("openai", ['Tags: ["x"]. The record: {"name": "Ada", "age": 36}'])
    result = run(gateway_with(provider), request())
    assert result.asks == 1 and result.data == {"name": "Ada", "age": 36}


def test_reasks_exhausted_raise_422_with_the_last_errors_and_all_attempts() -> None:
    provider = Replies("openai", ['{"name": 1}', '{"name": 2}'])
    with pytest.raises(ExtractionFailedError) as caught:
        run(gateway_with(provider), request(), ReaskPolicy(max_reasks=1))
    err = caught.value
    assert err.http_status == 422 and err.code == "extraction_failed"
    assert err.details["reason"] == "max_reasks" and err.details["asks"] == 2
    assert {p["path"] for p in err.details["errors"]} >= {"/name"}
    assert len(err.attempts) == 2 and err.details["cost_usd"] == pytest.approx(2 * COST_PER_CALL)
    assert len(provider.calls) == 2


def test_no_reask_when_the_token_budget_would_be_exceeded() -> None:
    provider = Replies("openai", ['{"name": 1}', '{"name": "Ada", "age": 1}'])
    with pytest.raises(ExtractionFailedError) as caught:
        run(gateway_with(provider), request(), ReaskPolicy(max_reasks=3, token_budget=1_200))
    assert caught.value.details["reason"] == "token_budget"
    assert len(provider.calls) == 1  # 1,100 tokens spent; another ask would not fit in 1,200


class Countdown(Deadline):
    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.left = seconds

    def remaining(self) -> float:
        return self.left


def test_no_reask_without_time_left() -> None:
    deadline = Countdown(30.0)
    provider = Replies("openai", ['{"name": 1}', '{"name": "Ada", "age": 1}'])
    provider.on_call = lambda: setattr(deadline, "left", 0.2)  # the first ask used up the time
    slow_ctx = RequestContext(tenant="t", request_id="r", deadline=deadline)
    with pytest.raises(ExtractionFailedError) as caught:
        run(gateway_with(provider), request(), ReaskPolicy(max_reasks=3), ctx=slow_ctx)
    assert caught.value.details["reason"] == "deadline"
    assert len(provider.calls) == 1


def test_provider_errors_carry_the_attempts_of_earlier_asks() -> None:
    limited = RateLimitedError("429", retry_after=0)
    provider = Replies("openai", ['{"name": 1}', limited, limited])
    with pytest.raises(AllProvidersFailedError) as caught:
        run(gateway_with(provider), request(), ReaskPolicy(max_reasks=2))
    assert caught.value.code == "rate_limited"
    assert [a.outcome for a in caught.value.attempts] == ["success", "error", "error"]


def test_only_validated_answers_are_cached_under_the_first_ask() -> None:
    cache = DictCache()
    provider = Replies("openai", ['{"name": 1}', '{"name": "Ada", "age": 36}'])
    first = run(gateway_with(provider, cache=cache), request())
    assert first.asks == 2 and not first.cached
    assert len(cache.stores) == 1 and len(cache.stores[0].messages) == 2  # the first ask, not the reask
    stored = next(iter(cache.entries.values()))
    assert json.loads(stored.content) == {"name": "Ada", "age": 36}
    again = run(gateway_with(provider, cache=cache), request())
    assert again.cached and again.data == first.data and again.cost_usd == 0 and again.attempts == []
    assert len(provider.calls) == 2  # the repeat called nothing


def test_no_store_is_honoured() -> None:
    cache = DictCache()
    provider = Replies("openai", ['{"name": "Ada", "age": 36}'])
    run(gateway_with(provider, cache=cache), request(cache=CacheControl(no_store=True)))
    assert cache.entries == {}


def test_reask_messages_are_bounded() -> None:
    policy = ReaskPolicy(max_echo_chars=100, max_listed_errors=2)
    problems = [{"path": f"/p{i}", "message": "bad"} for i in range(5)]
    messages = reask_messages([Message(role="user", content="doc")], "x" * 10_000, problems, policy)
    assert len(messages) == 3
    assert len(messages[1].text()) < 120
    assert "/p0" in messages[2].text() and "/p2" not in messages[2].text() and "3 more" in messages[2].text()


def test_inline_schema_names_come_from_a_usable_title_only() -> None:
    from llm_gateway.operations.extraction import resolve_schema

    assert resolve_schema({**PERSON, "title": "person"})[0] == "person"
    assert resolve_schema({**PERSON, "title": "Persön lichkeit"})[0] == "extraction"  # providers refuse it
    assert resolve_schema("contact") == ("contact", named_schema("contact"))
