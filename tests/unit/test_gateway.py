"""The completion path with in-memory providers (the integration suite runs the same over real sockets)."""

import asyncio
import json

import pytest

from llm_gateway.catalog import default_catalog
from llm_gateway.documents.tokens import (
    ESTIMATE_MARGIN,
    IMAGE_MAX_TOKENS,
    NATIVE_SCHEMA_OVERHEAD_TOKENS,
    estimate_message_tokens,
    estimate_text_tokens,
)
from llm_gateway.errors import (
    AllProvidersFailedError,
    ContextTooLongError,
    ProviderBadRequestError,
    ProviderUnavailableError,
    RateLimitedError,
)
from llm_gateway.gateway import Gateway
from llm_gateway.interfaces import RequestContext
from llm_gateway.models import CompletionRequest, Message, ProviderResponse, Usage
from llm_gateway.providers.base import json_instruction
from llm_gateway.routing.deadline import Deadline
from llm_gateway.routing.retry import RetryPolicy
from llm_gateway.routing.router import Router


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
        retry=RetryPolicy(max_attempts=2, sleep=_no_sleep),
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

    async def available(self, provider, model):
        return model not in self.open

    async def allow(self, provider, model):
        return model not in self.open

    async def record(self, provider, model, *, ok, auth_failure=False):
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


# --------------------------------------------------------------------------- structured output fallback

SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


def test_a_native_schema_rejected_by_one_provider_falls_back_to_the_next():
    openai = ScriptedProvider("openai", [ProviderBadRequestError("400 invalid schema for response_format")])
    anthropic = ScriptedProvider("anthropic")
    result = complete(
        make({"openai": openai, "anthropic": anthropic}),
        model="gpt-4o-mini",
        fallback=["claude-3-5-haiku-latest"],
        response_format={"type": "json_schema", "schema": SCHEMA},
    )
    assert openai.calls[0].native_structured  # the rejected call did send the schema natively
    assert result.model == "claude-3-5-haiku-latest"
    assert [(a.model, a.outcome, a.error_code) for a in result.attempts] == [
        ("gpt-4o-mini", "error", "provider_bad_request"),
        ("claude-3-5-haiku-latest", "success", None),
    ]


def test_a_bad_request_without_a_native_schema_still_stops():
    for body in ({}, {"response_format": {"type": "json_object"}}):  # Claude: JSON by instruction, not native
        anthropic = ScriptedProvider("anthropic", [ProviderBadRequestError("400")])
        openai = ScriptedProvider("openai")
        with pytest.raises(ProviderBadRequestError):
            complete(
                make({"openai": openai, "anthropic": anthropic}),
                model="claude-3-5-haiku-latest",
                fallback=["gpt-4o-mini"],
                **body,
            )
        assert not anthropic.calls[0].native_structured and openai.calls == []


# --------------------------------------------------------------------------- budget reservations


class RecordingBudget:
    def __init__(self):
        self.reserved = []
        self.settled = []

    async def reserve(self, ctx, amount_usd):
        self.reserved.append(amount_usd)
        return Reservation(amount_usd)

    async def settle(self, ctx, reservation, actual_usd):
        self.settled.append(actual_usd)


class Reservation:
    def __init__(self, amount_usd):
        self.amount_usd = amount_usd


def reserved_input_tokens(**body):
    """The input tokens the gateway reserved for (the reservation minus max_tokens of output)."""
    budget = RecordingBudget()
    model = body["model"]
    gateway = make(
        {
            "openai": ScriptedProvider("openai"),
            "anthropic": ScriptedProvider("anthropic"),
            "gemini": ScriptedProvider("gemini"),
        }
    )
    gateway.budget = budget
    complete(gateway, fallback=[], max_tokens=10, **body)
    spec = default_catalog().get(model)
    [amount] = budget.reserved
    return (amount - spec.worst_case_cost(0, 10)) * 1e6 / spec.input_per_mtok


def test_the_reservation_counts_the_json_instruction_the_adapter_adds():
    messages = [{"role": "user", "content": "x" * 40}]
    plain = reserved_input_tokens(model="claude-3-5-haiku-latest", messages=messages)
    # Claude has no JSON mode: the adapter sends an instruction as a system message, billed as input.
    json_object = reserved_input_tokens(
        model="claude-3-5-haiku-latest", messages=messages, response_format={"type": "json_object"}
    )
    instruction = json_instruction(_wire(response_format={"type": "json_object"}))
    user = Message(role="user", content="x" * 40)
    assert plain >= ESTIMATE_MARGIN * estimate_message_tokens([user])
    assert json_object >= ESTIMATE_MARGIN * estimate_message_tokens([Message(role="system", content=instruction), user])
    assert json_object > plain


def test_the_reservation_counts_a_native_schema_and_images_at_their_maximum():
    messages = [{"role": "user", "content": "x" * 40}]
    big_schema = {"type": "object", "properties": {f"field_{i}": {"type": "string"} for i in range(50)}}
    native = reserved_input_tokens(
        model="gpt-4o-mini", messages=messages, response_format={"type": "json_schema", "schema": big_schema}
    )
    plain = reserved_input_tokens(model="gpt-4o-mini", messages=messages)
    schema_tokens = estimate_text_tokens(json.dumps(big_schema, separators=(",", ":")))
    assert native - plain >= ESTIMATE_MARGIN * (schema_tokens + NATIVE_SCHEMA_OVERHEAD_TOKENS) - 1
    image = {"type": "image_url", "url": "data:image/png;base64,AAAA"}
    two_images = [{"role": "user", "content": [{"type": "text", "text": "x" * 40}, image, image]}]
    with_images = reserved_input_tokens(model="gpt-4o-mini", messages=two_images)
    assert with_images - plain >= 2 * IMAGE_MAX_TOKENS["openai"] - 1


def test_the_reservation_is_released_when_a_call_fails():
    budget = RecordingBudget()
    gateway = make({"openai": ScriptedProvider("openai", [ProviderBadRequestError("400")])})
    gateway.budget = budget
    with pytest.raises(ProviderBadRequestError):
        complete(gateway, model="gpt-4o-mini", fallback=[])
    assert len(budget.reserved) == 1 and budget.settled == [0.0]


def _wire(**body):
    from llm_gateway.models import ProviderRequest

    request = CompletionRequest.model_validate({"messages": [{"role": "user", "content": "x"}], **body})
    return ProviderRequest(model="m", messages=request.messages, max_tokens=1, response_format=request.response_format)
