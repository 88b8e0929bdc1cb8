"""The shared circuit breaker's state machine over an in-memory store, with a controlled clock."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from llm_gateway.catalog import default_catalog
from llm_gateway.errors import ProviderUnavailableError
from llm_gateway.routing.breaker import CircuitState, SharedCircuitBreaker
from llm_gateway.runtime import run_sync


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class MemoryStore:
    """The BreakerStore contract, as DynamoDB's conditional writes implement it."""

    def __init__(self) -> None:
        self.states: dict[str, CircuitState] = {}
        self.counts: dict[tuple[str, int], int] = {}
        self.fail_reads = False

    async def count_failure(self, circuit, now, window, ttl_s):
        self.counts[(circuit, window)] = self.counts.get((circuit, window), 0) + 1
        state = replace(self.states.get(circuit, CircuitState()), last_failure_at=now)
        self.states[circuit] = state
        return self.counts[(circuit, window)], state

    async def read(self, circuit):
        if self.fail_reads:
            raise ConnectionError("store down")
        return self.states.get(circuit, CircuitState())

    async def trip(self, circuit, now, open_until, ttl_s):
        state = self.states.get(circuit, CircuitState())
        if state.open_until > now:
            return False
        self.states[circuit] = replace(state, open_until=open_until, tripped_at=now, probe_until=0.0)
        return True

    async def claim_probe(self, circuit, now, probe_until):
        state = self.states.get(circuit, CircuitState())
        if state.phase(now) != "half_open" or state.probe_until > now:
            return False
        self.states[circuit] = replace(state, probe_until=probe_until)
        return True

    async def close(self, circuit, now, window, ttl_s):
        state = self.states.get(circuit, CircuitState())
        if state.tripped_at and state.open_until <= now:
            self.states[circuit] = replace(state, open_until=0.0, tripped_at=0.0, probe_until=0.0)
            self.counts[(circuit, window)] = 0


def instance(store, clock, **kw):
    kw.setdefault("failure_threshold", 3)
    return SharedCircuitBreaker(store, window_s=60, cooldown_s=30, probe_timeout_s=10, view_ttl_s=0, clock=clock, **kw)


def fail(breaker, times, model="gpt-4o-mini"):
    for _ in range(times):
        run_sync(breaker.record("openai", model, ok=False))


def test_opens_after_the_threshold_and_every_instance_sees_it():
    store, clock = MemoryStore(), Clock()
    a, b = instance(store, clock), instance(store, clock)
    fail(a, 2)
    assert run_sync(b.allow("openai", "gpt-4o-mini"))
    fail(a, 1)
    assert not run_sync(a.allow("openai", "gpt-4o-mini"))
    assert not run_sync(b.allow("openai", "gpt-4o-mini"))
    assert run_sync(b.allow("openai", "gpt-4.1"))  # other circuits are unaffected
    assert a.counters.get("BreakerOpened") == 1


def test_failures_in_different_windows_do_not_add_up():
    store, clock = MemoryStore(), Clock()
    a = instance(store, clock)
    fail(a, 2)
    clock.now += 61
    fail(a, 2)
    assert run_sync(a.allow("openai", "gpt-4o-mini"))


def test_half_open_lets_exactly_one_probe_through_then_closes_on_success():
    store, clock = MemoryStore(), Clock()
    a, b = instance(store, clock), instance(store, clock)
    fail(a, 3)
    clock.now += 31
    results = [run_sync(a.allow("openai", "gpt-4o-mini")), run_sync(b.allow("openai", "gpt-4o-mini"))]
    assert results == [True, False]
    run_sync(a.record("openai", "gpt-4o-mini", ok=True))
    assert run_sync(b.allow("openai", "gpt-4o-mini"))
    fail(b, 2)  # the count restarted when the circuit closed
    assert run_sync(b.allow("openai", "gpt-4o-mini"))


def test_a_failed_probe_reopens_at_once():
    store, clock = MemoryStore(), Clock()
    a = instance(store, clock)
    fail(a, 3)
    clock.now += 31
    assert run_sync(a.allow("openai", "gpt-4o-mini"))
    fail(a, 1)
    assert not run_sync(a.allow("openai", "gpt-4o-mini"))
    clock.now += 11  # an abandoned probe expires; the next cool-down end allows a new one
    assert not run_sync(a.allow("openai", "gpt-4o-mini"))
    clock.now += 20
    assert run_sync(a.allow("openai", "gpt-4o-mini"))


def test_success_while_open_does_not_close_the_circuit():
    store, clock = MemoryStore(), Clock()
    a = instance(store, clock)
    fail(a, 3)
    run_sync(a.record("openai", "gpt-4o-mini", ok=True))  # a call that started before the trip
    assert not run_sync(a.allow("openai", "gpt-4o-mini"))


def test_a_broken_store_fails_open():
    store, clock = MemoryStore(), Clock()
    a = instance(store, clock)
    fail(a, 3)
    store.fail_reads = True
    assert run_sync(a.allow("openai", "gpt-4o-mini"))
    assert a.counters.get("BreakerStoreError") == 1


def test_gateway_tries_the_least_recently_failed_model_when_all_are_open():
    from tests.unit.test_gateway import ScriptedProvider, complete, make

    store, clock = MemoryStore(), Clock()
    breaker = instance(store, clock, failure_threshold=1)
    fast = default_catalog().in_tier("fast")
    for spec in fast:  # every fast model fails once (so opens), one second apart
        run_sync(breaker.record(spec.provider, spec.id, ok=False))
        clock.now += 1
    oldest = fast[0]
    gateway = make(
        {
            "gemini": ScriptedProvider("gemini"),
            "openai": ScriptedProvider("openai"),
            "anthropic": ScriptedProvider("anthropic"),
        }
    )
    gateway.breaker = breaker
    assert complete(gateway, tier="fast").model == oldest.id
    # Now make a different model the least recently failed one.
    clock.now += 1
    run_sync(breaker.record(oldest.provider, oldest.id, ok=False))
    assert complete(gateway, tier="fast").model == fast[1].id


