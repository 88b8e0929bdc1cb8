"""A second gateway process for the quota tests: the same settings (from the environment the local stack
set up: moto, tables, simulator, deployments), its own quota tracker, requests sent straight to
``Gateway.complete``. Prints one JSON line: the deployments that served, and how many times the gateway
answered 429 itself (each waited out, then asked again).

``python -m tests.support.quota_peer`` with QUOTA_PEER_REQUESTS and QUOTA_PEER_CONCURRENCY.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections import Counter

from llm_gateway.errors import GatewayError
from llm_gateway.interfaces import RequestContext
from llm_gateway.models import CompletionRequest
from llm_gateway.routing.deadline import Deadline
from llm_gateway.wiring import services


async def main() -> dict[str, object]:
    total = int(os.environ.get("QUOTA_PEER_REQUESTS", "100"))
    gate = asyncio.Semaphore(int(os.environ.get("QUOTA_PEER_CONCURRENCY", "10")))
    gateway = services().gateway()
    served: Counter[str] = Counter()
    refused = 0

    async def one(index: int) -> None:
        nonlocal refused
        request = CompletionRequest.model_validate(
            {
                "model": "gpt-4o-mini",
                "fallback": [],
                "max_tokens": 16,
                "messages": [{"role": "user", "content": f"peer request {index}"}],
            }
        )
        async with gate:
            for _ in range(20):
                ctx = RequestContext(tenant="quota-peer", request_id=f"peer-{index}", deadline=Deadline(20))
                try:
                    result = await gateway.complete(request, ctx)
                except GatewayError as err:
                    if err.code != "rate_limited" or not err.retry_after:
                        raise
                    refused += 1
                    await asyncio.sleep(err.retry_after)
                    continue
                served[str(result.attempts[-1].deployment)] += 1
                return
            raise RuntimeError(f"peer request {index} was never served")

    await asyncio.gather(*(one(i) for i in range(total)))
    return {"served": dict(served), "gateway_429": refused}


if __name__ == "__main__":
    outcome = asyncio.run(main())
    sys.stdout.write(json.dumps(outcome) + "\n")
