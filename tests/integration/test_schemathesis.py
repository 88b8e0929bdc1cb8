"""Schemathesis over the OpenAPI document the API serves, against the local stack's bridge: valid and
invalid requests generated from every operation's schema. No answer is a 5xx, and every error body is in
the documented shape. Fixed seed (``derandomize``), no shrinking, and a time box well under a minute."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from local.simulator import ProviderSimulator
from local.stack import LocalStack

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_real_aws")]

KEY = "key-b"  # tests/conftest.py: key-b -> tenant-b
EXAMPLES = 12  # per operation and generation mode
TIME_BOX_S = 35.0
CHAT = "/v1/chat/completions"


def error_shape_problem(path: str, body: Any) -> str | None:
    """What is wrong with an error body, or None: ``{"error": {"code", "message", "retryable", ...}}``."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return "no error object"
    if not isinstance(error.get("code"), str) or not error["code"]:
        return "no code"
    if not isinstance(error.get("message"), str) or not error["message"]:
        return "no message"
    if not isinstance(error.get("retryable"), bool):
        return "no retryable"
    if path == CHAT and not {"type", "param"} <= set(error):
        return "not OpenAI's shape on the chat route"
    return None


def fuzz(
    operation: Any,
    mode: schemathesis.GenerationMode,
    base_url: str,
    stop_at: float,
    tried: list[str],
    problems: list[str],
) -> None:
    """Up to EXAMPLES generated requests for one operation, checked as they are answered."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,  # the same cases every run
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure is reported as found
        suppress_health_check=list(HealthCheck),
    )
    def call(case: schemathesis.Case) -> None:
        if time.monotonic() > stop_at:
            return
        # Always a valid key: the functions' edge is under test here, not the API key check in front of it.
        case.headers = {**(case.headers or {}), "x-api-key": KEY}
        response = case.call(base_url=base_url, timeout=30)
        label = f"{case.method} {case.formatted_path} ({mode.value}) -> {response.status_code}"
        tried.append(label)
        if response.status_code >= 500:
            problems.append(f"{label}: {response.text[:300]}")
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = None
            if (problem := error_shape_problem(case.path, body)) is not None:
                problems.append(f"{label}: {problem}: {response.text[:300]}")

    call()


def test_generated_requests_get_no_5xx_and_errors_in_the_documented_shape(
    local_stack: LocalStack, simulator: ProviderSimulator
) -> None:
    served = httpx.get(f"{local_stack.api_url}/v1/openapi.json", headers={"x-api-key": KEY}, timeout=30)
    assert served.status_code == 200
    schema = schemathesis.openapi.from_dict(served.json())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == len([m for item in served.json()["paths"].values() for m in item])
    stop_at = time.monotonic() + TIME_BOX_S
    tried: list[str] = []
    problems: list[str] = []

    for operation in operations:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            fuzz(operation, mode, local_stack.api_url, stop_at, tried, problems)

    statuses = sorted({label.rsplit(" ", 1)[-1] for label in tried})
    print(f"schemathesis: {len(tried)} requests over {len(operations)} operations, statuses {statuses}")
    assert problems == [], "\n".join(problems[:20])
    assert len(tried) >= len(operations), tried  # every operation was exercised within the time box