def half_open_fallback(clock, store):
    breaker = instance(store, clock)
    fail(breaker, 3, model="gpt-4.1")  # the fallback's circuit opens...
    clock.now += 31  # ...and is half-open after the cool-down
    return breaker


def test_a_half_open_fallback_keeps_its_probe_when_the_primary_answers():
    from tests.unit.test_gateway import ScriptedProvider, complete, make

    store, clock = MemoryStore(), Clock()
    breaker = half_open_fallback(clock, store)
    gateway = make({"openai": ScriptedProvider("openai")})
    gateway.breaker = breaker
    for _ in range(3):
        assert complete(gateway, model="gpt-4o-mini", fallback=["gpt-4.1"]).model == "gpt-4o-mini"
    assert store.states["openai#gpt-4.1"].probe_until <= clock.now  # never called, so never claimed
    clock.now += 1
    assert run_sync(instance(store, clock).allow("openai", "gpt-4.1"))  # the probe is free for a real caller


def test_a_half_open_fallback_is_probed_when_it_is_called_and_closes_on_success():
    from tests.unit.test_gateway import ScriptedProvider, complete, make

    store, clock = MemoryStore(), Clock()
    breaker = half_open_fallback(clock, store)
    openai = ScriptedProvider("openai", [ProviderUnavailableError("503")] * 2)
    gateway = make({"openai": openai})
    gateway.breaker = breaker
    assert complete(gateway, model="gpt-4o-mini", fallback=["gpt-4.1"]).model == "gpt-4.1"
    assert breaker.counters.get("BreakerProbe") == 1 and breaker.counters.get("BreakerClosed") == 1
    assert store.states["openai#gpt-4.1"].phase(clock.now) == "closed"


class RacingStore(MemoryStore):
    """Another instance claims each probe just before this one tries to (between ordering and the call)."""

    async def claim_probe(self, circuit, now, probe_until):
        await super().claim_probe(circuit, now, probe_until)  # the rival wins
        return await super().claim_probe(circuit, now, probe_until)


def test_a_probe_lost_at_call_time_skips_the_model_unless_nothing_else_can_be_called():
    from tests.unit.test_gateway import ScriptedProvider, complete, make

    store, clock = RacingStore(), Clock()
    breaker = half_open_fallback(clock, store)
    openai = ScriptedProvider("openai")
    gateway = make({"openai": openai})
    gateway.breaker = breaker
    # The half-open model looked available when ordering; its probe is lost when about to call it.
    assert complete(gateway, model="gpt-4.1", fallback=["gpt-4o-mini"]).model == "gpt-4o-mini"
    assert [c.model for c in openai.calls] == ["gpt-4o-mini"]
    clock.now += 11  # the rival's probe expired without a report
    # Alone, it is still called (never fail without a call).
    assert complete(gateway, model="gpt-4.1", fallback=[]).model == "gpt-4.1"


class SlowStore(MemoryStore):
    """Reads wait until the test lets them finish, and are counted."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.release: asyncio.Event | None = None

    async def read(self, circuit):
        self.reads += 1
        if self.release is not None:
            await self.release.wait()
        return await super().read(circuit)


def test_a_stale_view_is_used_while_one_background_read_refreshes_it():
    store, clock = SlowStore(), Clock()
    breaker = SharedCircuitBreaker(store, view_ttl_s=1.0, view_stale_s=10.0, clock=clock, failure_threshold=1)
    assert run_sync(breaker.available("openai", "gpt-4o-mini"))  # first read: waited for
    other = SharedCircuitBreaker(store, view_ttl_s=1.0, clock=clock, failure_threshold=1)
    run_sync(other.record("openai", "gpt-4o-mini", ok=False))  # another instance opens the circuit

    reads_before = store.reads

    async def stale_then_fresh() -> tuple[bool, bool, bool, int]:
        store.release = asyncio.Event()
        clock.now += 2.0  # older than the ttl, within the stale window
        # The store's read is held: answering at all proves the request did not wait on it.
        first = await asyncio.wait_for(breaker.available("openai", "gpt-4o-mini"), 0.5)
        again = await asyncio.wait_for(breaker.available("openai", "gpt-4o-mini"), 0.5)
        reads_meanwhile = store.reads - reads_before
        store.release.set()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return first, again, await breaker.available("openai", "gpt-4o-mini"), reads_meanwhile

    first, again, after_refresh, reads = run_sync(stale_then_fresh())
    assert (first, again) == (True, True)  # the stale view said closed
    assert reads == 1  # one background refresh for both stale requests
    assert after_refresh is False  # the refreshed view shows the circuit the other instance opened


def test_a_view_past_the_stale_window_is_read_before_use():
    store, clock = SlowStore(), Clock()
    breaker = SharedCircuitBreaker(store, view_ttl_s=1.0, view_stale_s=10.0, clock=clock, failure_threshold=1)
    assert run_sync(breaker.available("openai", "gpt-4o-mini"))
    run_sync(SharedCircuitBreaker(store, clock=clock, failure_threshold=1).record("openai", "gpt-4o-mini", ok=False))
    clock.now += 12.0
    assert run_sync(breaker.available("openai", "gpt-4o-mini")) is False
