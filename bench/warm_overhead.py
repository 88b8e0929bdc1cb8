"""Part 2: warm overhead. The same request, sequentially, down each path to the same provider simulator.

Paths (simulator latency 0, keep-alive clients, all on 127.0.0.1):

* ``direct``   -- httpx straight to the simulator's OpenAI endpoint: the baseline;
* ``bridge``   -- our local API Gateway stand-in -> completion handler -> simulator;
* ``handler``  -- the completion handler called in-process with an API Gateway event (AWS backends local);
* ``bridge_excl_moto``, ``handler_excl_moto`` -- the same samples less the time the moto server spent
  answering within each (moto is not DynamoDB: it deep-copies a table per transaction, for one);
* ``core``     -- as ``handler`` with the AWS backends switched off (the gateway's own cost);
* ``litellm``  -- a LiteLLM proxy pointed at the simulator.

Each round sends one request down every path in a rotating order (drift hits all alike). Added latency
at a percentile is that path's percentile minus the direct path's, from the same rounds.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from bench.common import (
    API_KEY,
    CHAT_PATH,
    AwsCallCounter,
    MotoTimer,
    apigw_event,
    bookkeeping_done,
    chat_body,
    progress,
    stdout_discarded,
)
from bench.litellm_proxy import LiteLLMProxy
from bench.stats import added, ratio, summarize

if TYPE_CHECKING:
    from local.stack import LocalStack

REQUEST_TIMEOUT_S = 10.0
Call = Callable[[], None]


def _check(response: httpx.Response, path: str) -> None:
    if response.status_code != 200:
        raise RuntimeError(f"{path}: HTTP {response.status_code}: {response.text[:300]}")
    if not response.json()["choices"][0]["message"]["content"]:
        raise RuntimeError(f"{path}: empty completion")


def _http_call(client: httpx.Client, url: str, body: dict[str, Any], headers: dict[str, str], name: str) -> Call:
    def call() -> None:
        _check(client.post(url, json=body, headers=headers), name)

    return call


def _handler_call(stack: LocalStack, body: dict[str, Any], name: str) -> Call:
    def call() -> None:
        event = apigw_event(stack, body)
        result = stack.invoke("completion", event)
        if result.get("statusCode") != 200:
            raise RuntimeError(f"{name}: statusCode {result.get('statusCode')}: {str(result.get('body'))[:300]}")

    return call


def _rounds(
    paths: dict[str, Call], *, n: int, warmup: int, budget_s: float, moto: MotoTimer | None = None
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """(latency samples per path, moto server time within each of those samples), in ms."""
    names = list(paths)
    for _ in range(warmup):
        for name in names:
            paths[name]()
            bookkeeping_done()
    samples: dict[str, list[float]] = {name: [] for name in names}
    in_moto: dict[str, list[float]] = {name: [] for name in names}
    deadline = time.monotonic() + budget_s
    for i in range(n):
        if time.monotonic() > deadline:
            progress(f"warm overhead: time budget spent after {i} rounds")
            break
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            moto_before = moto.total_ms if moto is not None else 0.0
            started = time.perf_counter()
            paths[name]()
            samples[name].append((time.perf_counter() - started) * 1000.0)
            in_moto[name].append((moto.total_ms if moto is not None else 0.0) - moto_before)
            bookkeeping_done()  # after the sample: the caller already has its answer
    return samples, in_moto


def _aws_calls(call: Call, *, count: int) -> dict[str, float]:
    """AWS API calls one warm request makes, by operation (each is a network round trip on Lambda)."""
    counter = AwsCallCounter()
    with counter.active(), stdout_discarded():
        for _ in range(count):
            call()
            bookkeeping_done()  # counted too: deferred or not, each call is a round trip
    per_op = {op: n / count for op, n in sorted(counter.snapshot().items())}
    return {"total": sum(per_op.values()), **per_op}


@contextlib.contextmanager
def _backends_off(stack: LocalStack) -> Iterator[None]:
    """Blank every variable that names a local AWS resource but the keys table, so that the gateway builds
    without them."""
    from llm_gateway import wiring

    physical = {v for v in stack.physical.values() if v}
    # The keys table stays: every route needs a gateway key, and a warm key is verified from memory.
    names = [k for k, v in os.environ.items() if v in physical and k != "KEYS_TABLE"]
    saved = {k: os.environ[k] for k in names}
    for name in names:
        os.environ[name] = ""  # Settings treat an empty variable as unset
    wiring.reset()
    try:
        yield
    finally:
        os.environ.update(saved)
        wiring.reset()


def run(
    stack: LocalStack,
    *,
    litellm_bin: Path | None,
    moto: MotoTimer | None = None,
    n: int = 300,
    warmup: int = 30,
    budget_s: float = 240.0,
) -> dict[str, Any]:
    assert stack.simulator is not None and stack.api_url is not None
    simulator = stack.simulator
    simulator.set_latency(0)
    body = chat_body()
    direct_url = simulator.base_urls()["openai"] + "/chat/completions"
    result: dict[str, Any] = {"n_requested": n, "body": body}
    limits = httpx.Limits(max_keepalive_connections=4, max_connections=4)
    with contextlib.ExitStack() as stack_of:
        clients = {
            name: stack_of.enter_context(httpx.Client(timeout=REQUEST_TIMEOUT_S, limits=limits))
            for name in ("direct", "bridge", "litellm")
        }
        paths: dict[str, Call] = {
            "direct": _http_call(clients["direct"], direct_url, body, {"authorization": "Bearer sim-key"}, "direct"),
            "bridge": _http_call(clients["bridge"], stack.api_url + CHAT_PATH, body, {"x-api-key": API_KEY}, "bridge"),
            "handler": _handler_call(stack, body, "handler"),
        }
        if litellm_bin is not None:
            try:
                proxy = stack_of.enter_context(LiteLLMProxy(litellm_bin, simulator.base_urls()["openai"], "sim-key"))
                result["litellm_startup_s"] = proxy.startup_s
                paths["litellm"] = _http_call(clients["litellm"], proxy.url + CHAT_PATH, body, proxy.headers, "litellm")
            except RuntimeError as exc:
                result["litellm_error"] = str(exc)[-2000:]
                progress(f"warm overhead: LiteLLM unavailable: {exc}")
        progress(f"warm overhead: {n} rounds over {', '.join(paths)} (after {warmup} warm-up rounds)")
        with stdout_discarded():
            samples, in_moto = _rounds(paths, n=n, warmup=warmup, budget_s=budget_s, moto=moto)
        result["aws_calls_per_request"] = _aws_calls(paths["handler"], count=20)
        progress("warm overhead: in-process handler with the AWS backends off")
        with _backends_off(stack), stdout_discarded():
            core, _ = _rounds(
                {"direct": paths["direct"], "core": _handler_call(stack, body, "core")},
                n=n,
                warmup=warmup,
                budget_s=budget_s / 2,
            )
    if moto is not None and moto.available:
        result["moto_ms_per_request"] = {name: summarize(in_moto[name]) for name in ("bridge", "handler")}
        for name in ("bridge", "handler"):  # what is left once moto's own answering time is taken out
            samples[f"{name}_excl_moto"] = [t - m for t, m in zip(samples[name], in_moto[name], strict=True)]
    baseline = samples["direct"]
    result["paths"] = {name: summarize(values) for name, values in samples.items()}
    result["paths"]["core"] = summarize(core["core"])
    result["paths"]["direct_core_phase"] = summarize(core["direct"])
    result["added"] = {
        name: {"p50": added(values, baseline, 50), "p99": added(values, baseline, 99)}
        for name, values in samples.items()
        if name != "direct"
    }
    result["added"]["core"] = {
        "p50": added(core["core"], core["direct"], 50),
        "p99": added(core["core"], core["direct"], 99),
    }
    theirs = result["added"].get("litellm", {})
    result["ratios_p50"] = {
        name: ratio(data["p50"], theirs.get("p50")) for name, data in result["added"].items() if name != "litellm"
    }
    return result
