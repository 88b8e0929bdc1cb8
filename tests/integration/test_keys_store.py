"""Gateway keys over the local stack's moto server (real sockets): hashing and lookup, the verified-key
cache and revocation within its TTL, expiry, model policies, and exact per-minute limits under a race
of 50 "sandboxes" (each its own KeyService, cache and boto3 calls), as the edge will call them."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest

from llm_gateway.config import Settings
from llm_gateway.errors import (
    GatewayError,
    InvalidApiKeyError,
    KeyRateLimitedError,
    MissingApiKeyError,
    ModelNotAllowedError,
)
from llm_gateway.keys import KeyService
from llm_gateway.keys.admin import KeyAdmin, KeySpec
from llm_gateway.keys.store import KeyStore
from tests.support.accounting import unique

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_real_aws")]

WINDOW_MIDDLE = 1_800_000_030.0  # 30 s into a minute: a race cannot straddle a window boundary


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def table(local_stack: Any) -> str:
    return str(local_stack.physical["KeysTable"])


@pytest.fixture
def clock() -> Clock:
    return Clock(WINDOW_MIDDLE)


@pytest.fixture
def admin(table: str, clock: Clock) -> KeyAdmin:
    return KeyAdmin(KeyStore(table), clock=clock)


def service(table: str, clock: Clock, monotonic: Callable[[], float] | None = None, **settings: Any) -> KeyService:
    config = Settings(keys_table=table, **settings)
    kwargs: dict[str, Any] = {"clock": clock}
    if monotonic is not None:
        kwargs["monotonic"] = monotonic
    return KeyService(config, **kwargs)


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}


def table_items(local_stack: Any, table: str) -> list[dict[str, Any]]:
    return list(local_stack.client("dynamodb").scan(TableName=table)["Items"])


# --------------------------------------------------------------------------- hashing and lookup


def test_only_the_hash_is_stored_and_the_key_is_found_by_it(local_stack, table, admin, clock) -> None:
    tenant = unique()
    secret, record = admin.create(KeySpec(tenant=tenant, name="ci"))
    assert secret.startswith("lgw_") and len(secret) >= 40
    assert record.key_hash == hashlib.sha256(secret.encode()).hexdigest()
    dumped = json.dumps(table_items(local_stack, table))
    assert secret not in dumped
    assert secret.removeprefix("lgw_") not in dumped
    assert f"KEY#{record.key_hash}" in dumped

    keys = service(table, clock)
    for headers in (bearer(secret), {"x-api-key": secret}, {"X-Api-Key": secret, "authorization": "Bearer unused"}):
        verified = keys.authenticate(headers)
        assert (verified.tenant, verified.key_id) == (tenant, record.key_id)
        assert verified.context_tags() == {"key_id": record.key_id}


def test_missing_and_wrong_keys_are_401s_and_bad_keys_are_cached_briefly(table, admin, clock) -> None:
    secret, _ = admin.create(KeySpec(tenant=unique()))
    keys = service(table, clock)
    with pytest.raises(MissingApiKeyError) as missing:
        keys.authenticate({"content-type": "application/json"})
    assert (missing.value.http_status, missing.value.code) == (401, "missing_api_key")
    with pytest.raises(MissingApiKeyError):
        keys.authenticate({"Authorization": "Basic dXNlcjpwYXNz"})
    wrong = secret[:-2] + ("AA" if not secret.endswith("AA") else "BB")
    reads = keys.verifier.reads
    for _ in range(20):  # a flood of one bad key: one table read, then the negative cache answers
        with pytest.raises(InvalidApiKeyError) as invalid:
            keys.authenticate(bearer(wrong))
        assert (invalid.value.http_status, invalid.value.code) == (401, "invalid_api_key")
    assert keys.verifier.reads == reads + 1
    keys.authenticate(bearer(secret))
    keys.authenticate(bearer(secret))
    assert keys.verifier.reads == reads + 2  # the good key: read once, then cached


# --------------------------------------------------------------------------- revocation, expiry


def test_a_revoked_key_is_refused_once_the_cache_ttl_has_passed(table, admin, clock) -> None:
    tenant = unique()
    secret, record = admin.create(KeySpec(tenant=tenant))
    elapsed = Clock(1000.0)
    keys = service(table, clock, monotonic=elapsed, key_cache_ttl_s=30.0)
    assert keys.authenticate(bearer(secret)).tenant == tenant
    revoked = admin.revoke(record.key_id)
    assert revoked.policy.revoked_at is not None
    elapsed.now += 29.0  # within the TTL this sandbox still trusts what it read (documented)
    assert keys.authenticate(bearer(secret)).tenant == tenant
    elapsed.now += 1.5
    with pytest.raises(InvalidApiKeyError):
        keys.authenticate(bearer(secret))
    fresh = service(table, clock)  # a new sandbox refuses it at once
    with pytest.raises(InvalidApiKeyError):
        fresh.authenticate(bearer(secret))


def test_an_expired_key_stops_at_its_expiry_even_when_cached(table, admin, clock) -> None:
    secret, _ = admin.create(KeySpec(tenant=unique(), expires_in_seconds=60))
    keys = service(table, clock)
    keys.authenticate(bearer(secret))
    clock.now += 59
    keys.authenticate(bearer(secret))
    clock.now += 1
    with pytest.raises(InvalidApiKeyError):
        keys.authenticate(bearer(secret))


def test_rotation_keeps_the_key_id_and_ends_the_old_secret(table, admin, clock) -> None:
    old, record = admin.create(KeySpec(tenant=unique(), requests_per_minute=5))
    new, rotated = admin.rotate(record.key_id, grace_seconds=120)
    assert rotated.key_id == record.key_id and rotated.generation == 2 and new != old
    keys = service(table, clock)
    assert keys.authenticate(bearer(old)).key_id == record.key_id  # within the grace period
    assert keys.authenticate(bearer(new)).policy.requests_per_minute == 5
    clock.now += 121
    fresh = service(table, clock)
    with pytest.raises(InvalidApiKeyError):
        fresh.authenticate(bearer(old))
    assert fresh.authenticate(bearer(new)).key_id == record.key_id
    assert admin.show(record.key_id).generation == 2
    assert [r.key_id for r in admin.list_keys(record.policy.tenant)] == [record.key_id]


# --------------------------------------------------------------------------- model policy


def test_a_key_limited_to_the_fast_tier_cannot_call_gpt_4o(table, admin, clock) -> None:
    secret, _ = admin.create(KeySpec(tenant=unique(), allowed_models=["tier:fast"]))
    keys = service(table, clock)
    verified = keys.authenticate(bearer(secret))
    keys.admit(verified, "tier:fast", 100)
    with pytest.raises(ModelNotAllowedError) as refused:
        keys.admit(verified, "gpt-4o", 100)
    assert (refused.value.http_status, refused.value.code) == (403, "model_not_allowed")
    with pytest.raises(ModelNotAllowedError):  # an explicit fallback is checked too
        keys.admit(verified, ["tier:fast", "gpt-4o"], 100)


def test_glob_patterns_allow_a_family(table, admin, clock) -> None:
    secret, _ = admin.create(KeySpec(tenant=unique(), allowed_models=["gpt-4o*", "claude-*"]))
    keys = service(table, clock)
    verified = keys.authenticate(bearer(secret))
    keys.admit(verified, ["gpt-4o-mini", "claude-3-5-haiku-latest"], 10)
    for refused in ("gpt-3.5-turbo", "tier:fast", "GPT-4O"):
        with pytest.raises(ModelNotAllowedError):
            keys.admit(verified, refused, 10)


# --------------------------------------------------------------------------- limits under a race


def race(table: str, clock: Clock, secret: str, estimate: int, n: int = 50) -> tuple[list[Any], list[GatewayError]]:
    sandboxes = [service(table, clock) for _ in range(n)]
    start = threading.Barrier(n)
    admitted: list[Any] = []
    refused: list[GatewayError] = []
    lock = threading.Lock()

    def one(keys: KeyService) -> None:
        start.wait()
        try:
            admission = keys.admit(keys.authenticate(bearer(secret)), "tier:fast", estimate)
            with lock:
                admitted.append((keys, admission))
        except GatewayError as err:
            with lock:
                refused.append(err)

    threads = [threading.Thread(target=one, args=(keys,)) for keys in sandboxes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(admitted) + len(refused) == n
    return admitted, refused


def test_fifty_concurrent_requests_on_ten_per_minute_exactly_ten_pass(local_stack, table, admin, clock) -> None:
    secret, record = admin.create(KeySpec(tenant=unique(), requests_per_minute=10))
    admitted, refused = race(table, clock, secret, estimate=50)
    assert len(admitted) == 10
    assert len(refused) == 40
    for err in refused:
        assert isinstance(err, KeyRateLimitedError)
        assert (err.http_status, err.code) == (429, "rate_limited")
        assert err.retry_after == 30  # the window ends 30 s after WINDOW_MIDDLE
        assert err.details["limit"] == "requests_per_minute"
    [counter] = [i for i in table_items(local_stack, table) if i["pk"]["S"].startswith(f"RATE#{record.key_id}#")]
    assert counter["requests"]["N"] == "10"
    clock.now += 30  # the next minute admits again
    keys = service(table, clock)
    keys.admit(keys.authenticate(bearer(secret)), "tier:fast", 50)


def test_tokens_per_minute_hold_within_one_request_under_a_race(local_stack, table, admin, clock) -> None:
    limit, estimate, actual = 1_000, 150, 170  # actual above the estimate: settling pushes past it
    secret, record = admin.create(KeySpec(tenant=unique(), tokens_per_minute=limit))
    admitted, refused = race(table, clock, secret, estimate=estimate)
    assert len(admitted) == limit // estimate  # 6: reservations alone never exceed the limit
    assert all(isinstance(e, KeyRateLimitedError) and e.details["limit"] == "tokens_per_minute" for e in refused)
    assert all(e.retry_after == 30 for e in refused)
    for keys, admission in admitted:
        keys.settle(admission, actual)
    [counter] = [i for i in table_items(local_stack, table) if i["pk"]["S"].startswith(f"RATE#{record.key_id}#")]
    spent = int(counter["tokens"]["N"])
    assert spent == len(admitted) * actual
    assert limit - estimate < spent <= limit + actual  # within one request's worth of the limit
    keys = service(table, clock)
    with pytest.raises(KeyRateLimitedError):  # the excess counts against the rest of the minute
        keys.admit(keys.authenticate(bearer(secret)), "tier:fast", 1)
    with pytest.raises(KeyRateLimitedError) as too_big:  # can never fit: said so, without a retry time
        keys.admit(keys.authenticate(bearer(secret)), "tier:fast", limit + 1)
    assert too_big.value.retry_after is None


def test_no_secret_reaches_the_logs(table, admin, clock, caplog, capsys) -> None:
    caplog.set_level(logging.DEBUG)
    secret, record = admin.create(KeySpec(tenant=unique(), requests_per_minute=1))
    keys = service(table, clock)
    verified = keys.authenticate(bearer(secret))
    keys.admit(verified, "x", 1)
    with pytest.raises(KeyRateLimitedError):
        keys.admit(verified, "x", 1)
    admin.revoke(record.key_id)
    with pytest.raises(InvalidApiKeyError):
        service(table, clock).authenticate(bearer(secret))
    captured = capsys.readouterr()
    logged = caplog.text + captured.out + captured.err
    assert "key refused" in caplog.text  # the refusal was logged, by key id
    assert record.key_id in caplog.text
    assert secret not in logged and secret.removeprefix("lgw_") not in logged


def test_importing_an_existing_secret_is_idempotent(local_stack, table, admin, clock) -> None:
    secret = f"local-{unique('dev')}"  # a LOCAL_API_KEYS value: any string the developer chose
    first = admin.import_key(secret, "tenant-a")
    again = admin.import_key(secret, "tenant-a")
    assert first == again and first.key_id.startswith("key_")
    assert service(table, clock).authenticate({"x-api-key": secret}).tenant == "tenant-a"
    assert secret not in json.dumps(table_items(local_stack, table))
