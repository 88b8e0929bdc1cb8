"""Gateway keys without AWS: reading the key from headers, hashing, policies, the stored item's round
trip, and the verifier's cache (TTL, negative entries, bound) over an in-memory store."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Any

import pytest

from llm_gateway.errors import InvalidApiKeyError, KeyStoreUnavailableError, MissingApiKeyError
from llm_gateway.keys.hashing import key_hash, new_key_id, new_secret, same_hash
from llm_gateway.keys.headers import presented_key
from llm_gateway.keys.policy import KeyBudget, KeyPolicy, KeyRecord
from llm_gateway.keys.store import item_from_record, record_from_item
from llm_gateway.keys.verifier import KeyVerifier


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Authorization": "Bearer abc"}, "abc"),
        ({"authorization": "bearer  abc "}, "abc"),
        ({"x-api-key": "abc"}, "abc"),
        ({"X-API-Key": "abc", "Authorization": "Bearer unused"}, "abc"),  # the README's old client setup
        ({"Authorization": "Basic Zm9vOmJhcg==", "x-api-key": "abc"}, "abc"),
    ],
)
def test_the_key_comes_from_bearer_or_x_api_key(headers: dict[str, str], expected: str) -> None:
    assert presented_key(headers) == expected


@pytest.mark.parametrize(
    "headers", [None, {}, {"Authorization": "Bearer "}, {"Authorization": "Basic Zm9v"}, {"x-api-key": "  "}]
)
def test_no_key_is_missing_api_key(headers: dict[str, str] | None) -> None:
    with pytest.raises(MissingApiKeyError) as err:
        presented_key(headers)
    assert (err.value.http_status, err.value.code) == (401, "missing_api_key")


@pytest.mark.parametrize("key", ["x" * 257, "caf\u00e9", "a\x00b"])
def test_what_cannot_be_a_key_is_invalid(key: str) -> None:
    with pytest.raises(InvalidApiKeyError):
        presented_key({"x-api-key": key})


def test_secrets_are_high_entropy_and_only_their_sha256_is_kept() -> None:
    secrets = {new_secret() for _ in range(100)}
    assert len(secrets) == 100 and all(s.startswith("lgw_") and len(s) == 47 for s in secrets)
    secret = next(iter(secrets))
    assert key_hash(secret) == hashlib.sha256(secret.encode()).hexdigest()
    assert same_hash(key_hash(secret), key_hash(secret)) and not same_hash(key_hash(secret), key_hash("other"))
    assert new_key_id().startswith("key_") and new_key_id() != new_key_id()


def test_patterns_match_the_name_as_written() -> None:
    policy = KeyPolicy(tenant="t", name="", created_at=0, allowed=("gpt-4o*", "tier:fast"))
    assert policy.allows("gpt-4o") and policy.allows("gpt-4o-mini") and policy.allows("tier:fast")
    assert not policy.allows("tier:best") and not policy.allows("o1-gpt-4o") and not policy.allows("GPT-4O")
    assert KeyPolicy(tenant="t", name="", created_at=0).allows("anything")


def test_refusal_reasons() -> None:
    base = KeyPolicy(tenant="t", name="", created_at=0)
    assert base.refusal(100) is None
    assert KeyPolicy(tenant="t", name="", created_at=0, revoked_at=50).refusal(100) == "revoked"
    assert KeyPolicy(tenant="t", name="", created_at=0, revoked_at=150).refusal(100) is None  # scheduled
    assert KeyPolicy(tenant="t", name="", created_at=0, disabled=True).refusal(100) == "disabled"
    assert KeyPolicy(tenant="t", name="", created_at=0, expires_at=100).refusal(100) == "expired"


def test_the_stored_item_round_trips_without_the_secret() -> None:
    secret = new_secret()
    record = KeyRecord(
        key_hash=key_hash(secret),
        key_id="key_1",
        generation=3,
        policy=KeyPolicy(
            tenant="acme",
            name="ci",
            created_at=1_800_000_000.5,
            expires_at=1_900_000_000.0,
            allowed=("tier:fast",),
            requests_per_minute=10,
            tokens_per_minute=5000,
            budget=KeyBudget(Decimal("2.5"), "month"),
            metadata={"team": "search"},
        ),
    )
    item = item_from_record(record)
    assert secret not in repr(item)
    assert "expires_at" not in item  # the table's TTL attribute is for rate counters only
    assert record_from_item(item) == record


class MemoryStore:
    def __init__(self) -> None:
        self.records: dict[str, KeyRecord] = {}
        self.reads = 0
        self.fail = False

    def by_hash(self, digest: str) -> KeyRecord | None:
        self.reads += 1
        if self.fail:
            raise ConnectionError("down")
        return self.records.get(digest)


class Ticker:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def verifier(store: MemoryStore, ticker: Ticker, **kw: Any) -> KeyVerifier:
    return KeyVerifier(store, clock=lambda: 1000.0, monotonic=ticker, **kw)  # type: ignore[arg-type]


def test_the_cache_bounds_reads_and_expires_entries() -> None:
    store, ticker = MemoryStore(), Ticker()
    secret = new_secret()
    store.records[key_hash(secret)] = KeyRecord(key_hash(secret), "key_1", KeyPolicy(tenant="t", name="", created_at=0))
    keys = verifier(store, ticker, ttl_s=30, negative_ttl_s=5, max_cached=3)
    for _ in range(5):
        assert keys.verify(secret).tenant == "t"
    assert store.reads == 1
    for _ in range(5):
        with pytest.raises(InvalidApiKeyError):
            keys.verify("lgw_unknown")
    assert store.reads == 2
    ticker.now = 5.0  # the negative entry is gone, the positive one stays
    with pytest.raises(InvalidApiKeyError):
        keys.verify("lgw_unknown")
    keys.verify(secret)
    assert store.reads == 3
    for n in range(3):  # a flood of distinct bad keys evicts the oldest entries, never grows past the bound
        with pytest.raises(InvalidApiKeyError):
            keys.verify(f"lgw_flood{n}")
    assert len(keys._cache) == 3
    keys.verify(secret)
    assert store.reads == 7


def test_a_store_outage_is_a_503_not_a_401() -> None:
    store, ticker = MemoryStore(), Ticker()
    store.fail = True
    with pytest.raises(KeyStoreUnavailableError) as err:
        verifier(store, ticker).verify(new_secret())
    assert (err.value.http_status, err.value.retryable) == (503, True)
