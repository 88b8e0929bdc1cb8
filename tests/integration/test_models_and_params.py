"""The rest of the Chat Completions surface over the local stack, with the official ``openai`` client:
``/v1/models``, aliases, ``n`` on each provider, the parameter policy and ``logprobs``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import openai
import pytest

from local.simulator import ProviderSimulator
from local.stack import LocalStack
from tests.support.clients import openai_client

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_real_aws")]

KEY = "key-a"  # tests/conftest.py: key-a -> tenant-a


@pytest.fixture
def client(local_stack: LocalStack) -> openai.OpenAI:
    return openai_client(local_stack, KEY)


@pytest.fixture
def api(local_stack: LocalStack) -> Iterator[httpx.Client]:
    assert local_stack.api_url
    with httpx.Client(base_url=local_stack.api_url, timeout=60) as http:
        yield http


def prompt(text: str = "Say hello") -> str:
    return f"{text} ({uuid.uuid4().hex[:8]})"  # unique: never a cache hit


def user(text: str | None = None) -> list[dict[str, str]]:
    return [{"role": "user", "content": text or prompt()}]


# --------------------------------------------------------------------------- /v1/models


def test_models_list_has_ids_aliases_and_tiers_with_catalog_facts(client: openai.OpenAI) -> None:
    models = {m.id: m for m in client.models.list()}
    mini = models["gpt-4o-mini"]
    assert mini.object == "model" and mini.owned_by == "openai" and mini.created > 1_700_000_000
    extra = mini.model_extra or {}
    assert extra["context_window"] == 128000 and extra["pricing"]["input_per_mtok"] == 0.15
    assert "json_schema" in extra["capabilities"] and "gpt-4o-mini-2024-07-18" in extra["aliases"]
    dated = models["gpt-4o-mini-2024-07-18"]
    assert (dated.model_extra or {})["alias_of"] == "gpt-4o-mini"
    assert models["claude-3-5-haiku-latest"].owned_by == "anthropic"
    fast = models["tier:fast"]
    assert fast.owned_by == "llm-gateway" and "gemini-2.0-flash-lite" in (fast.model_extra or {})["models"]


@pytest.mark.parametrize(
    ("name", "served_by"),
    [
        ("gpt-4o-mini", "gpt-4o-mini"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("openai/gpt-4o-mini", "gpt-4o-mini"),
        ("anthropic/claude-3-5-haiku-20241022", "claude-3-5-haiku-latest"),
        ("tier:best", None),
    ],
)
def test_models_retrieve_resolves_ids_aliases_and_prefixes(
    client: openai.OpenAI, name: str, served_by: str | None
) -> None:
    model = client.models.retrieve(name)
    assert model.id == name and model.object == "model"
    if served_by is not None:
        assert (model.model_extra or {}).get("alias_of", model.id) == served_by


@pytest.mark.parametrize("name", ["gpt-9-imaginary", "anthropic/gpt-4o-mini", "tier:cheapest"])
def test_models_retrieve_unknown_is_404_model_not_found(client: openai.OpenAI, name: str) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve(name)
    error = caught.value.body
    assert isinstance(error, dict) and error["code"] == "model_not_found" and error["param"] == "model"
    assert error["type"] == "invalid_request_error" and name.split("/")[-1] in error["message"]


def test_models_routes_need_an_api_key(api: httpx.Client) -> None:
    for path in ("/v1/models", "/v1/models/gpt-4o-mini"):
        refused = api.get(path)  # API Gateway refuses before the function runs
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "missing_api_key"
        assert api.get(path, headers={"x-api-key": KEY}).status_code == 200


# --------------------------------------------------------------------------- aliases served


@pytest.mark.parametrize(
    ("name", "served_by", "provider"),
    [
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini", "openai"),
        ("openai/gpt-4o-mini", "gpt-4o-mini", "openai"),
        ("gemini/gemini-2.0-flash-001", "gemini-2.0-flash", "gemini"),
        ("claude-3-5-haiku-20241022", "claude-3-5-haiku-latest", "anthropic"),
    ],
)
def test_an_alias_is_served_by_its_catalog_model(
    client: openai.OpenAI, simulator: ProviderSimulator, name: str, served_by: str, provider: str
) -> None:
    completion = client.chat.completions.create(model=name, messages=user())
    assert completion.model == served_by
    assert (completion.model_extra or {})["x_gateway"]["provider"] == provider
    calls = simulator.calls(provider)
    assert calls and calls[-1]["model"] == served_by  # the catalog's wire id, not the alias


# --------------------------------------------------------------------------- n


@pytest.mark.parametrize(
    ("model", "provider", "native"),
    [
        ("gpt-4o-mini", "openai", True),
        ("gemini-2.0-flash", "gemini", True),
        ("claude-3-5-haiku-latest", "anthropic", False),
    ],
)
def test_n_two_choices_on_each_provider(
    client: openai.OpenAI, simulator: ProviderSimulator, model: str, provider: str, native: bool
) -> None:
    completion = client.chat.completions.create(model=model, messages=user(), n=2)
    assert [c.index for c in completion.choices] == [0, 1]
    texts = [c.message.content for c in completion.choices]
    assert all(texts) and all(c.finish_reason == "stop" for c in completion.choices)
    calls = simulator.calls(provider)
    assert len(calls) == (1 if native else 2)
    if native:
        assert texts[0] != texts[1]  # the simulator's choices differ, as sampled ones would
        wire = calls[0]["body"]
        asked = wire["n"] if provider == "openai" else wire["generationConfig"]["candidateCount"]
        assert asked == 2
    else:
        assert all("n" not in c["body"] for c in calls)  # Anthropic has no n: two calls of one
    gateway = (completion.model_extra or {})["x_gateway"]
    assert completion.usage is not None
    spent = sum(a["usage"]["output_tokens"] for a in gateway["attempts"])
    assert completion.usage.completion_tokens == spent > 0
    read = sum(a["usage"]["input_tokens"] for a in gateway["attempts"])
    assert completion.usage.prompt_tokens == read
    assert len(gateway["attempts"]) == (1 if native else 2)
    assert gateway["cost_usd"] == pytest.approx(sum(a["cost_usd"] for a in gateway["attempts"]))


def test_n_choices_are_cached_together(client: openai.OpenAI, simulator: ProviderSimulator) -> None:
    messages = user()
    first = client.chat.completions.create(model="claude-3-5-haiku-latest", messages=messages, n=3, temperature=0)
    again = client.chat.completions.create(model="claude-3-5-haiku-latest", messages=messages, n=3, temperature=0)
    assert (again.model_extra or {})["x_gateway"]["cached"] is True
    assert [c.message.content for c in again.choices] == [c.message.content for c in first.choices]
    assert len(again.choices) == 3 and len(simulator.calls("anthropic")) == 3
    one = client.chat.completions.create(model="claude-3-5-haiku-latest", messages=messages, temperature=0)
    assert len(one.choices) == 1 and (one.model_extra or {})["x_gateway"]["cached"] is False  # n is in the key


# --------------------------------------------------------------------------- parameters


def test_logprobs_on_openai_come_back(client: openai.OpenAI, simulator: ProviderSimulator) -> None:
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=user(), logprobs=True, top_logprobs=2)
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None and logprobs.content
    first = logprobs.content[0]
    assert first.logprob < 0 and len(first.top_logprobs) == 2
    assert "".join(t.token for t in logprobs.content) == completion.choices[0].message.content
    assert simulator.calls("openai")[-1]["body"]["top_logprobs"] == 2


def test_logprobs_on_gemini_are_translated(client: openai.OpenAI, simulator: ProviderSimulator) -> None:
    completion = client.chat.completions.create(
        model="gemini-2.0-flash", messages=user(), logprobs=True, top_logprobs=3
    )
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None and logprobs.content and len(logprobs.content[0].top_logprobs) == 3
    config = simulator.calls("gemini")[-1]["body"]["generationConfig"]
    assert config["responseLogprobs"] is True and config["logprobs"] == 3


@pytest.mark.parametrize(
    ("model", "extra", "param"),
    [
        ("claude-3-5-haiku-latest", {"logprobs": True}, "logprobs"),
        ("claude-3-5-haiku-latest", {"seed": 7}, "seed"),
        ("gemini-2.0-flash", {"logit_bias": {"50256": -100}}, "logit_bias"),
        ("gpt-4o-mini", {"audio": {"voice": "alloy", "format": "mp3"}}, "audio"),
        ("gpt-4o-mini", {"modalities": ["text", "audio"]}, "modalities"),
        ("gpt-4o-mini", {"reasoning_effort": "low"}, "reasoning_effort"),
        ("gpt-4o-mini", {"prediction": {"type": "content", "content": "x"}}, "prediction"),
        ("gpt-4o-mini", {"store": True}, "store"),
        ("gpt-4o-mini", {"service_tier": "flex"}, "service_tier"),
        # stream: true is served now (tests/integration/test_streaming*.py); what a stream cannot carry is not.
        ("gpt-4o-mini", {"stream": True, "n": 2}, "n"),
        ("gpt-4o-mini", {"stream": True, "logprobs": True}, "logprobs"),
        ("gpt-4o-mini", {"stream_options": {"include_usage": True}}, "stream_options"),
        ("gpt-4o-mini", {"made_up_option": 1}, "made_up_option"),
    ],
)
def test_an_unsupported_parameter_is_a_400_naming_it(
    client: openai.OpenAI, simulator: ProviderSimulator, model: str, extra: dict[str, object], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=model, messages=user(), extra_body=extra)
    error = caught.value.body
    assert isinstance(error, dict) and error["param"] == param and error["type"] == "invalid_request_error"
    assert error["code"] == "invalid_request" and error["message"]
    assert simulator.calls() == []


def test_stream_true_is_served_as_a_stream(client: openai.OpenAI, simulator: ProviderSimulator) -> None:
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=user(), stream=True))
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].choices[0].finish_reason == "stop"
    assert "".join(c.choices[0].delta.content or "" for c in chunks).startswith("[sim openai/gpt-4o-mini]")
    assert simulator.calls("openai")[-1]["body"]["stream"] is True


def test_defaults_are_not_errors(client: openai.OpenAI, simulator: ProviderSimulator) -> None:
    defaults = {
        "n": 1, "logprobs": False, "presence_penalty": 0, "frequency_penalty": 0, "logit_bias": {}, "store": False,
        "service_tier": "auto", "stream": False, "modalities": ["text"], "user": "end-user-1",
    }  # fmt: skip
    completion = client.chat.completions.create(model="claude-3-5-haiku-latest", messages=user(), extra_body=defaults)
    assert completion.model == "claude-3-5-haiku-latest" and len(completion.choices) == 1
    body = simulator.calls("anthropic")[-1]["body"]
    assert body["metadata"] == {"user_id": "end-user-1"}  # user, translated


def test_a_model_without_a_parameter_its_provider_has_is_skipped_or_refused(
    client: openai.OpenAI, simulator: ProviderSimulator
) -> None:
    # Gemini 2.5 has no logprobs (the catalog says so): the balanced tier goes to OpenAI instead.
    completion = client.chat.completions.create(model="tier:balanced", messages=user(), logprobs=True)
    assert completion.model == "gpt-4.1-mini" and completion.choices[0].logprobs is not None
    assert simulator.calls("gemini") == []
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gemini-2.5-flash", messages=user(), presence_penalty=0.5)
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "presence_penalty"
    assert simulator.calls("gemini") == [] and len(simulator.calls()) == 1  # only the first request's call


def test_a_tier_skips_providers_that_cannot_honour_a_parameter(
    client: openai.OpenAI, simulator: ProviderSimulator
) -> None:
    completion = client.chat.completions.create(model="tier:fast", messages=user(), logit_bias={"50256": -100})
    assert (completion.model_extra or {})["x_gateway"]["provider"] == "openai"  # the only fast provider with it
    assert simulator.calls("openai")[-1]["body"]["logit_bias"] == {"50256": -100}
    assert simulator.calls("gemini") == [] and simulator.calls("anthropic") == []


# --------------------------------------------------------------------------- the simulator refuses as providers do


def test_simulator_refuses_what_real_providers_refuse(simulator: ProviderSimulator) -> None:
    urls = simulator.base_urls()
    message = [{"role": "user", "content": "hi"}]
    with httpx.Client(timeout=10) as http:
        anthropic = http.post(
            f"{urls['anthropic']}/v1/messages",
            json={"model": "claude-haiku-4-5", "max_tokens": 5, "messages": message, "n": 2},
            headers={"x-api-key": "k", "anthropic-version": "2023-06-01"},
        )
        assert anthropic.status_code == 400 and "n: Extra inputs are not permitted" in anthropic.text
        gemini_url = f"{urls['gemini']}/v1beta/models/gemini-2.0-flash:generateContent"
        contents = [{"role": "user", "parts": [{"text": "hi"}]}]
        for config, words in [
            ({"responseLogprobs": True}, "Logprobs is not enabled"),
            ({"presencePenalty": 0.5}, "Penalty is not enabled"),
        ]:
            refused = http.post(
                gemini_url.replace("gemini-2.0-flash", "gemini-2.5-flash"),
                json={"contents": contents, "generationConfig": config},
                headers={"x-goog-api-key": "k"},
            )
            assert refused.status_code == 400 and words in refused.json()["error"]["message"]
        for config, words in [
            ({"n": 2}, 'Unknown name "n"'),
            ({"candidateCount": 9}, "candidateCount"),
            ({"logprobs": 2}, "responseLogprobs"),
        ]:
            refused = http.post(
                gemini_url, json={"contents": contents, "generationConfig": config}, headers={"x-goog-api-key": "k"}
            )
            assert refused.status_code == 400 and words in refused.json()["error"]["message"]
        openai_url = f"{urls['openai']}/chat/completions"
        for body, param in [({"top_logprobs": 2}, "logprobs"), ({"n": 0}, "n")]:
            refused = http.post(
                openai_url,
                json={"model": "gpt-4o-mini", "messages": message, **body},
                headers={"authorization": "Bearer k"},
            )
            assert refused.status_code == 400 and refused.json()["error"]["param"] == param


def test_native_route_takes_n_and_answers_alternatives(api: httpx.Client, simulator: ProviderSimulator) -> None:
    body = {"model": "gemini/gemini-2.0-flash-001", "messages": user(), "n": 2, "logprobs": True}
    response = api.post("/v1/completions", json=body, headers={"x-api-key": KEY})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["model"] == "gemini-2.0-flash" and len(result["alternatives"]) == 1
    assert result["logprobs"]["content"] and result["alternatives"][0]["logprobs"]["content"]
    assert simulator.calls("gemini")[-1]["body"]["generationConfig"]["candidateCount"] == 2
