"""The completion path: cache, route, call with retries, fall back, account. No AWS or HTTP framing here."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

import httpx

from .catalog import Catalog, ModelSpec
from .errors import (
    AllProvidersFailedError,
    ContextTooLongError,
    GatewayError,
    ProviderAuthError,
    ProviderError,
    ProviderTimeoutError,
)
from .models import (
    Attempt,
    CompletionRequest,
    CompletionResult,
    JsonObjectFormat,
    JsonSchemaFormat,
    ProviderRequest,
    ProviderResponse,
    Usage,
)
from .providers import Provider
from .retry import MIN_CALL_TIME_S, RetryPolicy
from .routing import Candidate, Router
from .seams import BudgetGuard, CircuitBreaker, RequestContext, ResponseCache, UsageRecorder

log = logging.getLogger("llm_gateway")


class Gateway:
    def __init__(
        self,
        *,
        catalog: Catalog,
        router: Router,
        providers: Mapping[str, Provider],
        retry: RetryPolicy,
        client: Callable[[], httpx.AsyncClient],
        request_timeout_s: float = 30.0,
        cache: ResponseCache | None = None,
        usage: UsageRecorder | None = None,
        budget: BudgetGuard | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.catalog = catalog
        self.router = router
        self.providers = providers
        self.retry = retry
        self.client = client
        self.request_timeout_s = request_timeout_s
        self.cache = cache
        self.usage = usage
        self.budget = budget
        self.breaker = breaker

    async def complete(self, request: CompletionRequest, ctx: RequestContext) -> CompletionResult:
        started = time.perf_counter()
        if self.cache is not None:
            hit = await self.cache.lookup(ctx, request)
            if hit is not None:
                return hit.model_copy(update={"cached": True, "latency_ms": _ms_since(started)})
        plan = self.router.plan(request)
        candidates = await self._order_by_health(plan.candidates)
        attempts: list[Attempt] = []
        last_error: ProviderError | None = None
        for candidate in candidates:
            if ctx.deadline.remaining() < MIN_CALL_TIME_S:
                break
            if isinstance(last_error, ContextTooLongError) and not _larger(candidate.spec, last_error, self.catalog):
                continue  # a prompt too long for one window only moves to a larger one
            try:
                response = await self._call_with_retries(candidate, request, ctx, attempts, plan.input_tokens)
            except ProviderError as err:
                last_error = err
                if not _falls_back(err):
                    err.attempts = attempts
                    raise
                log.info("falling back", extra={"provider": err.provider, "model": err.model, "error": err.code})
                continue
            result = CompletionResult(
                content=response.content,
                provider=candidate.spec.provider,
                model=candidate.spec.id,
                finish_reason=response.finish_reason,
                usage=sum((a.usage for a in attempts), Usage()),
                cost_usd=round(sum(a.cost_usd for a in attempts), 10),
                latency_ms=_ms_since(started),
                attempts=attempts,
                metadata=request.metadata,
            )
            if self.cache is not None:
                await self.cache.store(ctx, request, result)
            return result
        if last_error is None:
            last_error = ProviderTimeoutError("no time left in this invocation to call a provider")
        raise AllProvidersFailedError(
            f"all {len(candidates)} candidate model(s) failed; last error: {last_error.message}",
            attempts=attempts,
            last_error=last_error,
        )

    async def _order_by_health(self, candidates: list[Candidate]) -> list[Candidate]:
        """Healthy circuits first; open ones are kept last so that something is always tried."""
        if self.breaker is None:
            return candidates
        breaker = self.breaker
        # Concurrently: each may be a read of shared state (a cached local view on warm instances).
        allowed = await asyncio.gather(*(breaker.allow(c.spec.provider, c.spec.id) for c in candidates))
        healthy = [c for c, ok in zip(candidates, allowed, strict=True) if ok]
        tripped = [c for c, ok in zip(candidates, allowed, strict=True) if not ok]
        if healthy or not tripped:
            return healthy
        # Every circuit is open: still try one, the one that failed least recently, rather than none.
        last_failed = [await breaker.last_failure_at(c.spec.provider, c.spec.id) for c in tripped]
        return [tripped[last_failed.index(min(last_failed))]]

    async def _call_with_retries(
        self,
        candidate: Candidate,
        request: CompletionRequest,
        ctx: RequestContext,
        attempts: list[Attempt],
        input_tokens: int,
    ) -> ProviderResponse:
        spec = candidate.spec
        provider = self.providers[spec.provider]
        wire = ProviderRequest(
            model=spec.wire_model,
            messages=request.messages,
            max_tokens=candidate.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            stop=request.stop,
            seed=request.seed,
            response_format=request.response_format,
            native_structured=_native_structured(request, spec),
        )
        reservation = None
        if self.budget is not None:
            reservation = await self.budget.reserve(ctx, spec.worst_case_cost(input_tokens, candidate.max_tokens))
        spent_before = sum(a.cost_usd for a in attempts)

        async def one_call() -> ProviderResponse:
            return await self._attempt(provider, spec, wire, ctx, attempts)

        try:
            return await self.retry.call(one_call, deadline=ctx.deadline)
        finally:
            if self.budget is not None and reservation is not None:
                await self.budget.settle(ctx, reservation, sum(a.cost_usd for a in attempts) - spent_before)

    async def _attempt(
        self,
        provider: Provider,
        spec: ModelSpec,
        wire: ProviderRequest,
        ctx: RequestContext,
        attempts: list[Attempt],
    ) -> ProviderResponse:
        timeout_s = min(self.request_timeout_s, ctx.deadline.remaining())
        started = time.perf_counter()
        try:
            response = await provider.complete(wire, client=self.client(), timeout_s=timeout_s)
        except ProviderError as err:
            err.provider, err.model = spec.provider, spec.id
            attempt = Attempt(
                provider=spec.provider,
                model=spec.id,
                outcome="error",
                error_class=type(err).__name__,
                error_code=err.code,
                status_code=err.status_code,
                duration_ms=_ms_since(started),
            )
            await self._account(ctx, attempt, attempts, ok=False)
            raise
        attempt = Attempt(
            provider=spec.provider,
            model=spec.id,
            outcome="success",
            duration_ms=_ms_since(started),
            usage=response.usage,
            cost_usd=spec.cost(response.usage),
        )
        await self._account(ctx, attempt, attempts, ok=True)
        return response

    async def _account(self, ctx: RequestContext, attempt: Attempt, attempts: list[Attempt], *, ok: bool) -> None:
        attempts.append(attempt)
        if self.breaker is not None:
            await self.breaker.record(attempt.provider, attempt.model, ok=ok or not _counts_against_health(attempt))
        if self.usage is not None:
            await self.usage.record(ctx, attempt)


def _falls_back(err: ProviderError) -> bool:
    """Another model may succeed where this one could not; the caller's own mistakes do not fall back."""
    return err.retryable or isinstance(err, ProviderAuthError | ContextTooLongError)


def _counts_against_health(attempt: Attempt) -> bool:
    return attempt.error_code in {
        "rate_limited",
        "provider_unavailable",
        "provider_timeout",
        "provider_connection_error",
        "malformed_response",
    }


def _larger(spec: ModelSpec, err: ContextTooLongError, catalog: Catalog) -> bool:
    failed = catalog.find(err.model)
    return failed is None or spec.context_window > failed.context_window


def _native_structured(request: CompletionRequest, spec: ModelSpec) -> bool:
    fmt = request.response_format
    if isinstance(fmt, JsonSchemaFormat):
        return "json_schema" in spec.capabilities
    if isinstance(fmt, JsonObjectFormat):
        return "json_mode" in spec.capabilities
    return False


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 3)


__all__ = ["Gateway", "GatewayError", "RequestContext"]
