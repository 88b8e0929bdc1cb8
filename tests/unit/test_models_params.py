"""Aliases, /v1/models entries, the parameter policy, n (merging and summing), logprobs translation
and the cache entry of several choices: in memory, no sockets."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from llm_gateway.accounting.cache import cache_key, decode_entry, encode_entry, is_cacheable_result
from llm_gateway.catalog import default_catalog
from llm_gateway.errors import InvalidRequestError, NoEligibleModelError, UnknownModelError
from llm_gateway.gateway import Gateway, canonical_models
from llm_gateway.http import chat_params, models_list, openai_chat, stream_params
from llm_gateway.http import framing as api
from llm_gateway.interfaces import RequestContext
from llm_gateway.models import (
    Choice,
    CompletionRequest,
    CompletionResult,
    Message,
    ProviderRequest,
    ProviderResponse,
    Usage,
)
from llm_gateway.providers.anthropic import AnthropicProvider
from llm_gateway.providers.gemini import GeminiProvider
from llm_gateway.providers.openai import OpenAIProvider
from llm_gateway.routing.choices import merge
from llm_gateway.routing.deadline import Deadline
from llm_gateway.routing.params import PROVIDER_PARAMS, params_in_use, unsupported
from llm_gateway.routing.retry import RetryPolicy
from llm_gateway.routing.router import Router

CATALOG = default_catalog()
USER = {"role": "user", "content": "Hello"}


def chat(**body: Any) -> CompletionRequest:
    """The chat route's conversion, with its stream check (``stream`` and ``stream_options``)."""
    data = {"model": "gpt-4o-mini", "messages": [USER], **body}
    validated = api.validate(openai_chat.ChatCompletionsBody, data)
    converted = openai_chat.to_gateway_request(validated)
    stream_params.chat_stream(validated.stream, validated.stream_options, converted)
    return converted


def request(**fields: Any) -> CompletionRequest:
    return CompletionRequest.model_validate({"messages": [USER], **fields})


# --------------------------------------------------------------------------- aliases


