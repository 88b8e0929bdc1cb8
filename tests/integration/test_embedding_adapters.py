"""The embedding adapters against the simulator's embedding endpoints, over real sockets: the request
each sends, the answer each reads, and the refusals and faults mapped onto the exception tree."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any

import httpx
import pytest

from llm_gateway.embeddings.adapters import (
    BedrockEmbeddings,
    Embedded,
    EmbeddingProvider,
    GeminiEmbeddings,
    OpenAIEmbeddings,
    embedding_adapter,
)
from llm_gateway.errors import (
    MalformedResponseError,
    ProviderAuthError,
    ProviderBadRequestError,
    ProviderConnectionError,
    ProviderUnavailableError,
    RateLimitedError,
)
from llm_gateway.providers.bedrock import BedrockProvider
from llm_gateway.providers.gemini import GeminiProvider
from llm_gateway.providers.openai import OpenAIProvider
from local.simulator.embeddings import vector

pytestmark = pytest.mark.integration

TEXTS = ["The first text.", "A second, longer text about something else.", "Third."]


def run(adapter: EmbeddingProvider, texts: Sequence[str], model: str, dimensions: int | None = None) -> Embedded:
    async def go() -> Embedded:
        async with httpx.AsyncClient() as client:
            return await adapter.embed(texts, model, dimensions, client=client, timeout_s=10.0)

    return asyncio.run(go())


def openai(sim: Any, key: str = "sk-sim") -> OpenAIEmbeddings:
    return OpenAIEmbeddings(OpenAIProvider(base_url=sim.base_urls()["openai"], api_key=key))


def gemini(sim: Any) -> GeminiEmbeddings:
    return GeminiEmbeddings(GeminiProvider(base_url=sim.base_urls()["gemini"], api_key="g-sim"))


def bedrock(sim: Any) -> BedrockEmbeddings:
    return BedrockEmbeddings(BedrockProvider(base_url=sim.base_urls()["bedrock"], region="us-east-1"))


def close(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-7) for x, y in zip(a, b, strict=True))


def test_each_provider_has_its_adapter(simulator) -> None:
    assert isinstance(embedding_adapter(openai(simulator).provider), OpenAIEmbeddings)
    assert isinstance(embedding_adapter(gemini(simulator).provider), GeminiEmbeddings)
    assert isinstance(embedding_adapter(bedrock(simulator).provider), BedrockEmbeddings)


def test_openai_list_in_order_with_usage_and_dimensions(simulator) -> None:
    answer = run(openai(simulator), TEXTS, "text-embedding-3-small")
    assert [len(v) for v in answer.vectors] == [1536] * 3
    for text, got in zip(TEXTS, answer.vectors, strict=True):
        assert close(got, vector("text-embedding-3-small", text, 1536, 1536))
    assert answer.input_tokens == sum(math.ceil(len(t) / 4) for t in TEXTS)
    short = run(openai(simulator), TEXTS[:1], "text-embedding-3-small", 256)
    assert len(short.vectors[0]) == 256 and math.isclose(sum(x * x for x in short.vectors[0]), 1.0, rel_tol=1e-6)
    (call,) = [c for c in simulator.calls("openai") if c["body"].get("dimensions") == 256]
    assert call["path"] == "/openai/v1/embeddings" and call["body"]["encoding_format"] == "float"
    assert "dimensions" not in simulator.calls("openai")[0]["body"]  # the default is not sent


def test_gemini_batch_embed_contents(simulator) -> None:
    answer = run(gemini(simulator), TEXTS, "gemini-embedding-001", 768)
    assert [len(v) for v in answer.vectors] == [768] * 3
    assert close(answer.vectors[1], vector("gemini-embedding-001", TEXTS[1], 768, 3072))
    assert answer.input_tokens > 0  # Gemini reports none: the gateway's estimate
    (call,) = simulator.calls("gemini")
    assert call["path"] == "/gemini/v1beta/models/gemini-embedding-001:batchEmbedContents"
    assert [r["outputDimensionality"] for r in call["body"]["requests"]] == [768] * 3
    assert call["body"]["requests"][0]["model"] == "models/gemini-embedding-001"


def test_bedrock_titan_one_text_per_call_signed(simulator) -> None:
    answer = run(bedrock(simulator), TEXTS[:1], "amazon.titan-embed-text-v2:0", 512)
    assert len(answer.vectors[0]) == 512
    assert answer.input_tokens == math.ceil(len(TEXTS[0]) / 4)
    (call,) = simulator.calls("bedrock")
    assert call["path"] == "/bedrock/model/amazon.titan-embed-text-v2%3A0/invoke"  # the id percent-encoded, as signed
    assert call["body"] == {"inputText": TEXTS[0], "normalize": True, "dimensions": 512}
    with pytest.raises(ValueError):
        run(bedrock(simulator), TEXTS, "amazon.titan-embed-text-v2:0")


def test_bedrock_cohere_list_with_the_header_token_count(simulator) -> None:
    answer = run(bedrock(simulator), TEXTS, "cohere.embed-english-v3")
    assert [len(v) for v in answer.vectors] == [1024] * 3
    assert close(answer.vectors[2], vector("cohere.embed-english-v3", TEXTS[2], 1024, 1024))
    assert answer.input_tokens == sum(math.ceil(len(t) / 4) for t in TEXTS)
    assert simulator.calls("bedrock")[0]["body"] == {"texts": TEXTS, "input_type": "search_document"}


@pytest.mark.parametrize(
    ("adapter", "model", "texts", "dimensions"),
    [
        (openai, "text-embedding-3-small", ["x"], 4000),  # longer than the model's vectors
        (openai, "text-embedding-3-small", ["x", ""], None),  # an empty input
        (gemini, "gemini-embedding-001", ["x"] * 101, None),  # over 100 requests per batch
        (gemini, "gemini-embedding-001", ["x"], 64),  # under its minimum length
        (bedrock, "amazon.titan-embed-text-v2:0", ["x"], 300),  # not one of 256/512/1024
        (bedrock, "amazon.titan-embed-text-v2:0", [""], None),
        (bedrock, "cohere.embed-english-v3", ["x"] * 97, None),  # over 96 texts
    ],
)
def test_what_the_real_apis_refuse_is_a_bad_request(simulator, adapter, model, texts, dimensions) -> None:
    with pytest.raises(ProviderBadRequestError):
        run(adapter(simulator), texts, model, dimensions)


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("rate_limit", RateLimitedError),
        ("server_error", ProviderUnavailableError),
        ("drop", ProviderConnectionError),
        ("malformed", MalformedResponseError),
        ("malformed_shape", MalformedResponseError),
    ],
)
@pytest.mark.parametrize(
    ("adapter", "model"),
    [(openai, "text-embedding-3-small"), (gemini, "text-embedding-004"), (bedrock, "cohere.embed-english-v3")],
)
def test_faults_map_onto_the_exception_tree(simulator, adapter, model, fault, error) -> None:
    simulator.add_fault(fault, times=1)
    with pytest.raises(error):
        run(adapter(simulator), TEXTS, model)


def test_a_bad_key_is_an_auth_error(simulator) -> None:
    simulator.add_fault("auth", provider="openai", times=1)
    with pytest.raises(ProviderAuthError):
        run(openai(simulator), TEXTS, "text-embedding-3-small")
