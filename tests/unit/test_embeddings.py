"""The embeddings operation's pure parts: catalog entries, request parsing, batching, planning (which
models may answer), the vector cache's keys and encoding, and the router keeping kinds apart."""

from __future__ import annotations

import base64
import struct

import httpx
import pytest
from pydantic import ValidationError

from llm_gateway.catalog import EmbeddingLimits, ModelSpec, default_catalog
from llm_gateway.embeddings.cache import pack, unpack, vector_key
from llm_gateway.embeddings.operation import Embedder, EmbeddingRequest, _batches
from llm_gateway.errors import InvalidRequestError, UnknownModelError
from llm_gateway.gateway import Gateway
from llm_gateway.http.embeddings_route import EmbeddingsBody, encode, texts
from llm_gateway.models import CompletionRequest
from llm_gateway.providers.bedrock import BedrockProvider
from llm_gateway.providers.gemini import GeminiProvider
from llm_gateway.providers.openai import OpenAIProvider
from llm_gateway.routing.retry import RetryPolicy
from llm_gateway.routing.router import Router

CATALOG = default_catalog()
EMBEDDING_IDS = {
    "text-embedding-3-small",
    "text-embedding-3-large",
    "gemini-embedding-001",
    "text-embedding-004",
    "amazon.titan-embed-text-v2:0",
    "cohere.embed-english-v3",
}


def embedder(providers: tuple[str, ...] = ("openai", "gemini", "bedrock")) -> Embedder:
    built = {
        "openai": OpenAIProvider(base_url="http://127.0.0.1:9/v1", api_key="k"),
        "gemini": GeminiProvider(base_url="http://127.0.0.1:9", api_key="k"),
        "bedrock": BedrockProvider(base_url="http://127.0.0.1:9", region="us-east-1"),
    }
    chosen = {name: built[name] for name in providers}
    gateway = Gateway(
        catalog=CATALOG,
        router=Router(CATALOG, chosen),
        providers=chosen,
        retry=RetryPolicy(),
        client=httpx.AsyncClient,
    )
    return Embedder(gateway)


def test_the_catalog_holds_the_embedding_models_with_their_limits() -> None:
    kinds = {m.id: m for m in CATALOG.models if m.kind == "embeddings"}
    assert set(kinds) == EMBEDDING_IDS
    assert all(m.embedding is not None and not m.tiers and m.input_per_mtok >= 0 for m in kinds.values())
    titan = kinds["amazon.titan-embed-text-v2:0"].embedding
    assert titan is not None and titan.max_inputs_per_call == 1
    assert [d for d in (256, 300, 512, 1024, 2048) if titan.accepts(d)] == [256, 512, 1024]
    small = kinds["text-embedding-3-small"].embedding
    assert small is not None and small.accepts(1) and small.accepts(1536) and not small.accepts(1537)
    cohere = kinds["cohere.embed-english-v3"].embedding
    assert cohere is not None and cohere.accepts(1024) and not cohere.accepts(512) and cohere.choices() == "1024"
    assert all(m.kind == "chat" and m.embedding is None for m in CATALOG.chat_models)


def test_an_entry_must_say_its_kind_consistently() -> None:
    base = {"id": "x", "provider": "openai", "input_per_mtok": 1, "output_per_mtok": 0, "cached_input_per_mtok": 0}
    limits = {"dimensions": 8, "max_inputs_per_call": 2, "max_tokens_per_input": 10}
    with pytest.raises(ValidationError):
        ModelSpec.model_validate({**base, "context_window": 10, "max_output_tokens": 0, "kind": "embeddings"})
    with pytest.raises(ValidationError):
        ModelSpec.model_validate({**base, "context_window": 10, "max_output_tokens": 0, "embedding": limits})
    with pytest.raises(ValidationError):  # a chat model still writes tokens
        ModelSpec.model_validate({**base, "context_window": 10, "max_output_tokens": 0})
    ModelSpec.model_validate(
        {**base, "context_window": 10, "max_output_tokens": 0, "kind": "embeddings", "embedding": limits}
    )


def test_chat_routing_never_picks_an_embedding_model() -> None:
    router = Router(CATALOG, {"openai", "gemini", "anthropic", "bedrock"})
    hello = [{"role": "user", "content": "hi"}]
    for tier in ("fast", "balanced", "best"):
        plan = router.plan(CompletionRequest.model_validate({"tier": tier, "messages": hello}))
        assert all(c.spec.kind == "chat" for c in plan.candidates)
    named = router.plan(CompletionRequest.model_validate({"model": "gpt-4o-mini", "messages": hello}))
    assert all(c.spec.kind == "chat" for c in named.candidates)
    with pytest.raises(InvalidRequestError) as caught:
        router.plan(CompletionRequest.model_validate({"model": "text-embedding-3-small", "messages": hello}))
    assert caught.value.details["param"] == "model"
    with pytest.raises(InvalidRequestError) as caught:
        body = {"model": "gpt-4o-mini", "fallback": ["cohere.embed-english-v3"], "messages": hello}
        router.plan(CompletionRequest.model_validate(body))
    assert caught.value.details["param"] == "fallback"


