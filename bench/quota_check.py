"""What the quota check adds per request (issue 19): ``python -m bench.run --parts quota``.

One local stack (moto server, provider simulator); three gateways built from the same settings, called
in-process in interleaved rounds (each round calls all three, in a rotating order, so drift hits them
alike) with a unique prompt each (no cache):

* ``off``: no quota tracking (``GATEWAY_QUOTA_BACKEND=off``), the reference;
* ``declared``: one OpenAI deployment with declared RPM/TPM (far above what the run sends): a
  conditional UpdateItem per request, the token correction after the answer, the shared view read;
* ``headers``: tracking on, no declared limits (today's single-key setup): only the view read.

Latency is the time until ``Gateway.complete`` returns (what the caller waits for); after-response work
(the token correction) is run after the clock stops, as on Lambda, and its store calls are counted.
No ledger, budgets or cache in any variant: only the quota check differs. "added" is the median of
the per-round differences against ``off``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.common import AwsCallCounter, progress
from bench.stats import median, summarize

LIMITS = {"rpm": 10_000_000, "tpm": 10_000_000_000}


def run(n: int = 300, warmup: int = 30) -> dict[str, Any]:
    from local.stack import LocalStack

    progress(f"quota: {n} interleaved rounds of off / declared limits / headers only (in-process)")
    with LocalStack(port=0, api_keys={"bench-key": "bench"}, simulate=True, event_sources=False, bridge=False):
        return asyncio.run(_measure(n, warmup))


async def _measure(n: int, warmup: int) -> dict[str, Any]:
    from llm_gateway.after_response import Deferral
    from llm_gateway.config import Settings
    from llm_gateway.interfaces import RequestContext
    from llm_gateway.models import CompletionRequest
    from llm_gateway.routing.deadline import Deadline
    from llm_gateway.wiring import build_gateway

    base = {k: v for k, v in os.environ.items() if k not in ("USAGE_TABLE", "CACHE_TABLE", "KEYS_TABLE")}
    base |= {"GATEWAY_CACHE_BACKEND": "off", "GATEWAY_BREAKER_BACKEND": "off", "GATEWAY_AUTO_FALLBACK": "false"}
    declared = json.dumps([{"id": "openai", "provider": "openai", **LIMITS}])
    settings = {
        "off": Settings.from_env({**base, "GATEWAY_QUOTA_BACKEND": "off"}),
        "declared": Settings.from_env({**base, "GATEWAY_DEPLOYMENTS": declared}),
        "headers": Settings.from_env(base),
    }
    gateways = {name: build_gateway(s) for name, s in settings.items()}
    samples: dict[str, list[float]] = {name: [] for name in gateways}
    calls = {name: AwsCallCounter() for name in gateways}

    class AfterResponse(Deferral):
        def defer(self, work: Callable[[], Awaitable[None]]) -> bool:
            self.pending.append(work)
            return True

    async def one(name: str, index: int) -> float:
        request = CompletionRequest.model_validate(
            {"model": "gpt-4o-mini", "max_tokens": 16, "messages": [{"role": "user", "content": f"q{index} {name}"}]}
        )
        later = AfterResponse(later=True)
        ctx = RequestContext(tenant="bench", request_id=f"{name}-{index}", deadline=Deadline(20), defer=later)
        with calls[name].active():
            started = time.perf_counter()
            await gateways[name].complete(request, ctx)
            elapsed = (time.perf_counter() - started) * 1000
            for work in later.pending:
                await work()
        return elapsed

    order = list(gateways)
    for index in range(warmup + n):
        order = order[1:] + order[:1]
        for name in order:
            elapsed = await one(name, index)
            if index >= warmup:
                samples[name].append(elapsed)
            else:
                calls[name].calls.clear()
    added = {
        name: median([mine - ref for mine, ref in zip(samples[name], samples["off"], strict=True)])
        for name in ("declared", "headers")
    }
    store_calls = {
        name: {op: round(count / n, 3) for op, count in sorted(counter.snapshot().items()) if op.startswith("dynamodb")}
        for name, counter in calls.items()
    }
    return {
        "n": n,
        "latency_ms": {name: summarize(values) for name, values in samples.items()},
        "added_p50_ms": {name: round(value, 3) for name, value in added.items()},
        "store_calls_per_request": store_calls,
    }
