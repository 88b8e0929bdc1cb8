"""What the gateway-key check adds per request, over a moto server (real sockets, like the tests).

``python -m bench.keys_overhead [--n 500]``: per call, in-process, median/p95 of
* a verified-cache hit (hash + cache lookup + policy check: no I/O),
* a negative-cache hit (an unknown key seen within the negative TTL),
* a cache miss (one GetItem on the keys table),
* admitting a request under a requests/tokens-per-minute limit (one conditional UpdateItem),
* settling its tokens (one UpdateItem),
and the import + client setup a separate authorizer function would pay at each cold start (fresh
interpreter: import boto3 and the keys package, build the DynamoDB client), for the REQUEST-authorizer
comparison in docs/keys.md. Not part of ``make bench``; the figures go into docs/keys.md by hand.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from llm_gateway.config import Settings
from llm_gateway.errors import InvalidApiKeyError
from llm_gateway.keys import KeyService
from llm_gateway.keys.admin import KeyAdmin, KeySpec
from llm_gateway.keys.store import KeyStore

COLD_IMPORT = (
    "import time; t = time.perf_counter(); import boto3; from llm_gateway.keys import service; "
    "boto3.session.Session().client('dynamodb', region_name='us-east-1'); print(time.perf_counter() - t)"
)


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
    parser.add_argument("--n", type=int, default=500)
    args = parser.parse_args()

    import os

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log line per call
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://{host}:{port}",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    ddb = boto3.client("dynamodb")
    ddb.create_table(
        TableName="keys",
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "key_id", "AttributeType": "S"},
        ],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "KeyIdIndex",
                "KeySchema": [{"AttributeName": "key_id", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    )
    admin = KeyAdmin(KeyStore("keys"))
    secret, _ = admin.create(KeySpec(tenant="bench", requests_per_minute=1_000_000, tokens_per_minute=10**9))
    settings = Settings(keys_table="keys")
    headers = {"Authorization": f"Bearer {secret}"}

    warm = KeyService(settings)
    warm.authenticate(headers)
    results: dict[str, Any] = {"n": args.n}
    results["cache_hit"] = timed(lambda: warm.authenticate(headers), args.n)
    bad = {"x-api-key": "lgw_" + "x" * 43}
    with contextlib.suppress(InvalidApiKeyError):
        warm.authenticate(bad)

    def negative() -> None:
        with contextlib.suppress(InvalidApiKeyError):
            warm.authenticate(bad)

    results["negative_cache_hit"] = timed(negative, args.n)
    cold = KeyService(settings.model_copy(update={"key_cache_ttl_s": 0.0}))
    cold.authenticate(headers)
    results["cache_miss_getitem"] = timed(lambda: cold.authenticate(headers), args.n)
    verified = warm.authenticate(headers)
    admissions: list[Any] = []
    results["admit_conditional_update"] = timed(
        lambda: admissions.append(warm.admit(verified, "gpt-4o-mini", 500)), args.n
    )
    pending = iter(admissions)
    results["settle_update"] = timed(lambda: warm.settle(next(pending), 420), args.n)
    colds = []
    for _ in range(5):
        out = subprocess.run([sys.executable, "-c", COLD_IMPORT], capture_output=True, text=True, check=True)
        colds.append(float(out.stdout.strip()) * 1000)
    results["authorizer_init_import_ms_median_of_5"] = round(statistics.median(colds), 1)
    server.stop()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
