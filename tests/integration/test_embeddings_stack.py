"""``POST /v1/embeddings`` through the local stack with the official ``openai`` client: inputs in order,
``dimensions``, base64 equal to floats, the per-input cache (only misses sent), batching within each
provider's limits, the ledger, fallback between same-length models only, and 400s for bad input."""

from __future__ import annotations

import base64
import math
import struct
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from local.simulator import ProviderSimulator
from local.simulator.embeddings import vector
from local.stack import LocalStack
from tests.support.accounting import api_key_for, ledger_items, unique
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_real_aws")]

SMALL = "text-embedding-3-small"
TITAN = "amazon.titan-embed-text-v2:0"
COHERE = "cohere.embed-english-v3"


@pytest.fixture
def tenant() -> str:
    return unique()


@pytest.fixture
def client(local_stack: LocalStack, tenant: str) -> Iterator[openai.OpenAI]:
    """A fresh tenant per test: its cache entries are its own."""
    with api_key_for(local_stack, tenant) as key:
        yield openai.OpenAI(base_url=f"{local_stack.api_url}/v1", api_key=key, max_retries=0, timeout=60)


def texts(n: int) -> list[str]:
    tag = uuid.uuid4().hex[:8]
    return [f"Text number {i} of a test ({tag})." for i in range(n)]


def embedding_calls(sim: ProviderSimulator, provider: str) -> list[dict[str, Any]]:
    marks = ("/embeddings", ":batchEmbedContents", "/invoke")
    return [c for c in sim.calls(provider) if c["path"].endswith(marks)]


def close(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(math.isclose(x, y, rel_tol=1e-5, abs_tol=1e-6) for x, y in zip(a, b, strict=True))


def test_a_list_in_order_with_usage_and_the_gateway_fields(client, simulator) -> None:
    inputs = texts(3)
    answer = client.embeddings.create(model=SMALL, input=inputs)  # the client asks for base64 by default
    assert [d.index for d in answer.data] == [0, 1, 2]
    for text, item in zip(inputs, answer.data, strict=True):
        assert close(item.embedding, vector(SMALL, text, 1536, 1536))
    assert answer.model == SMALL
    assert answer.usage.prompt_tokens == answer.usage.total_tokens == sum(math.ceil(len(t) / 4) for t in inputs)
    extra = answer.model_extra["x_gateway"]
    assert extra["provider"] == "openai" and extra["cached_inputs"] == 0 and extra["cost_usd"] > 0
    assert len(extra["attempts"]) == 1 and extra["attempts"][0]["outcome"] == "success"
    (call,) = embedding_calls(simulator, "openai")
    assert call["body"]["input"] == inputs


def test_dimensions_and_base64_equal_to_floats(client, local_stack, tenant) -> None:
    inputs = texts(2)
    floats = client.embeddings.create(model=SMALL, input=inputs, dimensions=256, encoding_format="float")
    assert [len(d.embedding) for d in floats.data] == [256, 256]
    with api_key_for(local_stack, tenant) as key:
        raw = httpx.post(
            f"{local_stack.api_url}/v1/embeddings",
            headers={"authorization": f"Bearer {key}"},
            json={"model": SMALL, "input": inputs, "dimensions": 256, "encoding_format": "base64"},
            timeout=60,
        ).json()
    for item, expected in zip(raw["data"], floats.data, strict=True):
        decoded = list(struct.unpack("<256f", base64.b64decode(item["embedding"])))
        assert close(decoded, expected.embedding)


def test_cached_on_repeat_and_only_the_misses_sent(client, simulator, local_stack, tenant) -> None:
    first_inputs = texts(3)
    first = client.embeddings.create(model=SMALL, input=first_inputs)
    assert len(embedding_calls(simulator, "openai")) == 1
    again = client.embeddings.create(model=SMALL, input=first_inputs)
    assert len(embedding_calls(simulator, "openai")) == 1  # not called again
    assert again.model_extra["x_gateway"]["cached_inputs"] == 3 and again.usage.prompt_tokens == 0
    assert [close(a.embedding, b.embedding) for a, b in zip(first.data, again.data, strict=True)] == [True] * 3
    new = f"A text never seen before ({uuid.uuid4().hex})."
    mixed = [first_inputs[2], new, first_inputs[0]]
    partly = client.embeddings.create(model=SMALL, input=mixed)
    calls = embedding_calls(simulator, "openai")
    assert len(calls) == 2 and calls[1]["body"]["input"] == [new]  # only the miss
    assert partly.model_extra["x_gateway"]["cached_inputs"] == 2
    for text, item in zip(mixed, partly.data, strict=True):
        assert close(item.embedding, vector(SMALL, text, 1536, 1536))
    records = [i for i in ledger_items(local_stack, tenant) if i.get("operation", {}).get("S") == "embeddings"]
    assert len(records) == 2  # one ledger attempt per provider call
    assert {r["model"]["S"] for r in records} == {SMALL}


def test_another_tenant_does_not_read_the_cache(client, simulator, local_stack) -> None:
    inputs = texts(2)
    client.embeddings.create(model=SMALL, input=inputs)
    with api_key_for(local_stack, unique()) as other:
        sdk = openai.OpenAI(base_url=f"{local_stack.api_url}/v1", api_key=other, max_retries=0, timeout=60)
        assert sdk.embeddings.create(model=SMALL, input=inputs).model_extra["x_gateway"]["cached_inputs"] == 0
    assert len(embedding_calls(simulator, "openai")) == 2


def test_batched_within_each_provider_limits(client, simulator) -> None:
    inputs = texts(150)
    answer = client.embeddings.create(model="text-embedding-004", input=inputs)
    assert [len(d.embedding) for d in answer.data] == [768] * 150
    assert close(answer.data[149].embedding, vector("text-embedding-004", inputs[149], 768, 768))
    sizes = sorted(len(c["body"]["requests"]) for c in embedding_calls(simulator, "gemini"))
    assert sizes == [50, 100]  # Gemini takes 100 per batch
    titan = client.embeddings.create(model=TITAN, input=texts(5), dimensions=512)
    assert len(embedding_calls(simulator, "bedrock")) == 5 and len(titan.model_extra["x_gateway"]["attempts"]) == 5


def test_fallback_to_a_model_of_the_same_length_on_a_429(client, simulator) -> None:
    simulator.add_fault("rate_limit", provider="bedrock", model=TITAN, retry_after=0)
    answer = client.embeddings.create(model=TITAN, input=texts(2), extra_body={"fallback": [COHERE]})
    assert answer.model == COHERE and len(answer.data[0].embedding) == 1024
    outcomes = [(a["model"], a["outcome"]) for a in answer.model_extra["x_gateway"]["attempts"]]
    assert outcomes[-1] == (COHERE, "success") and (TITAN, "error") in outcomes


def test_no_fallback_to_another_length(client, simulator) -> None:
    simulator.add_fault("rate_limit", provider="bedrock", model=TITAN, retry_after=0)
    with pytest.raises(openai.RateLimitError):
        client.embeddings.create(model=TITAN, input=texts(1), extra_body={"fallback": ["text-embedding-004"]})
    assert embedding_calls(simulator, "gemini") == []  # 768 dimensions: never a fallback for 1024


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": SMALL, "input": [[1, 2, 3]]}, "input"),  # token arrays
        ({"model": SMALL, "input": [1, 2, 3]}, "input"),
        ({"model": SMALL, "input": []}, "input"),
        ({"model": SMALL, "input": ["fine", ""]}, "input"),
        ({"model": TITAN, "input": "x", "dimensions": 300}, "dimensions"),
        ({"model": COHERE, "input": "x", "dimensions": 512}, "dimensions"),
        ({"model": "gpt-4o-mini", "input": "x"}, "model"),  # a chat model
        ({"model": SMALL, "input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"model": SMALL, "input": "x" * 40_000}, "input"),  # over 8191 tokens
    ],
)
def test_bad_input_is_a_400_naming_the_param(client, simulator, body, param) -> None:
    extra = {k: v for k, v in body.items() if k not in ("model", "input")}
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model=body["model"], input=body["input"], extra_body=extra)
    error = caught.value.body
    assert isinstance(error, dict) and error.get("param") == param, error
    assert embedding_calls(simulator, "openai") == [] and embedding_calls(simulator, "bedrock") == []


