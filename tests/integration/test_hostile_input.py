"""Hostile bodies through the local stack's API bridge, on every POST route: values Python's json
accepts but JSON forbids, or that nothing downstream can encode, are a 400 ``invalid_request`` naming
the parameter (never a 500), and a body with 50,000 wrong values answers its 400 promptly."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from local.stack import LocalStack

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_real_aws")]

KEY = "key-a"  # tests/conftest.py: key-a -> tenant-a
V = "@V@"  # where the hostile literal goes, spliced in as raw JSON text

# route -> (a body template with the hostile value at one place, the param that place is)
ROUTES: dict[str, tuple[str, str]] = {
    "/v1/chat/completions": (
        '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": @V@}',
        "max_tokens",
    ),
    "/v1/completions": (
        '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "temperature": @V@}',
        "temperature",
    ),
    "/v1/extractions": (
        '{"text": "Ada", "schema": {"type": "object", "properties": {"n": {"type": "number", "maximum": @V@}}}}',
        "schema.properties.n.maximum",
    ),
    "/v1/summaries": ('{"text": "Some text.", "chunk_tokens": @V@}', "chunk_tokens"),
    "/v1/jobs": (
        '{"operation": "completion", "input": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": @V@}}',
        "input.max_tokens",
    ),
}
NUMBERS = {
    "overlong integer": "9" * 5000,
    "NaN": "NaN",
    "Infinity": "Infinity",
    "-Infinity": "-Infinity",
    "1e999": "1e999",
}
# route -> a body whose message (or document) text holds a lone surrogate, and where
SURROGATE: dict[str, tuple[str, str]] = {
    "/v1/chat/completions": (
        '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "a\\ud800b"}]}',
        "messages.0.content",
    ),
    "/v1/completions": (
        '{"messages": [{"role": "user", "content": [{"type": "text", "text": "\\udc00"}]}]}',
        "messages.0.content.0.text",
    ),
    "/v1/extractions": ('{"text": "Ada \\ud800", "schema": "entities"}', "text"),
    "/v1/summaries": ('{"text": "x", "focus": "\\udbff"}', "focus"),
    "/v1/jobs": ('{"operation": "extraction", "input": {"text": "\\ud800", "schema": "entities"}}', "input.text"),
}


@pytest.fixture
def api(local_stack: LocalStack) -> Iterator[httpx.Client]:
    assert local_stack.api_url
    with httpx.Client(base_url=local_stack.api_url, timeout=30, headers={"x-api-key": KEY}) as client:
        yield client


def _post(api: httpx.Client, path: str, raw: str) -> httpx.Response:
    return api.post(path, content=raw.encode("utf-8"), headers={"content-type": "application/json"})


def _assert_400_naming(response: httpx.Response, param: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert isinstance(error["message"], str) and error["message"]
    named = error.get("param") if "param" in error else error["details"]["param"]  # OpenAI route: top-level
    assert named == param


@pytest.mark.parametrize("literal", NUMBERS.values(), ids=list(NUMBERS))
@pytest.mark.parametrize("path", ROUTES)
def test_numbers_json_cannot_carry_are_400_on_every_route(api: httpx.Client, path: str, literal: str) -> None:
    template, param = ROUTES[path]
    _assert_400_naming(_post(api, path, template.replace(V, literal)), param)


@pytest.mark.parametrize("path", SURROGATE)
def test_lone_surrogates_are_400_on_every_route(api: httpx.Client, path: str) -> None:
    raw, param = SURROGATE[path]
    _assert_400_naming(_post(api, path, raw), param)


def test_fifty_thousand_wrong_values_answer_400_promptly(api: httpx.Client) -> None:
    body = json.dumps({"text": "x", "schema": "entities", "metadata": {f"k{i}": i for i in range(50_000)}})
    started = time.perf_counter()
    response = _post(api, "/v1/extractions", body)
    elapsed = time.perf_counter() - started
    assert response.status_code == 400, response.text[:500]
    details = response.json()["error"]["details"]
    assert details["error_count"] == 50_000 and len(details["errors"]) <= 20
    assert elapsed < 5.0, f"answered in {elapsed:.2f} s"  # over sockets on a shared machine; 30 s+ before
