"""Quota-aware routing in the gateway, with in-memory providers and quota store: the spread over a model's
deployments, a 429 moving on to the next deployment, exhaustion skipped, all exhausted answered 429."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest

from llm_gateway.catalog import default_catalog
from llm_gateway.errors import AllProvidersRateLimitedError, ProviderUnavailableError, RateLimitedError
from llm_gateway.gateway import Gateway
from llm_gateway.interfaces import RequestContext
from llm_gateway.models import CompletionRequest, ProviderResponse, Usage
from llm_gateway.quotas.deployments import ConfiguredDeployments
from llm_gateway.quotas.metrics import QuotaMetrics
from llm_gateway.quotas.model import Deployment, RateLimitSnapshot, Target
from llm_gateway.quotas.tracker import QuotaTracker
from llm_gateway.routing.deadline import Deadline
from llm_gateway.routing.retry import RetryPolicy
from llm_gateway.routing.router import Router
from tests.support.quota_store import MemoryQuotaStore


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Deployed:
    """A provider adapter for one deployment: scripted outcomes, then answers with optional headers."""

    def __init__(self, name: str, outcomes: list[Any] | None = None) -> None:
        self.name = name
        self.outcomes = list(outcomes or [])
        self.calls = 0
        self.rate_limits: RateLimitSnapshot | None = None

    async def complete(self, request: Any, *, client: Any, timeout_s: float) -> ProviderResponse:
        self.calls += 1
        if self.outcomes:
            outcome = self.outcomes.pop(0)
            if isinstance(outcome, Exception):
                raise outcome
        response = ProviderResponse(
            content=f"{self.name} says hi", finish_reason="stop", usage=Usage(input_tokens=10, output_tokens=5)
        )
        response.rate_limits = self.rate_limits
        return response


async def _no_sleep(_: float) -> None:
    return None


def gateway(adapters: dict[str, Deployed], clock: Clock, **limits: Any) -> tuple[Gateway, MemoryQuotaStore]:
    catalog = default_catalog()
    targets = [Target(Deployment(id=d, provider="openai", kind="openai", **limits), a) for d, a in adapters.items()]
    providers = {"openai": next(iter(adapters.values()))}
    store = MemoryQuotaStore()
    built = Gateway(
        catalog=catalog,
        router=Router(catalog, providers.keys()),
        providers=providers,  # type: ignore[arg-type]
        deployments=ConfiguredDeployments(targets),
        client=lambda: None,  # type: ignore[arg-type,return-value]
        retry=RetryPolicy(max_attempts=3, sleep=_no_sleep),
        quotas=QuotaTracker(store, clock=clock, metrics=QuotaMetrics(emit=False)),
    )
    return built, store


def complete(gw: Gateway, content: str = "hello", **kw: Any) -> Any:
    kw.setdefault("model", "gpt-4o-mini")
    kw.setdefault("fallback", [])
    request = CompletionRequest.model_validate({"messages": [{"role": "user", "content": content}], **kw})
    ctx = RequestContext(tenant="t", request_id="r", deadline=Deadline(30))
    return asyncio.run(gw.complete(request, ctx))


def test_requests_spread_evenly_over_two_deployments_and_attempts_name_them() -> None:
    a, b = Deployed("a"), Deployed("b")
    gw, store = gateway({"a": a, "b": b}, Clock(), rpm=60)
    served = Counter(complete(gw).attempts[0].deployment for _ in range(40))
    assert served == Counter({"a": 20, "b": 20})
    assert a.calls == 20 and b.calls == 20
    assert store.calls["reserve"] == 40


def test_a_429_tries_the_same_models_next_deployment_unretried_before_another_model() -> None:
    a = Deployed("a", [RateLimitedError("429", retry_after=12)])
    b = Deployed("b")
    clock = Clock()
    gw, store = gateway({"a": a, "b": b}, clock)
    result = complete(gw)
    assert result.model == "gpt-4o-mini"
    assert [(x.deployment, x.outcome) for x in result.attempts] == [("a", "error"), ("b", "success")]
    assert a.calls == 1  # not retried: b had room
    assert store.exhausted["a"] == clock.now + 12
    # Until then, a is not called again.
    for _ in range(3):
        assert complete(gw).attempts[0].deployment == "b"
    assert a.calls == 1


def test_headers_saying_zero_left_keep_the_deployment_out_until_its_reset() -> None:
    a, b = Deployed("a"), Deployed("b")
    clock = Clock()
    gw, _ = gateway({"a": a, "b": b}, clock)
    a.rate_limits = RateLimitSnapshot(limit_requests=5, remaining_requests=0, requests_reset_at=clock.now + 8)
    assert complete(gw).attempts[0].deployment == "a"  # it answered, and said nothing is left
    assert {complete(gw).attempts[0].deployment for _ in range(4)} == {"b"}
    assert a.calls == 1
    clock.now += 8
    a.rate_limits = None
    assert "a" in {complete(gw).attempts[0].deployment for _ in range(2)}


def test_every_deployment_exhausted_is_a_429_at_the_earliest_reset_without_a_provider_call() -> None:
    a, b = Deployed("a"), Deployed("b")
    clock = Clock()
    gw, store = gateway({"a": a, "b": b}, clock)
    store.exhausted.update({"a": clock.now + 30.2, "b": clock.now + 7.4})
    with pytest.raises(AllProvidersRateLimitedError) as info:
        complete(gw, fallback=["gpt-4.1-mini"])  # every model of the chain is served by a and b
    assert info.value.http_status == 429 and info.value.code == "rate_limited"
    assert info.value.retry_after == 8  # the earliest reset, rounded up
    assert info.value.attempts == []
    assert a.calls == 0 and b.calls == 0


def test_declared_limits_full_is_answered_by_the_gateway_itself() -> None:
    a, b = Deployed("a"), Deployed("b")
    clock = Clock()
    gw, _ = gateway({"a": a, "b": b}, clock, rpm=2)
    for _ in range(4):
        complete(gw)
    with pytest.raises(AllProvidersRateLimitedError) as info:
        complete(gw)
    window_end = gw.quotas.window_end(gw.quotas.window(clock.now))  # type: ignore[union-attr]
    assert info.value.retry_after == max(1, -int(-(window_end - clock.now) // 1))
    assert a.calls == 2 and b.calls == 2


def test_an_outage_on_one_deployment_moves_on_after_its_retries() -> None:
    a = Deployed("a", [ProviderUnavailableError("503")] * 3)
    b = Deployed("b")
    gw, _ = gateway({"a": a, "b": b}, Clock())
    result = complete(gw)
    assert [x.deployment for x in result.attempts] == ["a", "a", "a", "b"]
    assert result.attempts[-1].outcome == "success"


def test_the_last_deployment_keeps_the_retry_policy_on_a_429() -> None:
    only = Deployed("only", [RateLimitedError("429", retry_after=0.01)])
    gw, _ = gateway({"only": only}, Clock())
    result = complete(gw)
    assert [x.outcome for x in result.attempts] == ["error", "success"] and only.calls == 2


def test_a_stream_moves_on_from_a_429_deployment_and_settles_its_quota_at_the_end() -> None:
    from llm_gateway.streaming.events import StreamDone
    from tests.support.streams import StreamingProvider, answer, build, context, request

    clock = Clock()
    limited = StreamingProvider("a", [RateLimitedError("429", retry_after=5)])
    fine = StreamingProvider("b", answer("from ", "b"))
    store = MemoryQuotaStore()
    targets = [
        Target(Deployment(id="a", provider="openai", kind="openai", tpm=100_000), limited),
        Target(Deployment(id="b", provider="openai", kind="openai", tpm=100_000), fine),
    ]
    gw = build(
        {"openai": limited},
        deployments=ConfiguredDeployments(targets),
        quotas=QuotaTracker(store, clock=clock, metrics=QuotaMetrics(emit=False)),
    )

    async def run() -> Any:
        stream = await gw.open_stream(request(model="gpt-4o-mini", fallback=[]), context())
        return [event async for event in stream][-1]

    done = asyncio.run(run())
    assert isinstance(done, StreamDone)
    assert [(a.deployment, a.outcome) for a in done.result.attempts] == [("a", "error"), ("b", "success")]
    assert len(limited.stream_calls) == 1 and store.exhausted["a"] == clock.now + 5
    window = gw.quotas.window(clock.now)  # type: ignore[union-attr]
    assert store.windows[("b", window)].tokens == done.result.usage.total_tokens  # the estimate, corrected
    assert store.windows[("a", window)].tokens == 0  # the failed call gave its tokens back