def test_chat_never_routes_to_an_embedding_model_and_models_lists_the_kind(client) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=SMALL, messages=[{"role": "user", "content": "hi"}])
    assert isinstance(caught.value.body, dict) and caught.value.body.get("param") == "model"
    kinds = {m.id: m.model_extra.get("kind") for m in client.models.list()}
    assert kinds[SMALL] == "embeddings" and kinds[TITAN] == "embeddings" and kinds["gpt-4o-mini"] == "chat"


def test_over_budget_is_a_429_and_no_provider_call(client, simulator, local_stack, tenant) -> None:
    from llm_gateway.accounting.budgets import DynamoDBBudgetGuard

    DynamoDBBudgetGuard(local_stack.physical["UsageTable"]).set_policy(tenant, 0.0000001, "month")
    with pytest.raises(openai.RateLimitError) as caught:
        client.embeddings.create(model=SMALL, input=texts(50))
    assert isinstance(caught.value.body, dict) and caught.value.body.get("code") == "budget_exceeded"
    assert embedding_calls(simulator, "openai") == []


def test_a_budget_is_settled_at_the_actual_cost(client, local_stack, tenant) -> None:
    from llm_gateway.accounting.budgets import DynamoDBBudgetGuard

    guard = DynamoDBBudgetGuard(local_stack.physical["UsageTable"])
    guard.set_policy(tenant, 1.0, "day")
    answer = client.embeddings.create(model=SMALL, input=texts(4))
    # Settled after the response (the after-response deferral): waited for, not assumed.
    status = wait_for(lambda: (s := guard.status(tenant))["outstanding_reservations"] == 0 and s, what="settled")
    assert status["spent_usd"] == pytest.approx(answer.model_extra["x_gateway"]["cost_usd"])


def test_the_key_policy_applies_as_on_chat(local_stack, simulator) -> None:
    from llm_gateway.keys.admin import KeyAdmin, KeySpec
    from llm_gateway.keys.store import KeyStore

    admin = KeyAdmin(KeyStore(local_stack.physical["KeysTable"]))
    secret, _ = admin.create(KeySpec(tenant=unique(), allowed_models=[SMALL]))
    sdk = openai.OpenAI(base_url=f"{local_stack.api_url}/v1", api_key=secret, max_retries=0, timeout=60)
    assert len(sdk.embeddings.create(model=SMALL, input=texts(1)).data) == 1
    for model, extra in ((TITAN, {}), (SMALL, {"fallback": ["text-embedding-3-large"]})):
        with pytest.raises(openai.PermissionDeniedError) as caught:
            sdk.embeddings.create(model=model, input=texts(1), extra_body=extra)
        assert isinstance(caught.value.body, dict) and caught.value.body.get("code") == "model_not_allowed"
    assert len(embedding_calls(simulator, "openai")) == 1 and embedding_calls(simulator, "bedrock") == []
