"""CompletionCache policy over in-memory backends: controls, fail-open, size limits, hit reporting."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from llm_gateway.accounting.cache import CompletionCache
from llm_gateway.interfaces import RequestContext
from llm_gateway.models import CompletionRequest, CompletionResult, Usage
from llm_gateway.routing.deadline import Deadline
from llm_gateway.runtime import run_sync


class MemoryBackend:
    name = "memory"

    def __init__(self, max_value_bytes: int = 1_000_000) -> None:
        self.max_value_bytes = max_value_bytes
        self.items: dict[str, tuple[bytes, int]] = {}
        self.gets = 0
        self.sets = 0

    async def get(self, key: str) -> bytes | None:
        self.gets += 1
        found = self.items.get(key)
        return found[0] if found else None

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        self.sets += 1
        self.items[key] = (value, ttl_seconds)


class BrokenBackend(MemoryBackend):
    async def get(self, key: str) -> bytes | None:
        raise ConnectionError("cache is down")

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        raise ConnectionError("cache is down")


class SlowBackend(MemoryBackend):
    async def get(self, key: str) -> bytes | None:
        await asyncio.sleep(5)
        return None


def ctx(tenant: str = "t1") -> RequestContext:
    return RequestContext(tenant=tenant, request_id="r1", deadline=Deadline(30))


def req(**changes: Any) -> CompletionRequest:
    return CompletionRequest.model_validate(
        {"messages": [{"role": "user", "content": "hi"}], "temperature": 0, **changes}
    )


def answer(**changes: Any) -> CompletionResult:
    values: dict[str, Any] = {
        "content": "hello",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "finish_reason": "stop",
        "usage": Usage(input_tokens=5, output_tokens=2),
        "cost_usd": 0.002,
        "latency_ms": 5.0,
        "attempts": [],
    }
    return CompletionResult(**{**values, **changes})


def make(backend: MemoryBackend, **kw: Any) -> CompletionCache:
    return CompletionCache(backend, catalog_version="c1", timeout_s=0.2, default_ttl_s=600, **kw)


def test_store_then_hit_reports_saved_cost():
    backend = MemoryBackend()
    hits: list[tuple[str, float]] = []

    async def on_hit(c: RequestContext, result: CompletionResult, saved: float) -> None:
        hits.append((c.tenant, saved))

    cache = make(backend, on_hit=on_hit)
    assert run_sync(cache.lookup(ctx(), req())) is None
    run_sync(cache.store(ctx(), req(), answer()))
    hit = run_sync(cache.lookup(ctx(), req()))
    assert hit is not None and hit.cached and hit.content == "hello"
    assert hits == [("t1", pytest.approx(0.002))]
    assert [ttl for _, ttl in backend.items.values()] == [600]
    assert cache.counters.snapshot() == {"CacheMiss": 1, "CacheStore": 1, "CacheHit": 1}


def test_per_request_controls():
    backend = MemoryBackend()
    cache = make(backend)
    run_sync(cache.store(ctx(), req(cache={"no_store": True}), answer()))
    assert backend.sets == 0
    run_sync(cache.store(ctx(), req(cache={"ttl_seconds": 42}), answer()))
    assert [ttl for _, ttl in backend.items.values()] == [42]
    assert run_sync(cache.lookup(ctx(), req(cache={"no_cache": True}))) is None
    assert backend.gets == 0  # no-cache skips the read itself


def test_non_deterministic_requests_bypass_the_cache():
    backend = MemoryBackend()
    cache = make(backend)
    assert run_sync(cache.lookup(ctx(), req(temperature=0.9))) is None
    run_sync(cache.store(ctx(), req(temperature=0.9), answer()))
    assert backend.gets == backend.sets == 0
    run_sync(cache.store(ctx(), req(temperature=0.9, cache={"force": True}), answer()))
    assert backend.sets == 1


def test_incomplete_answers_and_hits_are_not_stored():
    backend = MemoryBackend()
    cache = make(backend)
    run_sync(cache.store(ctx(), req(), answer(finish_reason="length")))
    run_sync(cache.store(ctx(), req(), answer(cached=True)))
    assert backend.sets == 0
    assert cache.counters.get("CacheNotStoredIncomplete") == 1


def test_a_broken_cache_is_skipped_and_counted():
    cache = make(BrokenBackend())
    assert run_sync(cache.lookup(ctx(), req())) is None
    run_sync(cache.store(ctx(), req(), answer()))
    assert cache.counters.get("CacheError") == 2


def test_a_slow_cache_is_abandoned_after_the_timeout():
    cache = make(SlowBackend())
    started = time.perf_counter()
    assert run_sync(cache.lookup(ctx(), req())) is None
    assert time.perf_counter() - started < 1.0
    assert cache.counters.get("CacheTimeout") == 1


def test_an_entry_too_large_for_the_backend_is_skipped_not_raised():
    backend = MemoryBackend(max_value_bytes=1_000)
    cache = make(backend)
    noise = "".join(chr(0x4E00 + (i * 7919) % 20_000) for i in range(5_000))  # incompressible CJK text
    run_sync(cache.store(ctx(), req(), answer(content=noise)))
    assert backend.sets == 0 and cache.counters.get("CacheNotStoredTooLarge") == 1


def test_a_corrupt_entry_reads_as_a_miss():
    backend = MemoryBackend()
    cache = make(backend)
    backend.items[cache.key_for("t1", req())] = (b"Z-not-zlib", 60)
    assert run_sync(cache.lookup(ctx(), req())) is None
    assert cache.counters.get("CacheCorruptEntry") == 1
