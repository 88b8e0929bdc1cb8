"""The local stack runs concurrent invocations of one function on threads of one process; each must see only
its own request, as each Lambda sandbox does (Powertools keeps the request being resolved on its router)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from local.stack import LocalStack
from tests.support.sse import prompt

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_real_aws")]


def test_concurrent_requests_each_answer_with_their_own_request_id(local_stack: LocalStack, simulator) -> None:
    simulator.set_latency(150)  # every request is still waiting on the provider when the others arrive
    assert local_stack.api_url

    def one(_: int) -> tuple[str, str, int]:
        with httpx.Client(base_url=local_stack.api_url, timeout=60, headers={"x-api-key": "key-a"}) as client:
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt()}]}
            answer = client.post("/v1/completions", json=body)
            headers = answer.headers
            return headers.get("x-request-id", ""), headers.get("x-amzn-requestid", ""), answer.status_code

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(one, range(24)))
    assert [status for _, _, status in answers] == [200] * 24
    mixed = [(ours, api_gateway) for ours, api_gateway, _ in answers if ours != api_gateway]
    assert mixed == []
