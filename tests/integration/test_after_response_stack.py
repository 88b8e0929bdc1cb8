"""Bookkeeping after the response, through the local stack's HTTP bridge (moto server, simulator): the
caller gets its answer while the ledger write is still queued, and the write lands afterwards."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest

from llm_gateway import after_response
from local.stack import LocalStack
from tests.support.accounting import ledger_items

pytestmark = pytest.mark.integration


@pytest.fixture
def thread_mode() -> Iterator[None]:
    after_response._reset_for_tests()
    assert after_response.install("thread") == "thread"
    yield
    assert after_response.wait_idle(30.0)
    after_response._reset_for_tests()


def ledger_records(local_stack: LocalStack, tenant: str) -> int:
    return len(ledger_items(local_stack, tenant))


def test_the_answer_does_not_wait_for_the_ledger_write(local_stack: LocalStack, simulator, thread_mode) -> None:
    assert local_stack.api_url is not None
    gate = threading.Event()

    async def hold() -> None:  # occupies the after-response thread, so the request's write queues behind it
        gate.wait(30)

    with after_response.scope("blocker"):
        assert after_response.current().defer(hold)
    before = ledger_records(local_stack, "tenant-a")
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Deferred ledger?"}]}
    with httpx.Client(base_url=local_stack.api_url, timeout=30) as client:
        response = client.post("/v1/chat/completions", json=body, headers={"x-api-key": "key-a"})
    assert response.status_code == 200, response.text
    assert ledger_records(local_stack, "tenant-a") == before  # answered; the write has not happened yet
    gate.set()
    assert after_response.wait_idle(30.0)
    assert ledger_records(local_stack, "tenant-a") == before + 1  # and then it landed, exactly once
