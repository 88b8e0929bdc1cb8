"""The DynamoDB quota store on the moto server: the conditional window counter under concurrency, token
corrections, exhausted-until only ever moved later, and two trackers sharing it."""

from __future__ import annotations

import asyncio
import time
import uuid

from llm_gateway.quotas.metrics import QuotaMetrics
from llm_gateway.quotas.model import Deployment, RateLimitSnapshot, Target
from llm_gateway.quotas.store import DynamoDBQuotaStore
from llm_gateway.quotas.tracker import QuotaTracker
from local.stack import LocalStack


def store_of(stack: LocalStack) -> DynamoDBQuotaStore:
    return DynamoDBQuotaStore(stack.physical["QuotaTable"])


def test_concurrent_reservations_never_exceed_the_declared_limit(local_stack: LocalStack) -> None:
    store, deployment, window = store_of(local_stack), f"d-{uuid.uuid4().hex[:8]}", 7

    async def burst() -> list[bool]:
        calls = [
            store.reserve(deployment, window, requests=1, tokens=100, rpm=25, tpm=None, expires_at=int(time.time()))
            for _ in range(40)
        ]
        return [a.admitted for a in await asyncio.gather(*calls)]

    admitted = asyncio.run(burst())
    assert admitted.count(True) == 25
    counts = asyncio.run(store.read([deployment], window))[deployment].counts
    assert (counts.requests, counts.tokens) == (25, 2500)


def test_tokens_are_limited_and_corrected(local_stack: LocalStack) -> None:
    store, deployment = store_of(local_stack), f"d-{uuid.uuid4().hex[:8]}"

    def reserve(tokens: int) -> bool:
        admission = asyncio.run(
            store.reserve(deployment, 1, requests=1, tokens=tokens, rpm=None, tpm=1000, expires_at=0)
        )
        return admission.admitted

    assert reserve(700) and not reserve(400)
    asyncio.run(store.adjust(deployment, 1, tokens=-600))  # the call used 100 of its 700
    assert reserve(400)
    assert asyncio.run(store.read([deployment], 1))[deployment].counts.tokens == 500


def test_exhausted_until_only_moves_later_and_is_read_with_the_counts(local_stack: LocalStack) -> None:
    store, deployment = store_of(local_stack), f"d-{uuid.uuid4().hex[:8]}"
    now = time.time()
    assert asyncio.run(store.mark_exhausted(deployment, now + 30))
    assert not asyncio.run(store.mark_exhausted(deployment, now + 10))
    assert asyncio.run(store.mark_exhausted(deployment, now + 40))
    other = f"d-{uuid.uuid4().hex[:8]}"
    shared = asyncio.run(store.read([deployment, other], 3))
    assert shared[deployment].exhausted_until == round(now + 40, 3)
    assert shared[other].exhausted_until == 0.0 and shared[other].counts.requests == 0


def test_two_trackers_on_one_table_share_counts_and_exhaustion(local_stack: LocalStack) -> None:
    store = store_of(local_stack)
    suffix = uuid.uuid4().hex[:8]
    a = Target(Deployment(id=f"a-{suffix}", provider="openai", kind="openai", rpm=3), provider=None)  # type: ignore[arg-type]
    b = Target(Deployment(id=f"b-{suffix}", provider="openai", kind="openai", rpm=3), provider=None)  # type: ignore[arg-type]
    first = QuotaTracker(store, window_s=600, view_ttl_s=0.2, metrics=QuotaMetrics(emit=False))
    second = QuotaTracker(store, window_s=600, view_ttl_s=0.2, metrics=QuotaMetrics(emit=False))

    async def take(tracker: QuotaTracker, target: Target) -> bool:
        return await tracker.admit(target, requests=1, tokens=1) is not None

    assert [asyncio.run(take(first, a)) for _ in range(2)] == [True, True]
    assert [asyncio.run(take(second, a)) for _ in range(2)] == [True, False]  # 3 in all, whoever asks
    # The first learns it from the next read of its view: a is full, only b is planned.
    time.sleep(0.25)
    assert [t.deployment.id for t in asyncio.run(first.plan([a, b])).targets] == [b.deployment.id]
    reset = time.time() + 60
    snapshot = RateLimitSnapshot(remaining_requests=0, requests_reset_at=reset)
    asyncio.run(second.observe(b.deployment, snapshot))
    time.sleep(0.25)
    plan = asyncio.run(first.plan([a, b]))
    assert plan.targets == [] and plan.resets[b.deployment.id] == round(reset, 3)
