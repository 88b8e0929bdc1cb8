"""The completion path with in-memory providers (the integration suite runs the same over real sockets)."""

import asyncio
import random

import pytest

from llm_gateway.catalog import default_catalog
from llm_gateway.deadline import Deadline
from llm_gateway.errors import (
    AllProvidersFailedError,
    ContextTooLongError,
    ProviderBadRequestError,
    ProviderUnavailableError,
    RateLimitedError,
)
from llm_gateway.gateway import Gateway
from llm_gateway.models import CompletionRequest, ProviderResponse, Usage
from llm_gateway.retry import RetryPolicy
from llm_gateway.routing import Router
from llm_gateway.seams import RequestContext


class ScriptedProvider:
    def __init__(self, name, outcomes=()):
        self.name = name
        self.outcomes = list(outcomes)
        self.calls = []

    async def complete(self, request, *, client, timeout_s):
        self.calls.append(request)
        if self.outcomes:
            outcome = self.outcomes.pop(0)
            if isinstance(outcome, Exception):
                raise outcome
        return ProviderResponse(
            content=f"{self.name} says hi", finish_reason="stop", usage=Usage(input_tokens=1000, output_tokens=100)
        )


async def _no_sleep(_):
    return None


def make(providers, **router_kw):
    catalog = default_catalog()
    router = Router(catalog, providers.keys(), **router_kw)
    return Gateway(
        catalog=catalog,
        router=router,
        providers=providers,
        client=lambda: None,
        retry=RetryPolicy(max_attempts=2, sleep=_no_sleep, rng=random.Random(0)),
    )


def complete(gateway, **kw):
    kw.setdefault("messages", [{"role": "user", "content": "hello"}])
    ctx = RequestContext(tenant="t", request_id="r", deadline=Deadline(30))
    return asyncio.run(gateway.complete(CompletionRequest.model_validate(kw), ctx))


def test_success_reports_cost_usage_and_one_attempt():
    openai = ScriptedProvider("openai")
    result = complete(make({"openai": openai}), model="gpt-4o-mini")
    assert result.provider == "openai" and result.model == "gpt-4o-mini"
    assert result.usage.input_tokens == 1000 and result.usage.output_tokens == 100
    assert result.cost_usd == pytest.approx((1000 * 0.15 + 100 * 0.60) / 1e6)
    assert [a.outcome for a in result.attempts] == ["success"]
    assert openai.calls[0].model == "gpt-4o-mini"


def test_falls_back_across_providers_with_every_attempt_reported():
    gemini = ScriptedProvider("gemini", [ProviderUnavailableError("503"), ProviderUnavailableError("503")])
    openai = ScriptedProvider("openai")
    result = complete(make({"gemini": gemini, "openai": openai}), tier="fast")
    assert result.provider == "openai"
    assert [(a.provider, a.outcome, a.error_class) for a in result.attempts] == [
        ("gemini", "error", "ProviderUnavailableError"),
        ("gemini", "error", "ProviderUnavailableError"),
        ("openai", "success", None),
    ]


def test_bad_request_neither_retries_nor_falls_back():
    gemini = ScriptedProvider("gemini", [ProviderBadRequestError("400")])
    openai = ScriptedProvider("openai")
    with pytest.raises(ProviderBadRequestError) as info:
        complete(make({"gemini": gemini, "openai": openai}), tier="fast")
    assert len(gemini.calls) == 1 and openai.calls == []
    assert len(info.value.attempts) == 1


def test_context_too_long_moves_only_to_larger_windows():
    openai = ScriptedProvider("openai", [ContextTooLongError("too long")])
    anthropic = ScriptedProvider("anthropic")
    gemini = ScriptedProvider("gemini")
    result = complete(
        make({"openai": openai, "anthropic": anthropic, "gemini": gemini}),
        model="gpt-4o-mini",
        fallback=["gpt-4o", "claude-3-5-haiku-latest"],
    )
    # gpt-4o has the same 128k window as gpt-4o-mini, so it is skipped; claude's 200k is larger.
    assert result.model == "claude-3-5-haiku-latest"
    assert [a.model for a in result.attempts] == ["gpt-4o-mini", "claude-3-5-haiku-latest"]


def test_all_rate_limited_is_a_429_with_attempts():
    gemini = ScriptedProvider("gemini", [RateLimitedError("429", retry_after=0.01)] * 10)
    openai = ScriptedProvider("openai", [RateLimitedError("429", retry_after=0.01)] * 10)
    with pytest.raises(AllProvidersFailedError) as info:
        complete(make({"gemini": gemini, "openai": openai}), tier="fast")
    assert info.value.http_status == 429 and info.value.code == "rate_limited" and info.value.retryable
    assert len(info.value.attempts) == 2 * 2 + 2  # two models per provider in the fast tier, two tries each


class RecordingBreaker:
    def __init__(self, open_models):
        self.open = set(open_models)
        self.records = []

    async def allow(self, provider, model):
        return model not in self.open

    async def record(self, provider, model, *, ok):
        self.records.append((model, ok))

    async def last_failure_at(self, provider, model):
        return 0.0


def test_breaker_skips_open_circuits_but_always_tries_something():
    gemini = ScriptedProvider("gemini")
    openai = ScriptedProvider("openai")
    gateway = make({"gemini": gemini, "openai": openai})
    gateway.breaker = RecordingBreaker({"gemini-2.0-flash-lite"})
    assert complete(gateway, tier="fast").model == "gpt-4o-mini"
    gateway.breaker = RecordingBreaker({m.id for m in default_catalog().models})
    assert complete(gateway, tier="fast").model == "gemini-2.0-flash-lite"  # all open: still one call