def test_input_parsing_refuses_token_arrays_and_empty_lists() -> None:
    assert texts("one") == ["one"]
    assert texts(["a", "b"]) == ["a", "b"]
    for bad in ([], [1, 2], [[1, 2]], ["a", 3], [{"text": "a"}]):
        with pytest.raises(InvalidRequestError) as caught:
            texts(bad)
        assert caught.value.details["param"] == "input"
    with pytest.raises(InvalidRequestError, match="token arrays"):
        texts([[1, 2, 3]])
    with pytest.raises(ValidationError):
        EmbeddingsBody.model_validate({"model": "m", "input": "x", "unknown_field": 1})


def test_base64_is_little_endian_float32() -> None:
    vector = [0.5, -1.25, 3.0]
    assert struct.unpack("<3f", base64.b64decode(encode(vector, "base64"))) == (0.5, -1.25, 3.0)
    assert encode(vector, "float") == vector


def test_batches_keep_order_within_inputs_and_tokens_per_call() -> None:
    limits = EmbeddingLimits(dimensions=4, max_inputs_per_call=3, max_tokens_per_input=100, max_tokens_per_call=10)
    items = [f"t{i}" for i in range(7)]
    assert _batches(items, limits) == [["t0", "t1", "t2"], ["t3", "t4", "t5"], ["t6"]]
    long = ["x" * 20, "y" * 20, "z" * 4]  # 5, 5 and 1 tokens: the token cap splits before the count does
    assert _batches(long, limits) == [["x" * 20, "y" * 20], ["z" * 4]]


def test_plan_keeps_only_fallbacks_of_the_same_length() -> None:
    request = EmbeddingRequest(
        model="amazon.titan-embed-text-v2:0",
        inputs=["a"],
        fallback=["text-embedding-004", "cohere.embed-english-v3", "text-embedding-3-large"],
    )
    chain, dimensions = embedder().plan(request)
    # 1024: Cohere natively, text-embedding-3-large shortened; text-embedding-004 (768 at most) is not eligible.
    assert dimensions == 1024
    assert [m.id for m in chain] == [
        "amazon.titan-embed-text-v2:0",
        "cohere.embed-english-v3",
        "text-embedding-3-large",
    ]
    shorter = request.model_copy(update={"dimensions": 256})
    assert [m.id for m in embedder().plan(shorter)[0]] == [
        "amazon.titan-embed-text-v2:0",
        "text-embedding-004",  # shortened to 256 too
        "text-embedding-3-large",  # Cohere has no 256
    ]
    unconfigured = embedder(("bedrock",)).plan(request)[0]
    assert [m.id for m in unconfigured] == ["amazon.titan-embed-text-v2:0", "cohere.embed-english-v3"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "gpt-4o-mini", "inputs": ["a"]}, "model"),
        ({"model": "text-embedding-3-small", "inputs": ["a"], "fallback": ["gpt-4o"]}, "fallback.0"),
        ({"model": "amazon.titan-embed-text-v2:0", "inputs": ["a"], "dimensions": 768}, "dimensions"),
        ({"model": "text-embedding-3-small", "inputs": ["a", ""]}, "input"),
        ({"model": "cohere.embed-english-v3", "inputs": ["word " * 600]}, "input"),  # over 512 tokens
        ({"model": "text-embedding-3-small", "inputs": ["a"] * 2049}, "input"),
    ],
)
def test_plan_refuses_what_no_call_can_fix(body, param) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        embedder().plan(EmbeddingRequest.model_validate(body))
    assert caught.value.details["param"] == param


def test_an_unknown_model_is_a_404_and_an_unconfigured_provider_a_400() -> None:
    with pytest.raises(UnknownModelError):
        embedder().plan(EmbeddingRequest(model="no-such-model", inputs=["a"]))
    with pytest.raises(InvalidRequestError, match="no provider is configured"):
        embedder(("openai",)).plan(EmbeddingRequest(model="cohere.embed-english-v3", inputs=["a"]))


def test_vector_keys_separate_tenants_models_lengths_and_texts() -> None:
    base = ("tenant-a", None, "m", "m", 256, "text")
    keys = {
        vector_key(*base),
        vector_key("tenant-b", None, "m", "m", 256, "text"),
        vector_key("tenant-a", "ns", "m", "m", 256, "text"),
        vector_key("tenant-a", None, "n", "n", 256, "text"),
        vector_key("tenant-a", None, "m", "m", 512, "text"),
        vector_key("tenant-a", None, "m", "m", 256, "text2"),
    }
    assert len(keys) == 6 and vector_key(*base) == vector_key(*base)
    assert vector_key("a", "shared:x", "m", "m", 8, "t") == vector_key("b", "shared:x", "m", "m", 8, "t")


def test_vectors_round_trip_as_float32_and_a_wrong_length_is_refused() -> None:
    vector = [0.25, -0.5, 1.0, 0.125]
    assert unpack(pack(vector), 4) == vector
    with pytest.raises(ValueError):
        unpack(pack(vector), 3)
    with pytest.raises(ValueError):
        unpack(b"junk", 1)
