"""What the gateway-key check adds to a warm request at the functions' edge, in-process.

``python -m bench.edge_keys [--n 1000]`` starts a local stack (moto server over sockets, simulator, no
bridge), creates keys in its keys table and times, per warm request, exactly what the edge now does
that it did not before, on the same proxy event the bridge builds:

* ``authenticate``: headers -> verified key through the per-sandbox cache (a hit after the first call);
* ``admit_no_limits``: the key's model policy (a key without per-minute limits: no I/O);
* ``admit_rpm``: the policy plus the conditional UpdateItem on the rate counter (keys with limits);
* ``handler``: the whole completion handler on that event (simulator latency 0), for scale.

Not part of ``make bench``; the figures go into docs/keys.md by hand.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any


def timed(fn: Callable[[], Any], n: int) -> dict[str, float]:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return {"p50_ms": round(statistics.median(samples), 4), "p95_ms": round(samples[int(0.95 * (n - 1))], 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    args = parser.parse_args()

    from bench.common import API_KEY, TENANT, apigw_event, chat_body, stdout_discarded
    from llm_gateway import wiring
    from llm_gateway.http import key_checks
    from llm_gateway.keys.admin import KeyAdmin, KeySpec
    from llm_gateway.keys.store import KeyStore
    from local.stack import LocalStack

    with LocalStack(port=0, api_keys={API_KEY: TENANT}, simulate=True, bridge=False, event_sources=False) as stack:
        admin = KeyAdmin(KeyStore(stack.physical["KeysTable"]))
        limited, _ = admin.create(KeySpec(tenant=TENANT, requests_per_minute=10**6, tokens_per_minute=10**9))
        event = apigw_event(stack, chat_body())
        limited_event = {**event, "headers": {**event["headers"], "x-api-key": limited}}
        current = wiring.services()
        verified = key_checks.authenticate(event, current)
        verified_limited = key_checks.authenticate(limited_event, current)
        models = ["gpt-4o-mini"]

        def handler() -> None:
            with stdout_discarded():
                answer = stack.invoke("completion", apigw_event(stack, chat_body()))
            assert answer["statusCode"] == 200, answer

        for _ in range(20):  # warm: imports, clients, the verified cache
            handler()
        results = {
            "authenticate": timed(lambda: key_checks.authenticate(event, current), args.n),
            "admit_no_limits": timed(lambda: key_checks.admit(verified, models, 100, current), args.n),
            "admit_rpm": timed(lambda: key_checks.admit(verified_limited, models, 100, current), args.n),
            "handler": timed(handler, max(50, args.n // 10)),
        }
    print(json.dumps({"n": args.n, **results}, indent=2))


if __name__ == "__main__":
    main()
