"""One cached vector per (tenant, model, dimensions, text), in the response cache's own backend.

The same store as completions (DynamoDB or Momento; one more key shape, no second table), with the same
scope rule (a ``shared:`` namespace is the only way across tenants), TTL, controls and fail-open: a
backend that fails or is slow is skipped and the inputs go to the provider. A vector is stored as
little-endian float32 (what base64 answers send anyway; a float list in JSON is ~3x larger).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import struct
from collections.abc import Sequence

from llm_gateway.accounting.cache import CacheBackend, cache_scope
from llm_gateway.accounting.counters import Counters
from llm_gateway.interfaces import RequestContext
from llm_gateway.models import CacheControl

log = logging.getLogger("llm_gateway.embeddings.cache")

KEY_VERSION = 1
_MAGIC = b"E1"
_CONCURRENCY = 16  # reads or writes in flight at once for one request


def vector_key(tenant: str, namespace: str | None, model: str, wire_model: str, dimensions: int, text: str) -> str:
    material = {
        "v": KEY_VERSION,
        "kind": "embedding",
        "scope": cache_scope(tenant, namespace),
        "model": [model, wire_model],
        "dimensions": dimensions,
        "text": text,
    }
    canonical = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return f"e{KEY_VERSION}:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def pack(vector: Sequence[float]) -> bytes:
    return _MAGIC + struct.pack(f"<{len(vector)}f", *vector)


def unpack(value: bytes, dimensions: int) -> list[float]:
    payload = value[len(_MAGIC) :]
    if not value.startswith(_MAGIC) or len(payload) != 4 * dimensions:
        raise ValueError("not a cached vector of this length")
    return list(struct.unpack(f"<{dimensions}f", payload))


class EmbeddingCache:
    def __init__(
        self, backend: CacheBackend, *, default_ttl_s: int, timeout_s: float, counters: Counters | None = None
    ) -> None:
        self.backend = backend
        self.default_ttl_s = default_ttl_s
        self.timeout_s = timeout_s
        self.counters = counters or Counters()

    async def lookup(
        self, keys: Sequence[str], dimensions: int, control: CacheControl | None
    ) -> list[list[float] | None]:
        """Each key's vector, or None (a miss, an unreadable entry, or the backend unavailable)."""
        if control is not None and control.no_cache:
            self.counters.add("EmbeddingCacheReadSkipped")
            return [None] * len(keys)
        gate = asyncio.Semaphore(_CONCURRENCY)

        async def one(key: str) -> list[float] | None:
            async with gate:
                try:
                    value = await asyncio.wait_for(self.backend.get(key), timeout=self.timeout_s)
                except Exception as exc:  # fail-open, as the completion cache
                    self._unavailable("get", exc)
                    return None
            if value is None:
                return None
            try:
                return unpack(value, dimensions)
            except (ValueError, struct.error):
                self.counters.add("EmbeddingCacheCorruptEntry")
                return None

        found = await asyncio.gather(*(one(k) for k in keys))
        hits = sum(v is not None for v in found)
        self.counters.add("EmbeddingCacheHit", hits)
        self.counters.add("EmbeddingCacheMiss", len(keys) - hits)
        return found

    async def store(
        self, ctx: RequestContext, items: Sequence[tuple[str, list[float]]], control: CacheControl | None
    ) -> None:
        """Written after the response (``ctx.defer``), like completion entries."""
        if not items or (control is not None and control.no_store):
            return
        ttl = control.ttl_seconds if control is not None and control.ttl_seconds else self.default_ttl_s
        values = [(key, pack(vector)) for key, vector in items]

        async def write_all() -> None:
            gate = asyncio.Semaphore(_CONCURRENCY)

            async def one(key: str, value: bytes) -> None:
                async with gate:
                    try:
                        await asyncio.wait_for(self.backend.set(key, value, ttl), timeout=self.timeout_s)
                    except Exception as exc:
                        self._unavailable("set", exc)
                        return
                self.counters.add("EmbeddingCacheStore")

            await asyncio.gather(*(one(k, v) for k, v in values if len(v) <= self.backend.max_value_bytes))

        await ctx.defer.soon(write_all)

    def _unavailable(self, operation: str, exc: BaseException) -> None:
        log.warning(
            "cache unavailable, continuing without it",
            extra={"backend": self.backend.name, "operation": operation, "error": type(exc).__name__},
        )
        self.counters.add("EmbeddingCacheTimeout" if isinstance(exc, TimeoutError) else "EmbeddingCacheError")
