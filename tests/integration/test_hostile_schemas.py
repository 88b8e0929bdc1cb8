"""Caller-supplied patterns through the local stack: a catastrophic pattern against a long hostile answer
from the simulator answers promptly, and a pattern RE2 cannot run is refused up front, at submit for
``/v1/jobs`` (not retried five times)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from local.simulator import ProviderSimulator
from local.stack import LocalStack

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_real_aws")]

EVIL_SCHEMA = {
    "type": "object",
    "required": ["code"],
    "properties": {"code": {"type": "string", "pattern": "^(a+)+$"}},
}
HOSTILE_ANSWER = '{"code": "' + "a" * 40 + '!"}'  # 2^40 steps on Python's re


@pytest.fixture
def api(local_stack: LocalStack) -> Iterator[httpx.Client]:
    assert local_stack.api_url
    with httpx.Client(base_url=local_stack.api_url, timeout=30, headers={"x-api-key": "key-a"}) as client:
        yield client


def test_a_catastrophic_pattern_against_a_hostile_answer_fails_fast(
    api: httpx.Client, simulator: ProviderSimulator
) -> None:
    simulator.script("*", [HOSTILE_ANSWER] * 3)
    body = {"text": f"code {uuid.uuid4().hex}", "schema": EVIL_SCHEMA, "model": "gpt-4o-mini", "max_reasks": 2}
    started = time.perf_counter()
    response = api.post("/v1/extractions", json=body)
    elapsed = time.perf_counter() - started
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "extraction_failed"
    assert [p["path"] for p in error["details"]["errors"]] == ["/code"]
    assert elapsed < 5.0, f"took {elapsed:.1f} s"


@pytest.mark.parametrize("route", ["/v1/extractions", "/v1/jobs"])
def test_a_backtracking_only_pattern_is_refused_up_front(api: httpx.Client, route: str) -> None:
    schema = {"type": "object", "properties": {"code": {"type": "string", "pattern": r"^(\w+)-\1$"}}}
    extraction = {"text": "code ab-ab", "schema": schema}
    body = extraction if route == "/v1/extractions" else {"operation": "extraction", "input": extraction}
    response = api.post(route, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_schema"
    assert "linear time" in error["message"]
