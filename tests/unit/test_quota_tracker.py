"""Quota selection and the tracker: weights, utilisation, declared limits, exhaustion, shared views."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from llm_gateway.quotas import selection
from llm_gateway.quotas.metrics import QuotaMetrics
from llm_gateway.quotas.model import Deployment, RateLimitSnapshot, Target
from llm_gateway.quotas.tracker import QuotaTracker
from tests.support.quota_store import MemoryQuotaStore


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def target(dep_id: str, **kw: object) -> Target:
    return Target(Deployment(id=dep_id, provider="openai", kind="openai", **kw), provider=None)  # type: ignore[arg-type]


def tracker(store: MemoryQuotaStore | None, clock: Clock, **kw: object) -> QuotaTracker:
    return QuotaTracker(store, clock=clock, metrics=QuotaMetrics(emit=False), **kw)  # type: ignore[arg-type]


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


async def serve(t: QuotaTracker, targets: list[Target], n: int, tokens: int = 10) -> Counter[str]:
    """n calls, each to the first deployment of the plan that admits it."""
    served: Counter[str] = Counter()
    for _ in range(n):
        plan = await t.plan(targets)
        for candidate in plan.targets:
            if await t.admit(candidate, requests=1, tokens=tokens) is not None:
                served[candidate.deployment.id] += 1
                break
        else:
            served["refused"] += 1
    return served


# --- selection, pure


def test_least_utilised_over_weight_first_ties_in_configuration_order() -> None:
    loads = [
        selection.Load("a", 1.0, 0.5),
        selection.Load("b", 1.0, 0.2),
        selection.Load("c", 2.0, 0.6),  # 0.3 once weighted
        selection.Load("d", 1.0, 0.2),
    ]
    assert selection.order(loads, now=0) == ["b", "d", "c", "a"]


def test_exhausted_deployments_are_left_out_until_their_reset_and_standbys_go_last() -> None:
    loads = [
        selection.Load("standby", 0.0, 0.0),
        selection.Load("busy", 1.0, 0.9, exhausted_until=100.0),
        selection.Load("free", 1.0, 0.9),
    ]
    assert selection.order(loads, now=99.0) == ["free", "standby"]
    assert selection.order(loads, now=100.0) == ["busy", "free", "standby"]


def test_utilisation_prefers_declared_limits_then_headers_then_share() -> None:
    assert selection.utilisation(30, 500, rpm=60, tpm=1000, hint=0.1, share=0.9) == 0.5
    assert selection.utilisation(30, 900, rpm=60, tpm=1000, hint=0.1, share=0.9) == 0.9
    assert selection.utilisation(30, 900, rpm=None, tpm=None, hint=0.25, share=0.9) == 0.25
    assert selection.utilisation(30, 900, rpm=None, tpm=None, hint=None, share=0.4) == 0.4
    assert selection.earliest_reset([0.0, 12.0, 7.0]) == 7.0
    assert selection.earliest_reset([]) is None


# --- the tracker over one store


def test_two_equal_deployments_split_evenly_and_the_limit_is_never_exceeded() -> None:
    store, clock = MemoryQuotaStore(), Clock()
    t = tracker(store, clock)
    targets = [target("a", rpm=60), target("b", rpm=60)]
    served = run(serve(t, targets, 130))
    assert served == Counter({"a": 60, "b": 60, "refused": 10})
    window = t.window(clock.now)
    assert store.windows[("a", window)].requests == 60 and store.windows[("b", window)].requests == 60


def test_weights_split_three_to_one_while_both_have_room() -> None:
    t = tracker(MemoryQuotaStore(), Clock())
    served = run(serve(t, [target("heavy", rpm=1000, weight=3.0), target("light", rpm=1000)], 400))
    assert served["heavy"] == pytest.approx(300, abs=2) and served["light"] == pytest.approx(100, abs=2)


def test_deployments_without_limits_spread_by_weight_with_no_store_call() -> None:
    store = MemoryQuotaStore()
    t = tracker(store, Clock(), view_ttl_s=3600)
    served = run(serve(t, [target("a", weight=2.0), target("b")], 300))
    assert served["a"] == pytest.approx(200, abs=2) and served["b"] == pytest.approx(100, abs=2)
    assert store.calls["reserve"] == 0 and store.calls["read"] == 1  # one view read, then the view


def test_a_full_window_refuses_then_the_next_window_admits_again() -> None:
    store, clock = MemoryQuotaStore(), Clock(1_000_020.0)
    t = tracker(store, clock, window_s=60.0)
    only = [target("a", rpm=2)]
    assert run(serve(t, only, 3)) == Counter({"a": 2, "refused": 1})
    plan = run(t.plan(only))
    assert plan.targets == [] and plan.resets["a"] == t.window_end(t.window(clock.now))
    clock.now = plan.resets["a"]
    assert run(serve(t, only, 1)) == Counter({"a": 1})


def test_tokens_are_reserved_from_the_estimate_and_settled_to_what_was_used() -> None:
    store, clock = MemoryQuotaStore(), Clock()
    t = tracker(store, clock)
    dep = target("a", tpm=1000)
    first = run(t.admit(dep, requests=1, tokens=800))
    assert first is not None and first.tokens == 800
    assert run(t.admit(dep, requests=1, tokens=300)) is None  # 800 + 300 > 1000: refused
    run(t.settle(first, 150))  # the call used 150: 650 come back
    assert store.windows[("a", t.window(clock.now))].tokens == 150
    assert run(t.admit(dep, requests=1, tokens=300)) is not None
    # A request larger than the whole TPM is held to the TPM: it can run alone in a fresh window.
    clock.now += 60
    huge = run(t.admit(dep, requests=1, tokens=5000))
    assert huge is not None and huge.tokens == 1000


def test_headers_saying_zero_left_skip_the_deployment_until_its_reset_here_and_elsewhere() -> None:
    store, clock = MemoryQuotaStore(), Clock()
    here, there = tracker(store, clock, view_ttl_s=1.0), tracker(store, clock, view_ttl_s=1.0)
    a, b = target("a"), target("b")
    run(there.plan([a, b]))  # its view is fresh: it will not read again for a second
    reset = clock.now + 30
    snapshot = RateLimitSnapshot(limit_requests=60, remaining_requests=0, requests_reset_at=reset)
    assert run(here.observe(a.deployment, snapshot)) == reset
    assert [x.deployment.id for x in run(here.plan([a, b])).targets] == ["b"]  # at once, here
    assert store.exhausted["a"] == reset
    assert [x.deployment.id for x in run(there.plan([a, b])).targets] == ["a", "b"]  # within its view TTL
    clock.now += 1.0
    assert [x.deployment.id for x in run(there.plan([a, b])).targets] == ["b"]  # after it: seen
    clock.now = reset
    assert [x.deployment.id for x in run(there.plan([a, b])).targets] == ["a", "b"]
    assert here.metrics.count("QuotaSkipped", "a") == 1 and there.metrics.count("QuotaSkipped", "a") == 1


def test_a_429_exhausts_until_retry_after_or_one_second_and_never_moves_a_reset_earlier() -> None:
    store, clock = MemoryQuotaStore(), Clock()
    t = tracker(store, clock)
    dep = target("a").deployment
    assert run(t.observe(dep, None, rate_limited=True, retry_after_s=20)) == clock.now + 20
    assert run(t.observe(dep, None, rate_limited=True)) == clock.now + 20  # an earlier 1 s changes nothing
    assert store.exhausted["a"] == clock.now + 20 and store.calls["mark_exhausted"] == 1
    other = target("b").deployment
    assert run(t.observe(other, None, rate_limited=True)) == clock.now + 1.0
    assert t.metrics.count("ProviderRateLimited", "a") == 2
    # Headers with room left only inform the spread.
    assert run(t.observe(other, RateLimitSnapshot(limit_requests=100, remaining_requests=75))) == clock.now + 1.0


def test_a_broken_store_fails_open_and_is_counted() -> None:
    store, clock = MemoryQuotaStore(), Clock()
    t = tracker(store, clock)
    store.fail = True
    dep = target("a", rpm=1)
    assert [x.deployment.id for x in run(t.plan([dep])).targets] == ["a"]
    tickets = [run(t.admit(dep, requests=1, tokens=1)) for _ in range(3)]
    assert all(ticket is not None and not ticket.counted for ticket in tickets)
    assert t.metrics.counters.get("QuotaStoreError") == 4  # the read and three reservations


def test_without_a_store_exhaustion_is_still_kept_per_instance() -> None:
    clock = Clock()
    t = tracker(None, clock)
    a = target("a", rpm=1)
    run(t.observe(a.deployment, RateLimitSnapshot(remaining_tokens=0, tokens_reset_at=clock.now + 5)))
    plan = run(t.plan([a]))
    assert plan.targets == [] and plan.resets == {"a": clock.now + 5}
    clock.now += 5
    ticket = run(t.admit(a, requests=1, tokens=1))
    assert ticket is not None and not ticket.counted  # declared limits need the shared store


def test_a_call_reserved_near_the_windows_end_counts_in_the_next_window_too() -> None:
    store, clock = MemoryQuotaStore(), Clock(1_000_020.0)
    t = tracker(store, clock, window_s=60.0, boundary_guard_s=0.5)
    dep = target("a", rpm=2, tpm=100)
    window = t.window(clock.now)
    clock.now = t.window_end(window) - 0.2  # within the guard
    near_end = run(t.admit(dep, requests=1, tokens=40))
    assert near_end is not None and near_end.next_window_too
    assert store.windows[("a", window)] == store.windows[("a", window + 1)]
    run(t.settle(near_end, 10))  # corrected in both
    assert store.windows[("a", window)].tokens == 10 and store.windows[("a", window + 1)].tokens == 10
    # The next window already holds one: a second near-end call fits, a third is refused in full.
    assert run(t.admit(dep, requests=1, tokens=10)) is not None
    assert run(t.admit(dep, requests=1, tokens=10)) is None
    assert store.windows[("a", window)].requests == 2 and store.windows[("a", window + 1)].requests == 2
    clock.now = t.window_end(window)
    assert run(t.admit(dep, requests=1, tokens=10)) is None  # window + 1 is full already


def test_a_near_end_call_refused_by_the_next_window_takes_its_reservation_back() -> None:
    from llm_gateway.quotas.store import WindowCounts

    store, clock = MemoryQuotaStore(), Clock(1_000_020.0)
    t = tracker(store, clock, window_s=60.0, boundary_guard_s=0.5)
    window = t.window(clock.now)
    store.windows[("a", window + 1)] = WindowCounts(requests=2)
    clock.now = t.window_end(window) - 0.1
    assert run(t.admit(target("a", rpm=2), requests=1, tokens=10)) is None
    assert store.windows[("a", window)].requests == 0  # taken back


def test_metrics_are_emitted_per_deployment_at_most_once_per_interval(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "LLMGateway")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "llm-gateway")
    clock = Clock(0.0)
    metrics = QuotaMetrics(emit=True, flush_s=10.0, clock=clock)
    for _ in range(5):
        metrics.skipped("east")
    metrics.utilisation("east", 0.5)
    clock.now = 10.0
    metrics.skipped("east")
    metrics.utilisation("east", 0.25)
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    skipped = [d["QuotaSkipped"] for d in documents if "QuotaSkipped" in d]
    assert skipped == [[1.0], [5.0]]  # the first at once, then the sum of the interval
    assert [d["QuotaUtilisation"] for d in documents if "QuotaUtilisation" in d] == [[50.0], [25.0]]
    assert all(d["Deployment"] == "east" for d in documents)
    dimensions = {tuple(d["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]) for d in documents}
    assert dimensions == {("Deployment", "service")}
    assert metrics.count("QuotaSkipped", "east") == 6 and metrics.counters.get("QuotaSkipped") == 6
