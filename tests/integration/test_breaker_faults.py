"""Routing under faults, over the moto-backed breaker: with every circuit of a chain open, each request
still tries one model (never fails without a call), however many instances and requests race."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from llm_gateway.errors import GatewayError
from llm_gateway.routing.breaker import DynamoDBBreakerStore, SharedCircuitBreaker
from tests.support.accounting import complete, gateway_from_env, private_table_like, unique

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_real_aws")]

CHAIN = {"model": "gpt-4o-mini", "fallback": ["claude-3-5-haiku-latest", "gemini-2.0-flash-lite"]}


def test_no_request_fails_without_a_call_while_circuits_flap(local_stack, simulator):
    table = private_table_like(local_stack, "UsageTable")
    simulator.add_fault("server_error")  # every provider down: circuits open, cool down, probe, reopen
    instances = []
    for _ in range(3):
        gateway = gateway_from_env(usage_table=table, cache_backend="off")
        gateway.breaker = SharedCircuitBreaker(
            DynamoDBBreakerStore(table), failure_threshold=2, window_s=60, cooldown_s=1, probe_timeout_s=2
        )
        instances.append(gateway)
    lock = threading.Lock()
    uncalled: list[str] = []
    outcomes: list[int] = []

    def one(i: int) -> None:
        try:
            result = complete(instances[i % 3], unique(), **CHAIN)
            calls = len(result.attempts)
        except GatewayError as err:
            calls = len(err.attempts)
            if not calls:
                with lock:
                    uncalled.append(f"{err.code}: {err.message}")
        with lock:
            outcomes.append(calls)

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(one, range(120)))
    assert len(outcomes) == 120
    assert uncalled == []


class Clock:
    def __init__(self) -> None:
        import time

        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_a_refused_key_opens_a_long_lived_auth_state(local_stack, simulator):
    table = private_table_like(local_stack, "UsageTable")
    clock = Clock()
    gateway = gateway_from_env(usage_table=table, cache_backend="off")
    gateway.breaker = SharedCircuitBreaker(
        DynamoDBBreakerStore(table), failure_threshold=5, cooldown_s=30, auth_cooldown_s=300, view_ttl_s=0, clock=clock
    )
    simulator.add_fault("auth", provider="openai")  # the gateway's OpenAI key was revoked
    chain = {"model": "gpt-4o-mini", "fallback": ["claude-3-5-haiku-latest"]}

    first = complete(gateway, unique(), **chain)
    assert [a.error_code for a in first.attempts] == ["provider_auth_error", None]
    assert first.provider == "anthropic"
    assert gateway.breaker.counters.get("ProviderAuthFailures") == 1  # one failure opens it: no threshold
    openai_calls = len(simulator.calls("openai"))
    opened = clock.now
    for seconds in (1, 60, 290):  # well past the 30 s cool-down of a 5xx: still left alone
        clock.now = opened + seconds
        result = complete(gateway, unique(), **chain)
        assert [a.provider for a in result.attempts] == ["anthropic"]
    assert len(simulator.calls("openai")) == openai_calls  # the revoked key was not hammered

    clock.now = opened + 301  # the auth cool-down is over: one probe finds the key fixed
    simulator.clear_faults()
    assert complete(gateway, unique(), **chain).provider == "openai"
    assert gateway.breaker.counters.get("ProviderAuthFailures") == 1
