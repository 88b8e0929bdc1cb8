"""The local stack paces a function's invocations like Lambda paces a sandbox: an invocation starts only
once the after-response work (cache fill, ledger) of the function's earlier invocations is done, so a
sequential repeat of a deterministic request is a cache hit, as on Lambda."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from llm_gateway import after_response
from local.simulator import ProviderSimulator
from local.stack import LocalStack

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_real_aws")]


@pytest.fixture
def thread_mode() -> Iterator[None]:
    """Bookkeeping after the response on a background thread, as under ``make run``."""
    after_response._reset_for_tests()
    assert after_response.install("thread") == "thread"
    yield
    assert after_response.wait_idle(30.0)
    after_response._reset_for_tests()


def deterministic_chat() -> dict[str, object]:
    prompt = f"Repeat me exactly: {uuid.uuid4().hex}"
    return {"model": "gpt-4o-mini", "temperature": 0, "messages": [{"role": "user", "content": prompt}]}


def test_a_sequential_repeat_is_a_cache_hit(
    local_stack: LocalStack, simulator: ProviderSimulator, thread_mode: None
) -> None:
    assert local_stack.api_url is not None
    body = deterministic_chat()
    simulator.clear_calls()
    with httpx.Client(base_url=local_stack.api_url, timeout=30, headers={"x-api-key": "key-a"}) as client:
        first = client.post("/v1/chat/completions", json=body)
        second = client.post("/v1/chat/completions", json=body)  # at once: no sleep between them
    assert first.status_code == second.status_code == 200, (first.text, second.text)
    assert first.headers["x-gateway-cache"] == "miss"
    assert second.headers["x-gateway-cache"] == "hit"
    assert len(simulator.calls("openai")) == 1
    assert second.json()["choices"][0]["message"]["content"] == first.json()["choices"][0]["message"]["content"]


def test_an_invocation_waits_for_its_functions_pending_work_only(local_stack: LocalStack, thread_mode: None) -> None:
    """Work deferred by one function holds that function's next invocation, not another function's."""
    gate = threading.Event()
    started: dict[str, float] = {}

    def deferring(event: object, context: object) -> dict[str, object]:
        async def held() -> None:
            gate.wait(30)

        with after_response.scope("deferring") as deferral:
            assert deferral.defer(held)
        return {"statusCode": 200, "body": "{}"}

    def recording(name: str):  # type: ignore[no-untyped-def]
        def handler(event: object, context: object) -> dict[str, object]:
            started[name] = time.monotonic()
            return {"statusCode": 200, "body": "{}"}

        return handler

    local_stack.handler_overrides["SummarizationFunction"] = deferring
    local_stack.invoke("SummarizationFunction", {})  # returns at once; its work is still held
    local_stack.handler_overrides["ExtractionFunction"] = recording("other function")
    local_stack.invoke("ExtractionFunction", {})
    assert "other function" in started  # not held by another function's work

    local_stack.handler_overrides["SummarizationFunction"] = recording("same function")
    waiter = threading.Thread(target=local_stack.invoke, args=("SummarizationFunction", {}))
    waiter.start()
    time.sleep(0.5)
    assert "same function" not in started  # held until the earlier invocation's work is done
    released = time.monotonic()
    gate.set()
    waiter.join(10)
    assert started["same function"] >= released
