"""``POST /v1/embeddings`` in OpenAI's shape, for the completion function's handler.

The body is OpenAI's (``model``, ``input`` as a string or a list of strings, ``dimensions``,
``encoding_format``, ``user``) plus the gateway's own ``fallback`` (models of the same vector length)
and ``cache``; ``Cache-Control`` and the ``x-gateway-cache-*`` headers work as on chat. Token arrays as
``input`` are refused (the gateway routes across providers whose tokenizers differ). The answer adds
``x_gateway`` (provider, cost, cached inputs, attempts), which the openai client keeps on the object.
The operation's modules are imported on the first request, not at the function's cold start.
"""

from __future__ import annotations

import base64
import struct
from typing import TYPE_CHECKING, Any, Literal

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.metrics import MetricUnit
from pydantic import BaseModel, ConfigDict, Field

from llm_gateway.http import framing, key_checks, observe
from llm_gateway.models import CacheControl
from llm_gateway.runtime import run_sync
from llm_gateway.wiring import services

if TYPE_CHECKING:
    from llm_gateway.embeddings.operation import Embedder, EmbeddingResult
    from llm_gateway.gateway import Gateway
    from llm_gateway.http.edge import HttpEdge

PATH = "/v1/embeddings"
TOKEN_ARRAYS = "token arrays are not accepted here; send the text (a string or a list of strings)"


class EmbeddingsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=160)
    input: str | list[Any]
    dimensions: int | None = Field(default=None, ge=1, le=65_536)
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = Field(default=None, max_length=256)
    fallback: list[str] | None = Field(default=None, max_length=8)  # the gateway's: same-length models only
    cache: CacheControl | None = None


def texts(raw: str | list[Any]) -> list[str]:
    """The inputs as a list of strings; a 400 naming ``input`` for anything else."""
    if isinstance(raw, str):
        return [raw]
    if not raw:
        raise framing.invalid("input", "must not be an empty list")
    if all(isinstance(item, str) for item in raw):
        return list(raw)
    if all(isinstance(item, int | list) for item in raw):
        raise framing.invalid("input", TOKEN_ARRAYS)
    raise framing.invalid("input", "must be a string or a list of strings")


def embedder(gateway: Gateway) -> Embedder:
    """The operation over the process's gateway; vectors go to the completion cache's backend."""
    from llm_gateway.accounting.cache import CompletionCache
    from llm_gateway.embeddings.cache import EmbeddingCache
    from llm_gateway.embeddings.operation import Embedder

    store = gateway.cache
    if not isinstance(store, CompletionCache):
        return Embedder(gateway)
    cache = EmbeddingCache(
        store.backend, default_ttl_s=store.default_ttl_s, timeout_s=store.timeout_s, counters=store.counters
    )
    return Embedder(gateway, cache)


def serve(edge: HttpEdge, body: EmbeddingsBody) -> Response[str]:
    from llm_gateway.accounting.cache import cache_control_from_headers
    from llm_gateway.documents.tokens import estimate_text_tokens
    from llm_gateway.embeddings.operation import EmbeddingRequest

    inputs = texts(body.input)
    control = cache_control_from_headers(edge.app.current_event.headers or {}, body.cache)
    fallback = body.fallback or []
    request = EmbeddingRequest(
        model=body.model, inputs=inputs, dimensions=body.dimensions, fallback=fallback, cache=control
    )
    current = services()
    admission = edge.admit([body.model, *fallback], sum(estimate_text_tokens(t) for t in inputs))
    tokens = 0
    try:
        ctx = edge.context("embeddings")
        result = run_sync(embedder(current.gateway()).embed(request, ctx))
        tokens = result.usage.input_tokens
    finally:
        key_checks.settle_later(admission, tokens, current)
    edge.logger.info(
        "embeddings",
        tenant=edge.tenant(),
        provider=result.provider,
        model=result.model,
        inputs=len(inputs),
        cached_inputs=result.cached_inputs,
        input_tokens=tokens,
        cost_usd=result.cost_usd,
        attempts=len(result.attempts),
    )
    edge.metrics.add_metric(name="EmbeddingInputs", unit=MetricUnit.Count, value=len(inputs))
    fields = {"provider": result.provider, "model": result.model, "cost_usd": result.cost_usd}
    observe.count(
        "embeddings",
        ctx,
        ctx.tenant,
        fields | {"latency_ms": result.latency_ms},
        attempts=result.attempts,
        usage=result.usage,
    )
    headers = observe.result_headers(
        {"provider": result.provider, "model": result.model, "cost_usd": result.cost_usd, "attempts": result.attempts}
    )
    return edge.json(200, to_openai(result, body.encoding_format), headers)


def to_openai(result: EmbeddingResult, encoding: str) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode(vector, encoding)}
            for i, vector in enumerate(result.vectors)
        ],
        "model": result.model,
        "usage": {"prompt_tokens": result.usage.input_tokens, "total_tokens": result.usage.input_tokens},
        "x_gateway": {
            "provider": result.provider,
            "dimensions": result.dimensions,
            "cost_usd": result.cost_usd,
            "cached_inputs": result.cached_inputs,
            "inputs": len(result.vectors),
            "latency_ms": result.latency_ms,
            "attempts": [a.model_dump() for a in result.attempts],
        },
    }


def encode(vector: list[float], encoding: str) -> list[float] | str:
    """OpenAI's ``base64``: the vector's little-endian float32 bytes, base64-encoded."""
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector
