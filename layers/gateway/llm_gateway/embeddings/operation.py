"""The embeddings operation: validate, look up each input's cached vector, send only the misses to the
provider in batches within its limits (concurrently, bounded), re-assemble in input order, account.

Routing is by name: the model asked for, then the caller's ``fallback`` list, where only models that can
answer in the same vector length are eligible (vectors of another length belong to another space; the
caller's index could not use them). Every model answers the whole request: cached vectors and batches
of one model are never mixed with another's. Retries use the gateway's one RetryPolicy; each provider
call is one ledger attempt; budgets reserve the worst case per model tried and settle what was spent.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from llm_gateway.catalog import EmbeddingLimits, ModelSpec
from llm_gateway.documents.tokens import ESTIMATE_MARGIN, ESTIMATE_SLACK_TOKENS, estimate_text_tokens
from llm_gateway.embeddings.adapters import EmbeddingProvider, embedding_adapter
from llm_gateway.embeddings.cache import EmbeddingCache, vector_key
from llm_gateway.errors import (
    AllProvidersFailedError,
    InvalidRequestError,
    MalformedResponseError,
    ProviderAuthError,
    ProviderError,
)
from llm_gateway.guardrails.pipeline import screen_inputs
from llm_gateway.interfaces import RequestContext
from llm_gateway.models import Attempt, CacheControl, Usage
from llm_gateway.routing.attempts import failed_attempt, ms_since, spent
from llm_gateway.routing.retry import MIN_CALL_TIME_S

if TYPE_CHECKING:
    from llm_gateway.gateway import Gateway

log = logging.getLogger("llm_gateway.embeddings")

MAX_INPUTS = 2048  # per request, as OpenAI's own limit
DEFAULT_CONCURRENCY = 4  # provider calls in flight at once for one request


class EmbeddingRequest(BaseModel):
    model: str
    inputs: list[str] = Field(min_length=1)
    dimensions: int | None = None
    fallback: list[str] = Field(default_factory=list)
    cache: CacheControl | None = None


class EmbeddingResult(BaseModel):
    vectors: list[list[float]]
    model: str
    provider: str
    dimensions: int
    usage: Usage
    cost_usd: float
    latency_ms: float
    attempts: list[Attempt]
    cached_inputs: int  # inputs answered from the cache (no provider call for them)


class Embedder:
    def __init__(
        self, gateway: Gateway, cache: EmbeddingCache | None = None, *, concurrency: int = DEFAULT_CONCURRENCY
    ) -> None:
        self.gateway = gateway
        self.cache = cache
        self.concurrency = concurrency

    def spec(self, name: str, param: str) -> ModelSpec:
        spec = self.gateway.catalog.get(name)
        if spec.embedding is None:
            raise InvalidRequestError(
                f"'{spec.id}' is not an embedding model; GET /v1/models lists them (kind 'embeddings')",
                details={"param": param, "model": spec.id},
            )
        return spec

    def plan(self, request: EmbeddingRequest) -> tuple[list[ModelSpec], int]:
        """The models to try, in order, and the vector length they answer in; 400s for what no call fixes."""
        primary = self.spec(request.model, "model")
        limits = _limits(primary)
        dimensions = request.dimensions or limits.dimensions
        if not limits.accepts(dimensions):
            raise InvalidRequestError(
                f"{primary.id} answers in {limits.choices()} dimensions, not {dimensions}",
                details={"param": "dimensions", "model": primary.id},
            )
        _check_inputs(request.inputs, limits, primary.id)
        if primary.provider not in self.gateway.providers or self._adapter(primary) is None:
            raise InvalidRequestError(f"no provider is configured for {primary.provider}", details={"param": "model"})
        chain = [primary]
        for index, name in enumerate(request.fallback):
            spec = self.spec(name, f"fallback.{index}")
            if spec in chain or not self._eligible(spec, dimensions, request.inputs):
                # Another vector length (or too small an input window) is not a fallback: never mixed.
                log.info("embedding fallback not eligible", extra={"model": spec.id, "dimensions": dimensions})
                continue
            chain.append(spec)
        return chain, dimensions

    def _eligible(self, spec: ModelSpec, dimensions: int, inputs: Sequence[str]) -> bool:
        limits = _limits(spec)
        return (
            limits.accepts(dimensions)
            and spec.provider in self.gateway.providers
            and self._adapter(spec) is not None
            and all(estimate_text_tokens(text) <= limits.max_tokens_per_input for text in inputs)
        )

    def _adapter(self, spec: ModelSpec) -> EmbeddingProvider | None:
        provider = self.gateway.providers.get(spec.provider)
        return embedding_adapter(provider) if provider is not None else None

    async def embed(self, request: EmbeddingRequest, ctx: RequestContext) -> EmbeddingResult:
        started = time.perf_counter()
        # Guardrails on the inputs before the cache and the providers (blocked: a 400, no call made).
        request = request.model_copy(update={"inputs": await screen_inputs(self.gateway, request.inputs, ctx)})
        chain, dimensions = self.plan(request)
        attempts: list[Attempt] = []
        last_error: ProviderError | None = None
        for index, spec in enumerate(chain):
            if ctx.deadline.remaining() < MIN_CALL_TIME_S:
                break
            required = not attempts and index == len(chain) - 1  # never fail without one call
            try:
                answer = await self._with_model(spec, request, dimensions, ctx, attempts, required=required)
            except ProviderError as err:
                if not (err.retryable or isinstance(err, ProviderAuthError)):
                    err.attempts = attempts
                    raise
                last_error = err
                log.info("falling back", extra={"provider": err.provider, "model": err.model, "error": err.code})
                continue
            if answer is None:
                log.info("circuit not available, skipping", extra={"model": spec.id})
                continue
            vectors, cached = answer
            return EmbeddingResult(
                vectors=vectors,
                model=spec.id,
                provider=spec.provider,
                dimensions=dimensions,
                usage=sum((a.usage for a in attempts), Usage()),
                cost_usd=round(spent(attempts), 10),
                latency_ms=ms_since(started),
                attempts=attempts,
                cached_inputs=cached,
            )
        raise AllProvidersFailedError.after(len(chain), attempts=attempts, last_error=last_error)

    async def _with_model(
        self,
        spec: ModelSpec,
        request: EmbeddingRequest,
        dimensions: int,
        ctx: RequestContext,
        attempts: list[Attempt],
        *,
        required: bool,
    ) -> tuple[list[list[float]], int] | None:
        """(the vectors in input order, how many came from the cache); None: the circuit refused it."""
        unique = list(dict.fromkeys(request.inputs))  # a text sent twice is embedded once
        namespace = request.cache.namespace if request.cache else None
        keys = [vector_key(ctx.tenant, namespace, spec.id, spec.wire_model, dimensions, t) for t in unique]
        found: list[list[float] | None] = [None] * len(unique)
        if self.cache is not None:
            found = await self.cache.lookup(keys, dimensions, request.cache)
        misses = [i for i, vector in enumerate(found) if vector is None]
        if misses:
            if not await self.gateway.may_call(spec, required=required):
                return None
            fresh = await self._embed_misses(spec, [unique[i] for i in misses], dimensions, ctx, attempts)
            for i, vector in zip(misses, fresh, strict=True):
                found[i] = vector
            if self.cache is not None:
                await self.cache.store(ctx, [(keys[i], found[i] or []) for i in misses], request.cache)
        fetched = {unique[i] for i in misses}
        by_text = dict(zip(unique, found, strict=True))
        vectors = [by_text[text] or [] for text in request.inputs]
        return vectors, sum(1 for text in request.inputs if text not in fetched)

    async def _embed_misses(
        self, spec: ModelSpec, texts: list[str], dimensions: int, ctx: RequestContext, attempts: list[Attempt]
    ) -> list[list[float]]:
        """The texts' vectors from the provider: batches within the model's limits, at most
        ``concurrency`` calls at once, the worst case reserved first and what was spent settled."""
        limits = _limits(spec)
        adapter = self._adapter(spec)
        assert adapter is not None  # plan() kept only models with an adapter
        batches = _batches(texts, limits)
        gateway = self.gateway
        reservation = None
        if gateway.budget is not None:
            worst = math.ceil(sum(estimate_text_tokens(t) for t in texts) * ESTIMATE_MARGIN) + ESTIMATE_SLACK_TOKENS
            reservation = await gateway.budget.reserve(ctx, spec.worst_case_cost(worst, 0))
        spent_before = spent(attempts)
        gate = asyncio.Semaphore(self.concurrency)
        wanted = None if dimensions == limits.dimensions else dimensions

        async def one_batch(batch: list[str]) -> list[list[float]]:
            # A coroutine function, not a lambda: tenacity awaits only what it sees is one.
            async def one_call() -> list[list[float]]:
                return await self._attempt(adapter, spec, batch, wanted, dimensions, ctx, attempts)

            async with gate:
                return await gateway.retry.call(one_call, deadline=ctx.deadline)

        answered = False
        try:
            # Every batch runs to its end (no cancellation mid-call: a call made is a call billed and
            # accounted); the first failure is then raised.
            outcomes = await asyncio.gather(*(one_batch(b) for b in batches), return_exceptions=True)
            failures = [o for o in outcomes if isinstance(o, BaseException)]
            if failures:
                raise failures[0]
            answered = True
            return [vector for outcome in outcomes if not isinstance(outcome, BaseException) for vector in outcome]
        finally:
            if reservation is not None:
                await gateway.settle(ctx, reservation, spent(attempts) - spent_before, after_response=answered)

    async def _attempt(
        self,
        adapter: EmbeddingProvider,
        spec: ModelSpec,
        batch: list[str],
        wanted: int | None,
        dimensions: int,
        ctx: RequestContext,
        attempts: list[Attempt],
    ) -> list[list[float]]:
        gateway = self.gateway
        timeout_s = min(gateway.request_timeout_s, ctx.deadline.remaining())
        started = time.perf_counter()
        try:
            answer = await adapter.embed(batch, spec.wire_model, wanted, client=gateway.client(), timeout_s=timeout_s)
            if any(len(v) != dimensions for v in answer.vectors):
                raise MalformedResponseError(
                    f"{spec.provider} answered vectors of another length than {dimensions}",
                    provider=spec.provider,
                    model=spec.id,
                )
        except ProviderError as err:
            await gateway.account(ctx, failed_attempt(spec, err, started), attempts, ok=False)
            raise
        usage = Usage(input_tokens=answer.input_tokens)
        attempt = Attempt(
            provider=spec.provider,
            model=spec.id,
            outcome="success",
            duration_ms=ms_since(started),
            usage=usage,
            cost_usd=spec.cost(usage),
        )
        await gateway.account(ctx, attempt, attempts, ok=True)
        return answer.vectors


def _limits(spec: ModelSpec) -> EmbeddingLimits:
    assert spec.embedding is not None  # only embedding models reach here (Embedder.spec)
    return spec.embedding


def _check_inputs(inputs: Sequence[str], limits: EmbeddingLimits, model: str) -> None:
    if len(inputs) > MAX_INPUTS:
        raise InvalidRequestError(
            f"input has {len(inputs)} items; at most {MAX_INPUTS} per request", details={"param": "input"}
        )
    for index, text in enumerate(inputs):
        if not text:
            raise InvalidRequestError(
                f"input[{index}] is empty; every input must be a non-empty string", details={"param": "input"}
            )
        tokens = estimate_text_tokens(text)
        if tokens > limits.max_tokens_per_input:
            raise InvalidRequestError(
                f"input[{index}] is about {tokens} tokens; {model} takes at most {limits.max_tokens_per_input}",
                details={"param": "input", "index": index},
            )


def _batches(texts: list[str], limits: EmbeddingLimits) -> list[list[str]]:
    """Consecutive runs of at most ``max_inputs_per_call`` texts (and ``max_tokens_per_call`` estimated)."""
    batches: list[list[str]] = []
    current: list[str] = []
    tokens = 0
    for text in texts:
        size = estimate_text_tokens(text)
        full = len(current) >= limits.max_inputs_per_call
        too_big = limits.max_tokens_per_call is not None and tokens + size > limits.max_tokens_per_call
        if current and (full or too_big):
            batches.append(current)
            current, tokens = [], 0
        current.append(text)
        tokens += size
    if current:
        batches.append(current)
    return batches
