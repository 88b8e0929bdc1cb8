"""Property-based fuzzing of every route through the local stack's bridge (Hypothesis, fixed seed,
time-boxed): valid-ish bodies with fields swapped for odd values, and hostile ones (deep nesting, huge
arrays, odd types, strings and numbers, bodies that are not JSON). Whatever comes in: no 5xx, every
error body is ``{"error": {"code", "message"}}``, every answer within a bounded time.

Prints the figures: bodies tried, 5xx seen, slowest answer."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from local.stack import LocalStack

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_real_aws")]

EXAMPLES = 600
SLOWEST_ALLOWED_S = 10.0  # over sockets on a shared 2-core machine; gateway work is far below this
POST_ROUTES = ["/v1/chat/completions", "/v1/completions", "/v1/extractions", "/v1/summaries", "/v1/jobs"]

# ------------------------------------------------------------------ values

ODD_STRINGS = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "\u202e\u0301",
        "\U0001d518\U0001d52b\U0001d526",
        "\ufeff",
        "tier:",
        "tier:best",
        "gpt-4o-mini",
        "../../etc",
        "%2F",
        "a" * 5000,
    ]
)
STRINGS = st.one_of(st.text(max_size=40), ODD_STRINGS)
NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, -1, 1, 16, 2**31, 2**63, 1e308, -0.0, 0.5]),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, STRINGS)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(STRINGS, children, max_size=4),
    max_leaves=12,
)
MESSAGE = st.fixed_dictionaries(
    {
        "role": st.one_of(st.sampled_from(["user", "system", "assistant", "tool", "developer"]), VALUES),
        "content": st.one_of(STRINGS, VALUES, st.just([{"type": "text", "text": "hi"}])),
    }
)
SCHEMA = st.one_of(
    st.sampled_from(["entities", "invoice", "contact", "no-such", "Invoice!", ""]),
    st.just({"type": "object", "properties": {"a": {"type": "string", "pattern": "^(a+)+$"}}}),
    st.just({"type": "object", "properties": {"a": {"type": "string", "pattern": "(x)\\1"}}}),
    st.just({"type": "array"}),
    VALUES,
)


def _maybe(strategy: st.SearchStrategy[Any], odd: st.SearchStrategy[Any] = VALUES) -> st.SearchStrategy[Any]:
    return st.one_of(strategy, odd)


def _body(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Some of the route's fields, each either plausible or odd, plus the odd unknown field."""
    return st.fixed_dictionaries({}, optional={**fields, "zz_unknown": VALUES})


CHAT = _body(
    {
        "model": _maybe(st.sampled_from(["gpt-4o-mini", "tier:fast", "claude-3-5-haiku-latest", "nope"])),
        "messages": _maybe(st.lists(MESSAGE, min_size=1, max_size=3)),
        "max_tokens": _maybe(st.integers(1, 64)),
        "temperature": _maybe(st.sampled_from([0, 0.5, 2])),
        "response_format": _maybe(st.sampled_from([{"type": "json_object"}, {"type": "text"}])),
        "stream": VALUES,
        "tools": VALUES,
    }
)
EXTRACTION = _body(
    {
        "text": _maybe(st.text(min_size=1, max_size=60)),
        "s3": _maybe(st.fixed_dictionaries({"key": st.sampled_from(["incoming/tenants/tenant-b/x.md", "x", ""])})),
        "schema": SCHEMA,
        "max_reasks": _maybe(st.integers(0, 5)),
        "metadata": _maybe(st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3)),
        "model": _maybe(st.sampled_from(["gpt-4o-mini", "tier:fast"])),
    }
)
SUMMARY = _body(
    {
        "text": _maybe(st.text(min_size=1, max_size=200)),
        "length": _maybe(st.sampled_from([{"sentences": 1}, {"words": 10}, {"sentences": 0}, {"words": -1}])),
        "style": _maybe(st.sampled_from(["paragraph", "bullets", "haiku"])),
        "strategy": _maybe(st.sampled_from(["auto", "stuff", "map_reduce", "refine", "magic"])),
        "chunk_tokens": VALUES,
        "focus": STRINGS,
    }
)
JOB = _body(
    {
        "operation": _maybe(st.sampled_from(["completion", "extraction", "summarization", "nope"])),
        "input": st.one_of(CHAT, EXTRACTION, VALUES),
    }
)
BODIES = {
    "/v1/chat/completions": CHAT,
    "/v1/completions": CHAT,
    "/v1/extractions": EXTRACTION,
    "/v1/summaries": SUMMARY,
    "/v1/jobs": JOB,
}

# Valid bodies whose free text is anything Hypothesis can think of: these go all the way through.
TEXT = st.text(min_size=1, max_size=300).filter(lambda t: t.strip() != "")
VALID = {
    "/v1/chat/completions": st.fixed_dictionaries(
        {
            "model": st.sampled_from(["gpt-4o-mini", "claude-3-5-haiku-latest", "tier:fast"]),
            "messages": st.lists(
                st.fixed_dictionaries({"role": st.just("user"), "content": TEXT}), min_size=1, max_size=2
            ),
            "max_tokens": st.integers(1, 64),
        }
    ),
    "/v1/extractions": st.fixed_dictionaries(
        {"text": TEXT, "schema": st.sampled_from(["entities", "invoice", "contact"])}
    ),
    "/v1/summaries": st.fixed_dictionaries({"text": TEXT, "length": st.just({"sentences": 1})}),
}
VALID["/v1/completions"] = VALID["/v1/chat/completions"]

