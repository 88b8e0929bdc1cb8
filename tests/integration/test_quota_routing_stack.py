"""Quota-aware routing over the local stack: two OpenAI deployments of ``gpt-4o-mini`` (two keys) with
60 requests per (short) window each, declared to the gateway and enforced by the simulator; the official
``openai`` client through the API bridge; a second gateway process on the same moto server.

The figures of the 200-request runs are printed (``-s`` shows them) for the README and reports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from local.simulator import ProviderSimulator
from local.stack import LocalStack
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
WINDOW_S = 8.0  # the quota "minute": 60 requests per 8 s per deployment, less than the stack can send
RPM = 60
KEYS = {"openai": "sim-key-a", "openai-b": "sim-key-b"}
API_KEY = "quota-key"


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    deployments = [{"id": d, "provider": "openai", "rpm": RPM} for d in KEYS]
    overrides = {
        "GATEWAY_DEPLOYMENTS": json.dumps(deployments),
        "GATEWAY_DEPLOYMENT_KEYS": json.dumps(KEYS),
        "GATEWAY_QUOTA_WINDOW": str(WINDOW_S),
        # A call reserved this close to a window's end counts in the next one too. The default (0.25 s) is the
        # time from the reservation to the provider's receipt on Lambda; 20 client threads and a moto server
        # on a loaded 2-core machine can take longer, and then one call lands in the simulator's next window.
        "GATEWAY_QUOTA_BOUNDARY_GUARD": "1.0",
        "GATEWAY_QUOTA_BACKEND": "dynamodb",
        "GATEWAY_BREAKER_BACKEND": "off",
        "GATEWAY_CACHE_BACKEND": "off",
        "GATEWAY_AUTO_FALLBACK": "false",  # the two deployments of one model, nothing else
    }
    with LocalStack(
        port=0,
        api_keys={API_KEY: "quota-tenant"},
        simulate=True,
        event_sources=True,
        env_overrides=overrides,
        stack_name="llm-gateway-quotas",  # moto servers in one process share their state: names of its own
    ) as started:
        yield started


@pytest.fixture
def sim(stack: LocalStack) -> Iterator[ProviderSimulator]:
    """The stack's simulator, and quota state, fresh for each test."""
    assert stack.simulator is not None
    stack.simulator.reset()
    _clear_quota_table(stack)
    from llm_gateway import wiring

    wiring.reset()  # a fresh tracker: nothing remembered from the previous test
    yield stack.simulator


def _clear_quota_table(stack: LocalStack) -> None:
    ddb, table = stack.client("dynamodb"), stack.physical["QuotaTable"]
    for page in ddb.get_paginator("scan").paginate(TableName=table):
        for item in page.get("Items", []):
            ddb.delete_item(TableName=table, Key={"pk": item["pk"], "sk": item["sk"]})


def set_quotas(sim: ProviderSimulator, rpm: dict[str, int], window_s: float) -> None:
    """Quotas on the simulator, started just before one of the gateway's windows starts (both count
    fixed windows; the gateway's boundary guard covers the few milliseconds between them)."""
    now = time.time()
    boundary = (now // WINDOW_S + 1) * WINDOW_S
    time.sleep(max(0.0, boundary - 0.01 - now))
    for deployment, limit in rpm.items():
        sim.set_quota(KEYS[deployment], rpm=limit, window_s=window_s)
    time.sleep(max(0.0, boundary - time.time()))


def client(stack: LocalStack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.api_url}/v1", api_key=API_KEY, max_retries=0, timeout=30)


def ask(api: openai.OpenAI, index: int, **extra: Any) -> Any:
    return api.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": f"request {index}"}],
        max_tokens=16,
        **extra,
    )


def until_served(api: openai.OpenAI, index: int, refusals: Counter[str]) -> str:
    """Ask until answered; the gateway's own 429s are counted and waited out (their Retry-After)."""
    for _ in range(20):
        try:
            answer = ask(api, index)
        except openai.RateLimitError as err:
            refusals["gateway_429"] += 1
            time.sleep(float(err.response.headers["retry-after"]))
            continue
        return str(answer.model_extra["x_gateway"]["attempts"][-1]["deployment"])
    raise AssertionError(f"request {index} was never served")


def sim_figures(sim: ProviderSimulator) -> dict[str, dict[str, int]]:
    stats = sim.quota_stats()
    return {d: stats.get(key, {"requests": 0, "refused": 0, "rate_limited": 0}) for d, key in KEYS.items()}


def test_200_requests_at_concurrency_20_never_overrun_either_deployment(
    stack: LocalStack, sim: ProviderSimulator
) -> None:
    set_quotas(sim, {"openai": RPM, "openai-b": RPM}, WINDOW_S)
    api, refusals = client(stack), Counter[str]()
    started = time.monotonic()
    with ThreadPoolExecutor(20) as pool:
        served = Counter(pool.map(lambda i: until_served(api, i, refusals), range(200)))
    wall_s = time.monotonic() - started
    figures = sim_figures(sim)
    print(
        f"\nquota run: served {dict(served)}, gateway 429s {refusals['gateway_429']}, simulator {figures}, "
        f"wall {wall_s:.1f} s"
    )
    assert sum(served.values()) == 200
    assert all(f["refused"] == 0 and f["rate_limited"] == 0 for f in figures.values())  # no 429 reached it
    assert {d: f["requests"] for d, f in figures.items()} == dict(served)
    assert all(abs(n - 100) <= 10 for n in served.values()), served  # within 10 % of even


