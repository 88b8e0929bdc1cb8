"""Part 3: cache hit vs miss, and the backend calls a hit costs.

Each round sends a fresh deterministic request (temperature 0, unique prompt) to the completion handler
in-process (API Gateway event in, response out, AWS backends on the local moto server): the first call
is a miss, the same request again should be a hit. Backend calls are counted while the hit runs:
provider calls from the simulator's log, AWS calls by wrapping botocore's ``Endpoint.make_request``
(every boto3 client, whatever its session, sends through it).
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from typing import TYPE_CHECKING, Any

from bench.common import (
    AwsCallCounter,
    MotoTimer,
    apigw_event,
    bookkeeping_done,
    chat_body,
    progress,
    stdout_discarded,
)
from bench.stats import summarize

if TYPE_CHECKING:
    from local.stack import LocalStack


def _invoke(
    stack: LocalStack, body: dict[str, Any], moto: MotoTimer | None = None
) -> tuple[float, float, str, dict[str, Any]]:
    """(latency ms, moto server ms within it, x-gateway-cache, body); after-response work is then awaited."""
    event = apigw_event(stack, body)
    moto_before = moto.total_ms if moto is not None else 0.0
    started = time.perf_counter()
    result = stack.invoke("completion", event)
    elapsed = (time.perf_counter() - started) * 1000.0
    in_moto = (moto.total_ms if moto is not None else 0.0) - moto_before
    bookkeeping_done()
    if result.get("statusCode") != 200:
        raise RuntimeError(f"cache bench: statusCode {result.get('statusCode')}: {str(result.get('body'))[:300]}")
    headers = {k.lower(): str(v) for k, v in (result.get("headers") or {}).items()}
    for name, values in (result.get("multiValueHeaders") or {}).items():  # Powertools answers with these
        headers[name.lower()] = str(values[-1]) if values else ""
    return elapsed, in_moto, headers.get("x-gateway-cache", ""), json.loads(result["body"])


def run(stack: LocalStack, *, moto: MotoTimer | None = None, n: int = 100, budget_s: float = 90.0) -> dict[str, Any]:
    assert stack.simulator is not None
    simulator = stack.simulator
    simulator.set_latency(0)
    simulator.clear_calls()  # keep the call log short: it is read around every hit
    misses: list[float] = []
    hits: list[float] = []
    misses_moto: list[float] = []  # moto server time within each miss / hit
    hits_moto: list[float] = []
    provider_calls_per_hit: list[int] = []
    aws_calls_per_hit: list[int] = []
    aws_ops_on_hit: Counter[str] = Counter()
    aws_ops_on_miss: Counter[str] = Counter()
    not_hit = 0
    counter = AwsCallCounter()
    deadline = time.monotonic() + budget_s
    run_id = uuid.uuid4().hex[:8]
    with counter.active(), stdout_discarded():
        _invoke(stack, chat_body(prompt=f"warm-up {run_id}", temperature=0.0))
        for i in range(n):
            if time.monotonic() > deadline:
                progress(f"cache: time budget spent after {i} rounds")
                break
            body = chat_body(prompt=f"Cache benchmark {run_id} #{i}: name a colour.", temperature=0.0)
            before = counter.snapshot()
            miss_ms, miss_moto, _, _ = _invoke(stack, body, moto)
            misses_moto.append(miss_moto)
            aws_ops_on_miss += counter.snapshot() - before
            misses.append(miss_ms)
            provider_before = len(simulator.calls())
            before = counter.snapshot()
            hit_ms, hit_moto, second_state, _ = _invoke(stack, body, moto)
            aws_delta = counter.snapshot() - before
            if second_state != "hit":
                not_hit += 1
                continue
            hits.append(hit_ms)
            hits_moto.append(hit_moto)
            provider_calls_per_hit.append(len(simulator.calls()) - provider_before)
            aws_calls_per_hit.append(sum(aws_delta.values()))
            aws_ops_on_hit += aws_delta
    result: dict[str, Any] = {
        "rounds": len(misses),
        "cache_configured": bool(hits),
        "second_request_not_a_hit": not_hit,
        "miss_ms": summarize(misses) if misses else None,
        "hit_ms": summarize(hits) if hits else None,
    }
    if hits:
        rounds = len(hits)
        result["provider_calls_per_hit"] = sum(provider_calls_per_hit) / rounds
        result["aws_calls_per_hit"] = sum(aws_calls_per_hit) / rounds
        result["aws_ops_per_hit"] = {op: count / rounds for op, count in sorted(aws_ops_on_hit.items())}
        result["aws_ops_per_miss"] = {op: count / len(misses) for op, count in sorted(aws_ops_on_miss.items())}
        result["hit_over_miss_p50"] = result["hit_ms"]["p50"] / result["miss_ms"]["p50"]
        if moto is not None and moto.available:
            result["miss_excl_moto_ms"] = summarize([t - m for t, m in zip(misses, misses_moto, strict=True)])
            result["hit_excl_moto_ms"] = summarize([t - m for t, m in zip(hits, hits_moto, strict=True)])
    return result
