"""Summarization benchmark: parallel map-reduce against a sequential run, in one process.

The provider simulator answers every call after a fixed delay ``d``. A document of 64 chunks is
summarized with map-reduce at concurrency 16 and at concurrency 1, through the real gateway and its
HTTP adapters over sockets. At concurrency 16 the 64 map calls take 4 rounds, the notes collapse in
one more and the final combine is the sixth.

The judged figure is the *waiting* time: the parallel run's time less the gateway's own overhead,
measured by the same run with ``d = 0``. It must be at most ``6·d`` (a tolerance of a tenth of a round
absorbs timer noise; one extra round of calls, e.g. an effective concurrency of 13 instead of 16, is a
miss). ``d`` defaults to 500 ms so that the overhead, which can approach a second on a slow machine,
cannot hide missing parallelism.

``python -m bench.summarize_bench [--delay-ms 500] [--chunks 64] [--concurrency 16]``
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from typing import Any

DEFAULT_DELAY_MS = 500
DEFAULT_CHUNKS = 64
DEFAULT_CONCURRENCY = 16
TARGET_ROUNDS = 6
TOLERANCE_ROUNDS = 0.1  # timer and scheduling noise, in rounds of calls
CHUNK_TOKENS = 500  # 64 notes of ~45 tokens then need one collapse round before the final combine
REPEATS = 3  # parallel runs per setting; the median is reported
MODEL = "gpt-4o-mini"
_SENTENCE = "The {name} committee reviewed harbour budget line {n} and approved the ferry timetable for spring."


def build_document(chunks: int, chunk_tokens: int = CHUNK_TOKENS) -> str:
    """Paragraphs that pack into exactly ``chunks`` chunks of ``chunk_tokens`` (checked by the caller)."""
    paragraphs = []
    per_chunk = 4
    words = ("north", "south", "east", "west", "harbour", "river", "valley", "coast")
    for i in range(chunks * per_chunk):
        sentences = [_SENTENCE.format(name=words[(i + k) % len(words)], n=i * 10 + k) for k in range(4)]
        paragraphs.append(" ".join(sentences))
    return "\n\n".join(paragraphs)


def run(
    *, delay_ms: int = DEFAULT_DELAY_MS, chunks: int = DEFAULT_CHUNKS, concurrency: int = DEFAULT_CONCURRENCY
) -> dict[str, Any]:
    """Measure, and return the figures (``rows`` for the bench table)."""
    if delay_ms <= 0:
        raise ValueError("the delay must be positive: the target is counted in rounds of it")
    from llm_gateway.documents.chunking import split_text
    from local.simulator import ProviderSimulator

    text = build_document(chunks)
    actual_chunks = len(split_text(text, CHUNK_TOKENS))
    if actual_chunks != chunks:
        raise RuntimeError(f"the benchmark document packs into {actual_chunks} chunks, not {chunks}")
    simulator = ProviderSimulator(host="127.0.0.1", port=0, latency_ms=0).start()
    try:
        summarizer_for = _summarizer_factory(simulator)
        _summarize(summarizer_for(concurrency), text)  # warm-up: client, connections, first-call costs
        overhead = [_summarize(summarizer_for(concurrency), text) for _ in range(REPEATS)]
        simulator.set_latency(delay_ms)
        parallel = [_summarize(summarizer_for(concurrency), text) for _ in range(REPEATS)]
        sequential = _summarize(summarizer_for(1), text)
    finally:
        simulator.stop()

    d = delay_ms / 1000.0
    overhead_s = statistics.median(t for t, _ in overhead)
    parallel_s = statistics.median(t for t, _ in parallel)
    sequential_s, _ = sequential
    shape = parallel[0][1]
    rounds = math.ceil(chunks / concurrency) + shape["collapse_waves"] + 1
    waiting_s = parallel_s - overhead_s  # what the calls' delay cost: d per round of parallel calls
    limit_s = (TARGET_ROUNDS + TOLERANCE_ROUNDS) * d
    target_met = waiting_s <= limit_s
    return {
        "delay_ms": delay_ms,
        "chunks": chunks,
        "concurrency": concurrency,
        "calls": shape["calls"],
        "collapse_rounds": shape["collapse_rounds"],
        "rounds_of_calls": rounds,
        "overhead_s": round(overhead_s, 4),
        "overhead_runs_s": [round(t, 4) for t, _ in overhead],
        "parallel_s": round(parallel_s, 4),
        "parallel_runs_s": [round(t, 4) for t, _ in parallel],
        "waiting_s": round(waiting_s, 4),
        "waiting_rounds": round(waiting_s / d, 2),
        "sequential_s": round(sequential_s, 4),
        "speedup": round(sequential_s / parallel_s, 2),
        "target_s": round(TARGET_ROUNDS * d, 4),
        "target_limit_s": round(limit_s, 4),
        "target_met": target_met,
        "rows": [
            {"metric": f"{chunks} chunks @{concurrency}, d={delay_ms} ms", "ours": round(parallel_s * 1000, 1)},
            {"metric": "gateway overhead (same run, d=0)", "ours": round(overhead_s * 1000, 1)},
            {"metric": "parallel minus overhead", "ours": round(waiting_s * 1000, 1)},
            {"metric": f"target {TARGET_ROUNDS}*d", "ours": round(TARGET_ROUNDS * d * 1000, 1)},
            {"metric": "parallel minus overhead, in rounds of d", "ours": round(waiting_s / d, 2), "unit": ""},
            {"metric": "target met (1 = yes)", "ours": int(target_met), "unit": ""},
            {"metric": "same, sequential (@1)", "ours": round(sequential_s * 1000, 1)},
            {"metric": "speedup vs sequential", "ours": round(sequential_s / parallel_s, 2), "unit": ""},
        ],
    }


def _summarizer_factory(simulator: Any) -> Any:

    from llm_gateway.config import Settings
    from llm_gateway.operations.summarization.planning import CallTimer
    from llm_gateway.operations.summarization.summarizer import Summarizer
    from llm_gateway.routing.retry import RetryPolicy
    from llm_gateway.wiring import build_gateway

    urls = simulator.base_urls()
    config = Settings(openai_base_url=urls["openai"], openai_api_key="sim-key", request_timeout_s=30.0)
    gateway = build_gateway(config, retry=RetryPolicy(max_attempts=1))

    def make(concurrency: int) -> Summarizer:
        return Summarizer(gateway, max_chunk_tokens=CHUNK_TOKENS, concurrency=concurrency, timer=CallTimer())

    return make


def _summarize(summarizer: Any, text: str) -> tuple[float, dict[str, Any]]:
    from llm_gateway.interfaces import RequestContext
    from llm_gateway.operations.summarization.request import SummaryRequest
    from llm_gateway.routing.deadline import Deadline
    from llm_gateway.runtime import run_sync

    # map_reduce explicitly: the whole document would fit one call of the model's window (auto: stuff)
    request = SummaryRequest(text=text, model=MODEL, fallback=[], strategy="map_reduce")
    ctx = RequestContext(tenant="bench", request_id="bench", deadline=Deadline(600.0), operation="summarization")
    started = time.perf_counter()
    result = run_sync(summarizer.summarize(text, request, ctx))
    elapsed = time.perf_counter() - started
    if result.strategy != "map_reduce" or result.degraded:
        raise RuntimeError(f"expected a map-reduce summary, got {result.strategy}")
    collapse_calls = result.calls - result.chunks - 1
    collapse_waves = math.ceil(collapse_calls / summarizer.concurrency) if collapse_calls else 0
    return elapsed, {"calls": result.calls, "collapse_rounds": result.collapse_rounds, "collapse_waves": collapse_waves}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.summarize_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--delay-ms", type=int, default=DEFAULT_DELAY_MS)
    parser.add_argument("--chunks", type=int, default=DEFAULT_CHUNKS)
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument("--json", action="store_true", help="print the result as JSON only")
    args = parser.parse_args(argv)
    result = run(delay_ms=args.delay_ms, chunks=args.chunks, concurrency=args.concurrency)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    d = result["delay_ms"]
    print(f"map-reduce over {result['chunks']} chunks, simulator delay d = {d} ms, {result['calls']} calls")
    print(f"  overhead (same run, d = 0)      {result['overhead_s'] * 1000:8.1f} ms")
    print(f"  concurrency {result['concurrency']:<3} (median of {REPEATS})  {result['parallel_s'] * 1000:8.1f} ms"
          f"   {result['rounds_of_calls']} rounds of calls")  # fmt: skip
    print(f"  parallel minus overhead         {result['waiting_s'] * 1000:8.1f} ms   = {result['waiting_rounds']} d")
    print(f"  sequential (concurrency 1)      {result['sequential_s'] * 1000:8.1f} ms")
    print(f"  speedup                         {result['speedup']:8.2f} x")
    verdict = "met" if result["target_met"] else "MISSED"
    print(f"  target: minus overhead <= 6*d   {result['target_s'] * 1000:8.1f} ms   {verdict}")
    return 0 if result["target_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
