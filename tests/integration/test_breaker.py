"""The shared circuit breaker on DynamoDB (moto server): one "instance" opens it, the others see it."""

from __future__ import annotations

import threading
import time

import pytest

from llm_gateway.routing.breaker import DynamoDBBreakerStore, SharedCircuitBreaker
from llm_gateway.runtime import close_thread_resources, run_sync
from tests.support.accounting import complete, gateway_from_env, private_table_like, unique

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_real_aws")]

PRIMARY = {"model": "gpt-4o-mini", "fallback": ["claude-3-5-haiku-latest"]}


@pytest.fixture
def table(local_stack):
    # A private table: open circuits in the shared usage table would change other tests' routing.
    return private_table_like(local_stack, "UsageTable")


class Clock:
    """Shared by the "instances" of a test: state transitions are compared against it, not wall time."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


def instance(table, clock, **kw):
    """One Lambda instance: its own gateway and breaker (own local view), sharing the table."""
    kw.setdefault("failure_threshold", 3)
    kw.setdefault("cooldown_s", 30)
    gateway = gateway_from_env(usage_table=table, cache_backend="off")
    gateway.breaker = SharedCircuitBreaker(DynamoDBBreakerStore(table), window_s=60, view_ttl_s=0, clock=clock, **kw)
    return gateway


def test_a_circuit_opened_by_one_instance_is_skipped_by_another(local_stack, simulator, table, clock):
    simulator.add_fault("server_error", provider="openai")
    a, b = instance(table, clock), instance(table, clock)
    for _ in range(3):
        assert complete(a, unique(), **PRIMARY).provider == "anthropic"  # openai fails, the fallback answers
    assert a.breaker.counters.get("BreakerOpened") == 1
    openai_calls = len(simulator.calls("openai"))

    result = complete(b, unique(), **PRIMARY)  # a different instance, never saw a failure itself
    assert result.provider == "anthropic"
    assert [x.provider for x in result.attempts] == ["anthropic"]
    assert len(simulator.calls("openai")) == openai_calls  # not called at all
    item = local_stack.client("dynamodb").get_item(
        TableName=table, Key={"pk": {"S": "BREAKER#openai#gpt-4o-mini"}, "sk": {"S": "STATE"}}
    )["Item"]
    assert float(item["open_until"]["N"]) == pytest.approx(clock.now + 30) and float(item["tripped_at"]["N"]) > 0


def test_after_the_cool_down_one_instance_probes_and_recovery_closes_it(local_stack, simulator, table, clock):
    simulator.add_fault("server_error", provider="openai")
    a, b = instance(table, clock), instance(table, clock)
    for _ in range(3):
        complete(a, unique(), **PRIMARY)
    assert not run_sync(b.breaker.allow("openai", "gpt-4o-mini"))
    clock.now += 29
    assert not run_sync(b.breaker.allow("openai", "gpt-4o-mini"))
    clock.now += 2  # the cool-down is over
    simulator.clear_faults()  # the provider recovered
    # Half-open: exactly one instance wins the probe.
    assert [run_sync(a.breaker.allow("openai", "gpt-4o-mini")), run_sync(b.breaker.allow("openai", "gpt-4o-mini"))] == [
        True,
        False,
    ]
    run_sync(a.breaker.record("openai", "gpt-4o-mini", ok=True))  # the probe succeeded
    assert run_sync(b.breaker.allow("openai", "gpt-4o-mini"))
    assert complete(b, unique(), **PRIMARY).provider == "openai"


def test_when_every_circuit_is_open_the_least_recently_failed_is_still_tried(local_stack, simulator, table, clock):
    gateway = instance(table, clock, failure_threshold=1)
    run_sync(gateway.breaker.record("openai", "gpt-4o-mini", ok=False))
    clock.now += 1
    run_sync(gateway.breaker.record("anthropic", "claude-3-5-haiku-latest", ok=False))
    result = complete(gateway, unique(), **PRIMARY)
    assert result.provider == "openai" and len(simulator.calls()) == 1  # one call rather than none


def test_concurrent_failures_across_instances_open_the_circuit_once(local_stack, table, clock):
    breakers = [
        SharedCircuitBreaker(DynamoDBBreakerStore(table), failure_threshold=5, view_ttl_s=0, clock=clock)
        for _ in range(20)
    ]
    start = threading.Barrier(len(breakers))

    def fail(breaker):
        try:
            start.wait()
            run_sync(breaker.record("gemini", "gemini-2.0-flash", ok=False))
        finally:
            close_thread_resources()

    threads = [threading.Thread(target=fail, args=(b,)) for b in breakers]  # moto is atomic per table here
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sum(b.counters.get("BreakerOpened") for b in breakers) == 1
    assert not run_sync(breakers[0].allow("gemini", "gemini-2.0-flash"))