@pytest.mark.parametrize(
    ("name", "model_id"),
    [
        ("gpt-4o-mini", "gpt-4o-mini"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("openai/gpt-4o-mini", "gpt-4o-mini"),
        ("openai/gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("anthropic/claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("gemini/gemini-2.0-flash-001", "gemini-2.0-flash"),
        ("openai_compatible/local-llama", "local-llama"),
    ],
)
def test_ids_aliases_and_provider_prefixes_resolve(name: str, model_id: str) -> None:
    assert CATALOG.get(name).id == model_id


@pytest.mark.parametrize("name", ["gemini/gpt-4o-mini", "openai/", "gpt-4o-mini-2099-01-01", "openai/openai/gpt-4o"])
def test_wrong_prefixes_and_unknown_names_do_not_resolve(name: str) -> None:
    assert CATALOG.resolve(name) is None
    with pytest.raises(UnknownModelError) as caught:
        CATALOG.get(name)
    assert caught.value.details["param"] == "model"


def test_every_alias_is_unique_and_never_a_model_id() -> None:
    ids = {m.id for m in CATALOG.models}
    aliases = [a for m in CATALOG.models for a in m.aliases]
    assert len(aliases) == len(set(aliases)) and not set(aliases) & ids


def test_aliases_share_the_cache_key_of_their_model() -> None:
    named = canonical_models(
        request(model="openai/gpt-4o-mini-2024-07-18", fallback=["claude-3-5-haiku-20241022"]), CATALOG
    )
    assert named.model == "gpt-4o-mini" and named.fallback == ["claude-3-5-haiku-latest"]
    plain = request(model="gpt-4o-mini", fallback=["claude-3-5-haiku-latest"])
    assert cache_key("t", named, catalog_version="v") == cache_key("t", plain, catalog_version="v")
    unknown = request(model="no-such-model")
    assert canonical_models(unknown, CATALOG) is unknown  # left for the router's model_not_found


def test_router_serves_an_alias_with_the_catalog_model() -> None:
    router = Router(CATALOG, {"openai", "anthropic", "gemini"})
    plan = router.plan(request(model="anthropic/claude-3-5-haiku-20241022"))
    assert plan.primary.spec.id == "claude-3-5-haiku-latest"


# --------------------------------------------------------------------------- /v1/models


def test_models_list_entries() -> None:
    listing = models_list.list_models(CATALOG)
    assert listing["object"] == "list"
    by_id = {e["id"]: e for e in listing["data"]}
    assert {m.id for m in CATALOG.models} <= set(by_id)
    assert {"tier:fast", "tier:balanced", "tier:best"} <= set(by_id)
    assert by_id["gpt-4o-mini-2024-07-18"]["alias_of"] == "gpt-4o-mini"
    entry = by_id["claude-sonnet-4-5"]
    assert (entry["object"], entry["owned_by"], entry["context_window"]) == ("model", "anthropic", 200000)
    assert entry["pricing"]["output_per_mtok"] == 15.0 and "tools" in entry["capabilities"]
    assert all(isinstance(e["created"], int) and e["created"] > 0 for e in listing["data"])


def test_retrieve_unknown_is_model_not_found() -> None:
    with pytest.raises(UnknownModelError) as caught:
        models_list.retrieve_model(CATALOG, "tier:ultra")
    assert caught.value.http_status == 404 and caught.value.code == "model_not_found"


def test_models_routes_answer_errors_in_openais_shape() -> None:
    assert models_list.openai_shaped("/v1/models") and models_list.openai_shaped("/v1/models/openai/gpt-4o")
    assert models_list.openai_shaped("/v1/chat/completions") and not models_list.openai_shaped("/v1/completions")


# --------------------------------------------------------------------------- parameter policy


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"audio": {"voice": "alloy"}}, "audio"),
        ({"modalities": ["audio"]}, "modalities"),
        ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
        ({"reasoning_effort": "high"}, "reasoning_effort"),
        ({"web_search_options": {}}, "web_search_options"),
        ({"store": True}, "store"),
        ({"service_tier": "priority"}, "service_tier"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),  # only with stream: true
        ({"stream": False, "stream_options": {"include_usage": True}}, "stream_options"),
        ({"stream": True, "stream_options": {"include_usage": "yes"}}, "stream_options.include_usage"),
        ({"stream": True, "stream_options": {"chunk_size": 3}}, "stream_options.chunk_size"),
        ({"stream": True, "stream_options": {"include_obfuscation": True}}, "stream_options.include_obfuscation"),
        ({"stream": True, "stream_options": ["include_usage"]}, "stream_options"),
        ({"stream": True, "n": 2}, "n"),  # a stream carries one choice
        ({"stream": True, "logprobs": True}, "logprobs"),
        ({"verbosity": "low"}, "verbosity"),
        ({"prompt_cache_key": "k"}, "prompt_cache_key"),
        ({"not_an_openai_field": 1}, "not_an_openai_field"),
        ({"top_logprobs": 2}, "top_logprobs"),  # without logprobs
        ({"n": 0}, "n"),
        ({"top_logprobs": 21, "logprobs": True}, "top_logprobs"),
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"logit_bias": {"1": 101}}, "logit_bias"),
    ],
)
def test_refused_parameters_are_400s_naming_them(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        chat(**body)
    assert caught.value.http_status == 400 and caught.value.details["param"] == param


def test_default_values_are_not_errors() -> None:
    converted = chat(
        n=1, logprobs=False, top_logprobs=0, presence_penalty=0, frequency_penalty=0, logit_bias={}, store=False,
        service_tier="default", stream=False, stream_options=None, modalities=["text"], verbosity="medium",
        audio=None, prediction=None, reasoning_effort=None,
    )  # fmt: skip
    assert params_in_use(converted) == [] and converted.n == 1


def test_translated_parameters_reach_the_request() -> None:
    converted = chat(n=3, logprobs=True, top_logprobs=4, seed=1, presence_penalty=0.5, safety_identifier="u1")
    assert (converted.n, converted.top_logprobs, converted.user) == (3, 4, "u1")
    assert params_in_use(converted) == ["logprobs", "top_logprobs", "seed", "presence_penalty"]


def test_every_table_entry_is_a_known_chat_parameter() -> None:
    routed = {p for params in PROVIDER_PARAMS.values() for p in params}
    # top_k is not an OpenAI parameter: it comes from /v1/messages and /v1/completions only.
    assert routed - {"top_k"} <= chat_params.KNOWN and "top_k" not in chat_params.KNOWN
    assert not set(chat_params.REFUSED) & chat_params.KNOWN
    assert unsupported(["logprobs", "seed"], CATALOG.get("claude-haiku-4-5")) == ["logprobs", "seed"]
    assert unsupported(["logprobs", "logit_bias"], CATALOG.get("gemini-2.0-flash")) == ["logit_bias"]
    assert unsupported(["logprobs", "seed"], CATALOG.get("gemini-2.5-flash")) == ["logprobs"]  # per model
    assert unsupported(["logit_bias"], CATALOG.get("gpt-4o-mini")) == []


def test_named_model_that_cannot_honour_a_parameter_is_a_400_naming_it() -> None:
    router = Router(CATALOG, {"openai", "anthropic", "gemini"})
    with pytest.raises(InvalidRequestError) as caught:
        router.plan(request(model="claude-haiku-4-5", logprobs=True))
    assert caught.value.details["param"] == "logprobs" and "claude-haiku-4-5" in caught.value.message


def test_routing_skips_models_that_cannot_honour_a_parameter() -> None:
    router = Router(CATALOG, {"openai", "anthropic", "gemini"})
    plan = router.plan(request(model="gpt-4o-mini", logprobs=True))
    assert [c.spec.provider for c in plan.candidates] == ["openai", "gemini", "gemini"]  # no anthropic fallback
    plan = router.plan(request(tier="balanced", logit_bias={"1": 5}))
    assert {c.spec.provider for c in plan.candidates} == {"openai"}
    with pytest.raises(NoEligibleModelError) as caught:
        Router(CATALOG, {"anthropic"}).plan(request(tier="fast", seed=3))
    assert caught.value.details["param"] == "seed"


# --------------------------------------------------------------------------- n and logprobs on the wire


def wire(**fields: Any) -> ProviderRequest:
    return ProviderRequest(model="m", messages=[Message(role="user", content="hi")], max_tokens=10, **fields)


def test_adapters_send_n_and_logprobs_in_their_own_names() -> None:
    body = (
        OpenAIProvider(base_url="http://x", api_key=None).build_request(wire(n=2, logprobs=True, top_logprobs=3)).body
    )
    assert (body["n"], body["logprobs"], body["top_logprobs"]) == (2, True, 3)
    plain = OpenAIProvider(base_url="http://x", api_key=None).build_request(wire()).body
    assert not {"n", "logprobs", "top_logprobs", "user", "logit_bias"} & set(plain)
    config = GeminiProvider(base_url="http://x", api_key=None).build_request(wire(n=2, logprobs=True, top_logprobs=3))
    generation = config.body["generationConfig"]
    assert (generation["candidateCount"], generation["responseLogprobs"], generation["logprobs"]) == (2, True, 3)
    anthropic = AnthropicProvider(base_url="http://x", api_key=None).build_request(wire(user="u")).body
    assert anthropic["metadata"] == {"user_id": "u"} and "n" not in anthropic


def test_gemini_candidates_and_logprobs_become_choices_in_openais_shape() -> None:
    logprobs = {
        "chosenCandidates": [{"token": "Hi", "logProbability": -0.1}, {"token": "!", "logProbability": -0.2}],
        "topCandidates": [
            {"candidates": [{"token": "Hi", "logProbability": -0.1}, {"token": "Hey", "logProbability": -2.0}]},
            {"candidates": [{"token": "!", "logProbability": -0.2}]},
        ],
    }
    data = {
        "candidates": [
            {"index": 1, "finishReason": "STOP", "content": {"parts": [{"text": "Yo"}]}},
            {"index": 0, "finishReason": "STOP", "content": {"parts": [{"text": "Hi!"}]}, "logprobsResult": logprobs},
        ],
        "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 4},
    }
    response = GeminiProvider(base_url="http://x", api_key=None).parse_response(data, wire(n=2, logprobs=True))
    assert response.content == "Hi!" and [c.content for c in response.alternatives] == ["Yo"]
    assert response.logprobs is not None
    first = response.logprobs["content"][0]
    assert (first["token"], first["logprob"], first["bytes"]) == ("Hi", -0.1, [72, 105])
    assert [t["token"] for t in first["top_logprobs"]] == ["Hi", "Hey"]
    assert response.usage.output_tokens == 4


def test_parallel_answers_merge_with_usage_summed() -> None:
    def answer(text: str, tokens: int) -> ProviderResponse:
        return ProviderResponse(content=text, finish_reason="stop", usage=Usage(input_tokens=10, output_tokens=tokens))

    merged = merge([answer("a", 1), answer("b", 2), answer("c", 3)])
    assert merged.content == "a" and [c.content for c in merged.alternatives] == ["b", "c"]
    assert (merged.usage.input_tokens, merged.usage.output_tokens) == (30, 6)


def result(**changes: Any) -> CompletionResult:
    values: dict[str, Any] = {
        "content": "one",
        "provider": "anthropic",
        "model": "claude-haiku-4-5",
        "finish_reason": "stop",
        "usage": Usage(input_tokens=20, output_tokens=2),
        "cost_usd": 0.0001,
        "latency_ms": 1.0,
        "attempts": [],
        "alternatives": [Choice(content="two", finish_reason="stop")],
        "logprobs": {"content": [], "refusal": None},
    }
    return CompletionResult(**{**values, **changes})


def test_all_choices_are_cached_together_and_only_when_all_are_complete() -> None:
    req = request(n=2, temperature=0)
    cached, saved = decode_entry(encode_entry(result()), req)
    assert [cached.content, *(c.content for c in cached.alternatives)] == ["one", "two"]
    assert cached.logprobs == {"content": [], "refusal": None} and saved == 0.0001
    assert is_cacheable_result(req, result())
    assert not is_cacheable_result(req, result(alternatives=[Choice(content="tw", finish_reason="length")]))


def test_choice_parameters_are_in_the_cache_key_only_when_set() -> None:
    base = cache_key("t", request(), catalog_version="v")
    assert cache_key("t", request(n=1, logprobs=False), catalog_version="v") == base
    for change in ({"n": 2}, {"logprobs": True}, {"presence_penalty": 0.1}, {"logit_bias": {"1": 1}}):
        assert cache_key("t", request(**change), catalog_version="v") != base


def test_chat_completion_has_one_choice_per_answer() -> None:
    body = openai_chat.to_chat_completion(result())
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert [c["message"]["content"] for c in body["choices"]] == ["one", "two"]
    assert body["choices"][0]["logprobs"] == {"content": [], "refusal": None} and body["choices"][1]["logprobs"] is None


# --------------------------------------------------------------------------- n through the gateway (in memory)


class Answering:
    """An in-memory provider: each call answers with its own text and 100 input / 10 output tokens."""

    def __init__(self, name: str, *, native_n: bool) -> None:
        self.name = name
        self.native_n = native_n
        self.calls: list[ProviderRequest] = []

    async def complete(self, wire: ProviderRequest, *, client: Any, timeout_s: float) -> ProviderResponse:
        self.calls.append(wire)
        texts = [f"{self.name} answer {len(self.calls)}.{i}" for i in range(wire.n)]
        return ProviderResponse(
            content=texts[0],
            finish_reason="stop",
            usage=Usage(input_tokens=100, output_tokens=10 * wire.n),
            alternatives=[Choice(content=t, finish_reason="stop") for t in texts[1:]],
        )


class Reserving:
    def __init__(self) -> None:
        self.reserved: list[float] = []

    async def reserve(self, ctx: Any, amount_usd: float) -> float:
        self.reserved.append(amount_usd)
        return amount_usd

    async def settle(self, ctx: Any, reservation: Any, actual_usd: float) -> None:
        return None


def run_n(provider: Answering, model: str, n: int) -> tuple[CompletionResult, float]:
    budget = Reserving()
    gateway = Gateway(
        catalog=CATALOG,
        router=Router(CATALOG, {provider.name}),
        providers={provider.name: provider},  # type: ignore[dict-item]
        client=lambda: None,  # type: ignore[arg-type,return-value]
        retry=RetryPolicy(max_attempts=1),
        budget=budget,  # type: ignore[arg-type]
    )
    ctx = RequestContext(tenant="t", request_id="r", deadline=Deadline(30))
    answer = asyncio.run(gateway.complete(request(model=model, n=n, max_tokens=50, fallback=[]), ctx))
    [reserved] = budget.reserved
    return answer, reserved


def test_native_n_is_one_call_and_parallel_n_is_n_calls_with_usage_and_cost_summed() -> None:
    native = Answering("openai", native_n=True)
    answer, reserved = run_n(native, "gpt-4o-mini", 3)
    assert [c.n for c in native.calls] == [3] and len(answer.alternatives) == 2
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (100, 30)
    spec = CATALOG.get("gpt-4o-mini")
    assert reserved >= spec.worst_case_cost(0, 3 * 50)  # n outputs of max_tokens each

    parallel = Answering("anthropic", native_n=False)
    answer, reserved_parallel = run_n(parallel, "claude-3-5-haiku-latest", 3)
    assert [c.n for c in parallel.calls] == [1, 1, 1] and len(answer.attempts) == 3
    assert [answer.content, *(c.content for c in answer.alternatives)] == [f"anthropic answer {i}.0" for i in (1, 2, 3)]
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (300, 30)
    spec = CATALOG.get("claude-3-5-haiku-latest")
    assert answer.cost_usd == pytest.approx(spec.cost(answer.usage))
    one_input = run_n(Answering("anthropic", native_n=False), "claude-3-5-haiku-latest", 1)[1] - spec.worst_case_cost(
        0, 50
    )
    assert reserved_parallel == pytest.approx(3 * one_input + spec.worst_case_cost(0, 150))  # n inputs, n outputs
