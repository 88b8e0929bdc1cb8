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

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_real_aws")]

KEY = "key-a"  # tests/conftest.py: key-a -> tenant-a


@pytest.fixture
def client(local_stack: LocalStack) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{local_stack.api_url}/v1",
        api_key="unused",
        default_headers={"x-api-key": KEY},
        max_retries=0,
        timeout=60,
    )


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
        assert api.get(path).status_code == 403  # API Gateway refuses before the function runs
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