# ------------------------------------------------------------------ hostile raw bodies

HOSTILE_LITERALS = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "9" * 5000, '"\\ud800"', '"\\udfff x"', "1E400"]


@st.composite
def hostile_raw(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["deep", "wide", "literal", "keys", "garbage", "big_string"]))
    if kind == "deep":
        depth = draw(st.sampled_from([99, 101, 500, 20_000]))
        inner = draw(st.sampled_from(["[", '{"a":']))
        close = "]" if inner == "[" else "}"
        return '{"messages": ' + inner * depth + "1" + close * depth + "}"
    if kind == "wide":
        count = draw(st.sampled_from([10_000, 50_000]))
        item = draw(st.sampled_from(["1", '"x"', "{}", "null", '{"role": 1}']))
        field_name = draw(st.sampled_from(["messages", "metadata_list", "fallback", "stop"]))
        return (
            json.dumps({"text": "x", "schema": "entities"})[:-1]
            + f', "{field_name}": ['
            + ",".join([item] * count)
            + "]}"
        )
    if kind == "literal":
        literal = draw(st.sampled_from(HOSTILE_LITERALS))
        where = draw(st.sampled_from(["max_tokens", "temperature", "text", "input", "length"]))
        return '{"messages": [{"role": "user", "content": "hi"}], "text": "t", "' + where + '": ' + literal + "}"
    if kind == "keys":
        count = draw(st.sampled_from([1_000, 30_000]))
        return "{" + ",".join(f'"k{i}": {i}' for i in range(count)) + "}"
    if kind == "big_string":
        return json.dumps({"text": "é" * draw(st.sampled_from([100_000, 600_000])), "schema": "entities"})
    return draw(st.one_of(st.text(max_size=100), st.sampled_from(["", "null", "[]", "1", '"x"', "{", "{}}", "\x00"])))


# ------------------------------------------------------------------ the property


@dataclass
class Figures:
    tried: int = 0
    five_xx: list[str] = field(default_factory=list)
    slowest_s: float = 0.0
    slowest: str = ""
    statuses: dict[int, int] = field(default_factory=dict)
    api_gateway_answers: int = 0  # answered by API Gateway (the bridge) itself, before any function


@pytest.fixture
def api(local_stack: LocalStack) -> Iterator[httpx.Client]:
    assert local_stack.api_url
    with httpx.Client(base_url=local_stack.api_url, timeout=60, headers={"x-api-key": "key-a"}) as client:
        yield client


REQUESTS = st.one_of(
    st.sampled_from(sorted(VALID)).flatmap(
        lambda path: st.tuples(st.just("POST"), st.just(path), VALID[path].map(lambda b: json.dumps(b)))
    ),
    st.tuples(st.just("POST"), st.sampled_from(POST_ROUTES)).flatmap(
        lambda m: st.tuples(st.just(m[0]), st.just(m[1]), BODIES[m[1]].map(lambda b: json.dumps(b)))
    ),
    st.tuples(st.just("POST"), st.sampled_from(POST_ROUTES), hostile_raw()),
    st.tuples(st.just("GET"), st.just("/v1/jobs/"), STRINGS),
    st.tuples(st.just("GET"), st.just("/v1/usage"), st.tuples(STRINGS, STRINGS).map(json.dumps)),
)


def _send(api: httpx.Client, method: str, path: str, payload: str) -> httpx.Response:
    if method == "POST":
        return api.post(
            path, content=payload.encode("utf-8", "surrogatepass"), headers={"content-type": "application/json"}
        )
    if path == "/v1/jobs/":
        return api.get(path + quote(payload, safe=""))
    first, last = json.loads(payload)
    return api.get(path, params={"from": first, "to": last})


def test_no_body_gets_a_5xx_or_a_malformed_error(api: httpx.Client) -> None:
    figures = Figures()

    @seed(20261204)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(request=REQUESTS)
    def one(request: tuple[str, str, str]) -> None:
        method, path, payload = request
        started = time.perf_counter()
        response = _send(api, method, path, payload)
        elapsed = time.perf_counter() - started
        figures.tried += 1
        figures.statuses[response.status_code] = figures.statuses.get(response.status_code, 0) + 1
        if elapsed > figures.slowest_s:
            figures.slowest_s, figures.slowest = elapsed, f"{method} {path} {payload[:80]!r}"
        if response.status_code >= 500:
            figures.five_xx.append(f"{response.status_code} {method} {path} {payload[:200]!r} -> {response.text[:300]}")
            return
        if response.status_code >= 400 and "x-request-id" not in response.headers:
            # No function ran (no route, e.g. an empty job id): the answer is API Gateway's own, shaped
            # like the functions' by the template's gateway responses (and the bridge, locally).
            figures.api_gateway_answers += 1
        if response.status_code >= 400:
            error = response.json().get("error")
            assert isinstance(error, dict), response.text[:300]
            assert isinstance(error.get("code"), str) and error["code"], response.text[:300]
            assert isinstance(error.get("message"), str) and error["message"], response.text[:300]
        assert elapsed < SLOWEST_ALLOWED_S, f"{elapsed:.1f} s for {method} {path} {payload[:100]!r}"

    one()
    print(
        f"\nfuzz: {figures.tried} bodies tried, {len(figures.five_xx)} 5xx seen, slowest answer "
        f"{figures.slowest_s * 1000:.0f} ms ({figures.slowest}); statuses {dict(sorted(figures.statuses.items()))}; "
        f"{figures.api_gateway_answers} answered by API Gateway itself"
    )
    assert figures.five_xx == []
