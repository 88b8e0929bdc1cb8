"""Verify a presented key against the keys table, with a per-sandbox cache of what was read.

A verified record is trusted for ``ttl_s`` (a revoked or disabled key keeps working at most that
long in a warm sandbox); expiry is checked on every request against the cached record, so an expired
key stops at its expiry exactly. An unknown key is remembered for ``negative_ttl_s``, so a flood of
bad keys costs one read per distinct key and interval instead of one per request. The cache is
bounded: the oldest entries go first. It is keyed by the key's hash, never by the secret.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from llm_gateway.errors import InvalidApiKeyError, KeyStoreUnavailableError
from llm_gateway.keys.hashing import key_hash, same_hash
from llm_gateway.keys.policy import KeyRecord, VerifiedKey
from llm_gateway.keys.store import KeyStore

log = logging.getLogger("llm_gateway.keys")

MAX_CACHED = 10_000  # ~2 MB at most; a sandbox serving more distinct keys than this re-reads some


class KeyVerifier:
    def __init__(
        self,
        store: KeyStore,
        *,
        ttl_s: float = 30.0,
        negative_ttl_s: float = 5.0,
        max_cached: int = MAX_CACHED,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.negative_ttl_s = negative_ttl_s
        self.max_cached = max_cached
        self._clock = clock
        self._monotonic = monotonic
        self._cache: OrderedDict[str, tuple[KeyRecord | None, float]] = OrderedDict()
        self._lock = threading.Lock()
        self.reads = 0  # keys-table reads made (observable in tests and the cost figures)

    def verify(self, secret: str) -> VerifiedKey:
        """The key's identity and policy; InvalidApiKeyError (401) for an unknown, revoked, disabled or
        expired key (the caller is not told which), KeyStoreUnavailableError (503) when the table
        cannot be read and nothing is cached."""
        digest = key_hash(secret)
        record, found = self._cached(digest)
        if not found:
            record = self._read(digest)
        if record is None:
            raise InvalidApiKeyError("the API key is not valid")
        reason = record.policy.refusal(self._clock())
        if reason is not None:
            log.info("key refused", extra={"key_id": record.key_id, "reason": reason})
            raise InvalidApiKeyError("the API key is not valid")
        return VerifiedKey(key_id=record.key_id, tenant=record.policy.tenant, policy=record.policy)

    def forget(self) -> None:
        with self._lock:
            self._cache.clear()

    def _cached(self, digest: str) -> tuple[KeyRecord | None, bool]:
        with self._lock:
            entry = self._cache.get(digest)
            if entry is None:
                return None, False
            record, until = entry
            if self._monotonic() >= until:
                del self._cache[digest]
                return None, False
            return record, True

    def _read(self, digest: str) -> KeyRecord | None:
        try:
            record = self.store.by_hash(digest)
        except Exception as exc:  # botocore errors, timeouts: fail closed, retryable
            log.warning("keys table read failed", extra={"error_type": type(exc).__name__})
            raise KeyStoreUnavailableError("the API key could not be checked right now; retry shortly") from None
        self.reads += 1
        if record is not None and not same_hash(record.key_hash, digest):
            record = None  # cannot happen with a consistent table; never trust a record for another hash
        ttl = self.ttl_s if record is not None else self.negative_ttl_s
        if ttl > 0:
            with self._lock:
                self._cache[digest] = (record, self._monotonic() + ttl)
                self._cache.move_to_end(digest)
                while len(self._cache) > self.max_cached:
                    self._cache.popitem(last=False)
        return record
