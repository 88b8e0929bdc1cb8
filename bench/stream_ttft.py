"""Streaming: time to first token, down each path to the same provider simulator.

Paths (one streamed chat request each, simulator latency 0, keep-alive clients, all on 127.0.0.1):

* ``direct``  -- httpx straight to the simulator's OpenAI endpoint with ``stream: true``: the baseline;
* ``bridge``  -- our local API Gateway stand-in -> the streaming runtime loop -> the completion handler ->
  the simulator, as deployed (``CompletionStreamFunction``);
* ``litellm`` -- a LiteLLM proxy pointed at the simulator, streaming.

Time to first token is measured to the first SSE chunk whose delta carries content (not to the role
chunk, nor to the response headers), so a path that answers headers early but buffers the text is not
flattered. Each round sends one request down every path in a rotating order; the added time to first
token at a percentile is that path's percentile minus the direct path's, from the same rounds. The stream's
whole duration is recorded too (the simulator waits ``chunk_delay_ms`` between chunks).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench.common import API_KEY, CHAT_PATH, bookkeeping_done, chat_body, progress, stdout_discarded
from bench.litellm_proxy import LiteLLMProxy
from bench.stats import added, ratio, summarize

REQUEST_TIMEOUT_S = 30.0
Timed = Callable[[], tuple[float, float]]  # (ms to the first content chunk, ms to the end of the stream)


def _first_content(line: str) -> bool:
    """Whether an SSE line is a chat chunk carrying answer text."""
    if not line.startswith("data:"):
        return False
    data = line[5:].strip()
    if data == "[DONE]":
        return False
    chunk = json.loads(data)
    return any((choice.get("delta") or {}).get("content") for choice in chunk.get("choices") or [])


def _streamed_call(client: httpx.Client, url: str, body: dict[str, Any], headers: dict[str, str], name: str) -> Timed:
    def call() -> tuple[float, float]:
        started = time.perf_counter()
        first: float | None = None
        done = False
        with client.stream("POST", url, json=body, headers=headers) as response:
            if response.status_code != 200:
                response.read()
                raise RuntimeError(f"{name}: HTTP {response.status_code}: {response.text[:300]}")
            for line in response.iter_lines():
                if first is None and _first_content(line):
                    first = (time.perf_counter() - started) * 1000.0
                done = done or line.strip() == "data: [DONE]"
        if first is None or not done:
            raise RuntimeError(f"{name}: the stream carried no content or did not end with [DONE]")
        return first, (time.perf_counter() - started) * 1000.0

    return call


def _rounds(paths: dict[str, Timed], *, n: int, warmup: int, budget_s: float) -> dict[str, dict[str, list[float]]]:
    names = list(paths)
    for _ in range(warmup):
        for name in names:
            paths[name]()
            bookkeeping_done()
    samples: dict[str, dict[str, list[float]]] = {name: {"ttft": [], "total": []} for name in names}
    deadline = time.monotonic() + budget_s
    for i in range(n):
        if time.monotonic() > deadline:
            progress(f"stream ttft: time budget spent after {i} rounds")
            break
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            ttft, total = paths[name]()
            samples[name]["ttft"].append(ttft)
            samples[name]["total"].append(total)
            bookkeeping_done()  # after the sample: the caller already has its answer
    return samples


def run(
    stack: Any,
    *,
    litellm_bin: Path | None,
    n: int = 150,
    warmup: int = 15,
    chunk_delay_ms: int = 20,
    budget_s: float = 240.0,
) -> dict[str, Any]:
    simulator = stack.simulator
    assert simulator is not None and stack.api_url is not None
    simulator.set_latency(0)
    simulator.set_chunk_delay(chunk_delay_ms)
    body = {**chat_body(), "stream": True}
    direct_body = {**body, "stream_options": {"include_usage": True}}  # as our adapter and LiteLLM ask
    result: dict[str, Any] = {"n_requested": n, "chunk_delay_ms": chunk_delay_ms, "body": body}
    limits = httpx.Limits(max_keepalive_connections=4, max_connections=4)
    try:
        with contextlib.ExitStack() as scope:
            clients = {
                name: scope.enter_context(httpx.Client(timeout=REQUEST_TIMEOUT_S, limits=limits))
                for name in ("direct", "bridge", "litellm")
            }
            direct_url = simulator.base_urls()["openai"] + "/chat/completions"
            paths: dict[str, Timed] = {
                "direct": _streamed_call(
                    clients["direct"], direct_url, direct_body, {"authorization": "Bearer sim-key"}, "direct"
                ),
                "bridge": _streamed_call(
                    clients["bridge"], stack.api_url + CHAT_PATH, body, {"x-api-key": API_KEY}, "bridge"
                ),
            }
            if litellm_bin is not None:
                try:
                    proxy = scope.enter_context(LiteLLMProxy(litellm_bin, simulator.base_urls()["openai"], "sim-key"))
                    url = proxy.url + CHAT_PATH
                    paths["litellm"] = _streamed_call(clients["litellm"], url, body, proxy.headers, "litellm")
                except RuntimeError as exc:
                    result["litellm_error"] = str(exc)[-2000:]
                    progress(f"stream ttft: LiteLLM unavailable: {exc}")
            progress(f"stream ttft: {n} rounds over {', '.join(paths)} (after {warmup} warm-up rounds)")
            with stdout_discarded():
                samples = _rounds(paths, n=n, warmup=warmup, budget_s=budget_s)
    finally:
        simulator.set_chunk_delay(0)
    baseline = samples["direct"]["ttft"]
    result["ttft"] = {name: summarize(values["ttft"]) for name, values in samples.items()}
    result["total"] = {name: summarize(values["total"]) for name, values in samples.items()}
    result["added_ttft"] = {
        name: {"p50": added(values["ttft"], baseline, 50), "p99": added(values["ttft"], baseline, 99)}
        for name, values in samples.items()
        if name != "direct"
    }
    theirs = result["added_ttft"].get("litellm", {})
    ours = result["added_ttft"]["bridge"]
    result["ratio_added_ttft"] = {q: ratio(ours[q], theirs.get(q)) for q in ("p50", "p99")}
    return result