def test_two_gateway_processes_share_the_quota(stack: LocalStack, sim: ProviderSimulator) -> None:
    set_quotas(sim, {"openai": RPM, "openai-b": RPM}, WINDOW_S)
    env = {**os.environ, "QUOTA_PEER_REQUESTS": "100", "QUOTA_PEER_CONCURRENCY": "10"}
    peer = subprocess.Popen(
        [sys.executable, "-m", "tests.support.quota_peer"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    api, refusals = client(stack), Counter[str]()
    started = time.monotonic()
    with ThreadPoolExecutor(10) as pool:
        here = Counter(pool.map(lambda i: until_served(api, i, refusals), range(100)))
    out, err = peer.communicate(timeout=120)
    wall_s = time.monotonic() - started
    assert peer.returncode == 0, err[-2000:]
    there = json.loads(out.strip().splitlines()[-1])
    served = here + Counter(there["served"])
    figures = sim_figures(sim)
    print(
        f"\ntwo processes: this one {dict(here)} ({refusals['gateway_429']} gateway 429s), the other "
        f"{there['served']} ({there['gateway_429']} gateway 429s), simulator {figures}, wall {wall_s:.1f} s"
    )
    assert sum(served.values()) == 200
    assert all(f["refused"] == 0 and f["rate_limited"] == 0 for f in figures.values())
    assert all(abs(n - 100) <= 10 for n in served.values()), served


def test_a_deployment_whose_headers_say_none_left_is_not_called_before_its_reset(
    stack: LocalStack, sim: ProviderSimulator
) -> None:
    # The provider allows openai-b one request per 30 s, far less than the 60 declared to the gateway:
    # only its headers can tell.
    sim.set_quota(KEYS["openai-b"], rpm=1, window_s=30)
    api = client(stack)
    served = Counter(str(ask(api, i).model_extra["x_gateway"]["attempts"][-1]["deployment"]) for i in range(12))
    assert served == Counter({"openai": 11, "openai-b": 1})
    figures = sim_figures(sim)
    assert (figures["openai-b"]["requests"], figures["openai-b"]["refused"]) == (1, 0)


def test_every_deployment_exhausted_is_a_429_with_retry_after_and_no_provider_call(
    stack: LocalStack, sim: ProviderSimulator
) -> None:
    sim.set_quota(KEYS["openai"], rpm=1, window_s=20)
    sim.set_quota(KEYS["openai-b"], rpm=1, window_s=20)
    api = client(stack)
    assert {str(ask(api, i).model_extra["x_gateway"]["attempts"][-1]["deployment"]) for i in range(2)} == set(KEYS)
    calls_before = len(sim.calls("openai"))
    with pytest.raises(openai.RateLimitError) as raised:
        ask(api, 3)
    assert raised.value.status_code == 429
    body = raised.value.response.json()
    assert body["error"]["code"] == "rate_limited"
    assert 1 <= int(raised.value.response.headers["retry-after"]) <= 20
    assert len(sim.calls("openai")) == calls_before  # answered by the gateway itself
    assert all(f["refused"] == 0 for f in sim_figures(sim).values())


def test_streams_use_the_same_selection(stack: LocalStack, sim: ProviderSimulator) -> None:
    api = client(stack)
    used = []
    for i in range(4):
        chunks = list(
            api.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": f"stream {i}"}],
                max_tokens=16,
                stream=True,
            )
        )
        assert chunks
        used.append(sim.calls("openai")[-1]["deployment"])
    assert sorted(Counter(used).values()) == [2, 2]  # two keys (deployments), two streams each


def test_a_job_whose_deployments_are_all_exhausted_waits_on_the_queue_until_the_reset(
    stack: LocalStack, sim: ProviderSimulator
) -> None:
    sim.set_quota(KEYS["openai"], rpm=1, window_s=6)
    sim.set_quota(KEYS["openai-b"], rpm=1, window_s=6)
    reset_at = time.time() + 6
    api = client(stack)
    for i in range(2):  # one each: both say "0 left" until the reset
        ask(api, i)
    with httpx.Client(base_url=stack.api_url or "", timeout=30) as http:
        headers = {"x-api-key": API_KEY}
        submitted = http.post(
            "/v1/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "later, please"}]},
            headers={**headers, "Prefer": "respond-async"},
        )
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]
        seen: list[dict[str, Any]] = []

        def finished() -> dict[str, Any] | None:
            job = http.get(f"/v1/jobs/{job_id}", headers=headers).json()
            seen.append(job)
            return job if job["status"] in ("succeeded", "failed") else None

        job = wait_for(finished, timeout=40, what="the job finished")
    assert job["status"] == "succeeded", job
    waiting = [j for j in seen if j["status"] == "retrying"]
    assert waiting and waiting[0]["last_error"]["code"] == "rate_limited"
    # Scheduled for the reset (JOB_BACKOFF_BASE would be 15-30 s), and run then.
    assert reset_at - 0.5 <= waiting[0]["next_attempt_at"] <= reset_at + 3
    assert reset_at - 0.5 <= job["finished_at"] <= reset_at + 8
    assert all(f["refused"] == 0 for f in sim_figures(sim).values())  # no provider call before the reset
    assert sum(f["requests"] for f in sim_figures(sim).values()) == 3


def test_usage_groups_attempts_by_deployment(stack: LocalStack, sim: ProviderSimulator) -> None:
    api = client(stack)
    for i in range(6):
        ask(api, 1000 + i)
    with httpx.Client(base_url=stack.api_url or "", timeout=30) as http:
        report = http.get("/v1/usage", headers={"x-api-key": API_KEY}).json()
    today = {(row["deployment"], row["date"]): row for row in report["deployments"]}
    per_deployment = Counter()
    for (deployment, _), row in today.items():
        per_deployment[deployment] += row["attempts"]
    assert set(per_deployment) == set(KEYS)
    # This module's earlier tests count too: every attempt of the tenant is on one of the two.
    assert sum(per_deployment.values()) == sum(row["attempts"] for row in report["days"])
