"""Cache hit vs miss over the local stack's HTTP bridge, and what each costs in DynamoDB calls.

``python -m bench.cache_latency [--n 100] [--provider-ms 0,300]``. For each simulated provider latency,
sends N fresh deterministic requests (a miss) and repeats each (a hit) with the official ``openai``
client through the API bridge, and counts the DynamoDB operations the handler makes per hit and per
miss (botocore's ``before-call`` events on every client). Complements ``bench.run --parts cache``
(in-process handler, no HTTP) with the HTTP path, a breakdown per table, and a realistic provider delay.
Bookkeeping that runs after the response (cache fill, ledger) is awaited between requests, untimed, as a
Lambda sandbox finishes it before its next event; its DynamoDB calls are counted with the request.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

from bench.common import bookkeeping_done
from bench.stats import summarize


@contextlib.contextmanager
def dynamodb_ops() -> Iterator[Counter[str]]:
    """Counts "Operation@table" for every DynamoDB call made through botocore while active."""
    from botocore.endpoint import Endpoint

    calls: Counter[str] = Counter()
    lock = threading.Lock()
    original = Endpoint.make_request

    def counting(self: Any, operation_model: Any, request_dict: Any) -> Any:
        if operation_model.service_model.service_name == "dynamodb":
            body = json.loads(request_dict.get("body") or b"{}")
            table = body.get("TableName") or "+".join(
                sorted({next(iter(i.values()))["TableName"] for i in body.get("TransactItems", [])})
            )
            with lock:
                calls[f"{operation_model.name}@{table.rsplit('-', 1)[-1]}"] += 1
        return original(self, operation_model, request_dict)

    Endpoint.make_request = counting  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        Endpoint.make_request = original  # type: ignore[method-assign]


def measure(stack: Any, n: int, provider_ms: int) -> dict[str, Any]:
    import openai

    assert stack.simulator is not None and stack.api_url
    stack.simulator.set_latency(provider_ms)
    key = next(iter(stack.api_keys))
    client = openai.OpenAI(
        base_url=f"{stack.api_url}/v1", api_key="unused", default_headers={"x-api-key": key}, max_retries=0, timeout=30
    )
    run = uuid.uuid4().hex[:8]
    misses: list[float] = []
    hits: list[float] = []
    miss_ops: Counter[str] = Counter()
    hit_ops: Counter[str] = Counter()
    with dynamodb_ops() as ops:
        for i in range(n + 5):
            ask = {
                "model": "gpt-4o-mini",
                "temperature": 0,
                "messages": [{"role": "user", "content": f"Cache bench {run} #{i}: name a colour."}],
            }
            for samples, counted, expected in ((misses, miss_ops, "miss"), (hits, hit_ops, "hit")):
                before = Counter(ops)
                started = time.perf_counter()
                raw = client.chat.completions.with_raw_response.create(**ask)
                elapsed = (time.perf_counter() - started) * 1000.0
                bookkeeping_done()  # the cache fill and ledger write (after the response), as Lambda would
                if raw.headers.get("x-gateway-cache") != expected:
                    raise RuntimeError(f"expected a cache {expected}, got {raw.headers.get('x-gateway-cache')}")
                if i >= 5:  # the first rounds warm connections and per-instance caches
                    samples.append(elapsed)
                    counted.update(Counter(ops) - before)
    return {
        "provider_ms": provider_ms,
        "miss_ms": summarize(misses),
        "hit_ms": summarize(hits),
        "dynamodb_per_miss": {op: round(c / len(misses), 2) for op, c in sorted(miss_ops.items())},
        "dynamodb_per_hit": {op: round(c / len(hits), 2) for op, c in sorted(hits and hit_ops.items())},
    }


def main(argv: list[str] | None = None) -> int:
    from local.stack import LocalStack

    parser = argparse.ArgumentParser(prog="python -m bench.cache_latency", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="miss/hit pairs per provider latency")
    parser.add_argument("--provider-ms", default="0,300", help="simulated provider latencies, comma-separated")
    parser.add_argument("--budget-usd", type=float, help="give the tenant a daily budget (adds reserve/settle)")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # keep the handlers' per-request log lines out of the report
    results = []
    # A fresh stack per latency: moto copies a whole table for every transaction, so a grown usage
    # table would slow later rounds down (real DynamoDB does not).
    for latency in (int(x) for x in args.provider_ms.split(",")):
        with LocalStack(port=0, simulate=True, api_keys={"bench-cache-key": "bench-cache-tenant"}) as stack:
            if args.budget_usd is not None:
                from llm_gateway.accounting.budgets import DynamoDBBudgetGuard

                guard = DynamoDBBudgetGuard(stack.physical["UsageTable"])
                guard.set_policy("bench-cache-tenant", args.budget_usd, "day")
            results.append(measure(stack, args.n, latency))
    for r in results:
        print(
            f"provider {r['provider_ms']:>4} ms: miss p50 {r['miss_ms']['p50']:.1f} ms (p90 {r['miss_ms']['p90']:.1f}),"
            f" hit p50 {r['hit_ms']['p50']:.1f} ms (p90 {r['hit_ms']['p90']:.1f})"
        )
        print(f"  DynamoDB per miss: {r['dynamodb_per_miss']}")
        print(f"  DynamoDB per hit:  {r['dynamodb_per_hit']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
