"""The completion path: cache, route, call with retries, fall back, account. No AWS or HTTP framing here."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, TypeVar

import httpx

from llm_gateway.catalog import Catalog, ModelSpec
from llm_gateway.errors import (
    AllProvidersFailedError,
    AllProvidersRateLimitedError,
    ContextTooLongError,
    GatewayError,
    ProviderAuthError,
    ProviderBadRequestError,
    ProviderError,
    RateLimitedError,
)
from llm_gateway.guardrails.pipeline import screen
from llm_gateway.interfaces import (
    BudgetGuard,
    CircuitBreaker,
    RequestContext,
    Reservation,
    ResponseCache,
    UsageRecorder,
)
from llm_gateway.models import (
    Attempt,
    CompletionRequest,
    CompletionResult,
    ProviderRequest,
    ProviderResponse,
    Usage,
)
from llm_gateway.observability.spans import span
from llm_gateway.providers.base import Provider
from llm_gateway.quotas.deployments import ConfiguredDeployments
from llm_gateway.quotas.model import DeploymentSet, Target
from llm_gateway.quotas.tracker import QuotaTracker
from llm_gateway.routing.attempts import failed_attempt, ms_since, spent, spent_tokens
from llm_gateway.routing.choices import in_parallel
from llm_gateway.routing.deployments import call_deployments, moving_on, observe, plan_deployments
from llm_gateway.routing.fallback_time import candidate_context
from llm_gateway.routing.retry import MIN_CALL_TIME_S, RetryPolicy
from llm_gateway.routing.router import Candidate, Router
from llm_gateway.routing.wire import canonical_models, native_structured, wire_request, worst_case_input

if TYPE_CHECKING:
    from llm_gateway.guardrails.pipeline import GuardrailPipeline
    from llm_gateway.streaming.protocol import CompletionStream

log = logging.getLogger("llm_gateway")
T = TypeVar("T")


class Gateway:
    def __init__(
        self,
        *,
        catalog: Catalog,
        router: Router,
        providers: Mapping[str, Provider],
        retry: RetryPolicy,
        deployments: DeploymentSet | None = None,
        client: Callable[[], httpx.AsyncClient],
        request_timeout_s: float = 30.0,
        cache: ResponseCache | None = None,
        usage: UsageRecorder | None = None,
        budget: BudgetGuard | None = None,
        breaker: CircuitBreaker | None = None,
        stream_first_byte_timeout_s: float = 30.0,
        stream_idle_timeout_s: float = 30.0,
        quotas: QuotaTracker | None = None,
        guardrails: GuardrailPipeline | None = None,
    ) -> None:
        self.catalog = catalog
        self.router = router
        self.providers = providers
        # Which deployments serve each model (quotas/); without one, one deployment per provider.
        self.deployments: DeploymentSet = (
            deployments if deployments is not None else ConfiguredDeployments.one_per_provider(providers)
        )
        self.retry = retry
        self.client = client
        self.request_timeout_s = request_timeout_s
        self.cache = cache
        self.usage = usage
        self.budget = budget
        self.breaker = breaker
        # Streams only (Settings.stream_*): the wait for a stream's first event, and between two events.
        self.stream_first_byte_timeout_s = stream_first_byte_timeout_s
        self.stream_idle_timeout_s = stream_idle_timeout_s
        # Per-deployment quota state (quotas/tracker.py): spread, skip the exhausted, count declared limits.
        self.quotas = quotas
        # Checks on the input before the cache and on the output after the call (guardrails/); None: none.
        self.guardrails = guardrails

    async def complete(self, request: CompletionRequest, ctx: RequestContext) -> CompletionResult:
        started = time.perf_counter()
        request = canonical_models(request, self.catalog)
        # Guardrails on the input before the cache: a redacted request is looked up and stored redacted.
        screening = await screen(self, request, ctx)
        request = screening.request
        if self.cache is not None:
            hit = await self.cache.lookup(ctx, request)
            if hit is not None:
                return await screening.answer(hit.model_copy(update={"cached": True, "latency_ms": ms_since(started)}))
        attempts: list[Attempt] = []

        async def call(candidate: Candidate, share: RequestContext, required: bool) -> ProviderResponse | None:
            return await self._call_with_retries(candidate, request, share, attempts, required=required)

        candidate, response = await self.route(request, ctx, attempts, call)
        result = CompletionResult(
            content=response.content,
            tool_calls=response.tool_calls,
            provider=candidate.spec.provider,
            model=candidate.spec.id,
            finish_reason=response.finish_reason,
            usage=sum((a.usage for a in attempts), Usage()),
            cost_usd=round(sum(a.cost_usd for a in attempts), 10),
            latency_ms=ms_since(started),
            attempts=attempts,
            metadata=request.metadata,
            logprobs=response.logprobs,
            alternatives=response.alternatives,
        )
        result = await screening.checked(result)  # output guardrails before the cache keeps the answer
        if self.cache is not None:
            await self.cache.store(ctx, request, result)
        return screening.restored(result)

    async def open_stream(self, request: CompletionRequest, ctx: RequestContext) -> CompletionStream:
        """The answer as a stream, opened once its first event arrived (see streaming/protocol.py)."""
        # Imported here: functions that never stream do not load the streaming modules.
        from llm_gateway.streaming.routed import open_routed_stream

        screening = await screen(self, request, ctx)  # guardrails: the input before the cache, the output checked
        return screening.stream(await open_routed_stream(self, screening.stream_request(), ctx))

    async def route(
        self,
        request: CompletionRequest,
        ctx: RequestContext,
        attempts: list[Attempt],
        call: Callable[[Candidate, RequestContext, bool], Awaitable[T | None]],
    ) -> tuple[Candidate, T]:
        """The routing policy, for a buffered answer and a stream alike: the router's plan in breaker
        order, one ``call(candidate, ctx_share, required)`` per model (None: its circuit refused it), and
        the fallback rules. Returns the candidate that answered and what ``call`` returned."""
        plan = self.router.plan(request, ctx.allows_model)
        candidates, forced = await self._order_by_health(plan.candidates)
        last_error: ProviderError | None = None
        waits: list[float] = []  # every model's rate-limit wait: the answer's Retry-After is the earliest
        for index, candidate in enumerate(candidates):
            if ctx.deadline.remaining() < MIN_CALL_TIME_S:
                break
            if isinstance(last_error, ContextTooLongError) and not _larger(candidate.spec, last_error, self.catalog):
                continue  # a prompt too long for one window only moves to a larger one
            # The breaker's claim (a half-open probe) is made only now, for the model about to be called:
            # a probe claimed for a fallback that is never called would stall its recovery. A refusal
            # skips the model, unless nothing else was or will be called (never fail without a call).
            required = forced or (not attempts and index == len(candidates) - 1)
            try:
                share = candidate_context(ctx, fallbacks_left=len(candidates) - index - 1)  # room to fall back
                answer = await call(candidate, share, required)
            except ProviderError as err:
                last_error = err
                if isinstance(err, RateLimitedError) and err.retry_after:
                    waits.append(err.retry_after)
                if not _falls_back(
                    err, native_schema=native_structured(request, candidate.spec) or bool(request.tools)
                ):
                    err.attempts = attempts
                    raise
                log.info("falling back", extra={"provider": err.provider, "model": err.model, "error": err.code})
                continue
            if answer is None:
                log.info("circuit not available, skipping", extra={"model": candidate.spec.id})
                continue
            return candidate, answer
        error = AllProvidersFailedError.after(len(candidates), attempts=attempts, last_error=last_error)
        if isinstance(error, AllProvidersRateLimitedError) and waits:
            error.retry_after = min(waits)
        raise error

    async def _order_by_health(self, candidates: list[Candidate]) -> tuple[list[Candidate], bool]:
        """The candidates whose circuit may be called, in order; True when none could and one is forced."""
        if self.breaker is None:
            return candidates, False
        breaker = self.breaker
        # Read-only and concurrent: each may be a read of shared state (a cached local view when warm).
        available = await asyncio.gather(*(breaker.available(c.spec.provider, c.spec.id) for c in candidates))
        healthy = [c for c, ok in zip(candidates, available, strict=True) if ok]
        tripped = [c for c, ok in zip(candidates, available, strict=True) if not ok]
        if healthy or not tripped:
            return healthy, False
        # Every circuit is open: still try one, the one that failed least recently, rather than none.
        last_failed = [await breaker.last_failure_at(c.spec.provider, c.spec.id) for c in tripped]
        return [tripped[last_failed.index(min(last_failed))]], True

    async def _call_with_retries(
        self,
        candidate: Candidate,
        request: CompletionRequest,
        ctx: RequestContext,
        attempts: list[Attempt],
        *,
        required: bool,
    ) -> ProviderResponse | None:
        """The model's answer, or None when its circuit refused the call and the call is not ``required``.
        The model's deployments are tried in quota order (routing/deployments.py); QuotaExhaustedError
        when none has quota left, before any reservation or call."""
        spec = candidate.spec
        plan = await plan_deployments(self, spec)
        wire = wire_request(candidate, request)
        # n choices: in one call where the provider has them natively, else n parallel calls of one each.
        native_n = all(getattr(t.provider, "native_n", False) for t in plan.targets)
        calls = 1 if request.n == 1 or native_n else request.n
        wire = wire if calls == 1 else wire.model_copy(update={"n": 1})
        reservation = await self.reserve(ctx, candidate, wire, calls=calls, choices=request.n)
        spent_before = spent(attempts)

        async def on_deployment(target: Target, last: bool) -> ProviderResponse:
            async def attempt() -> ProviderResponse:  # a coroutine function: tenacity awaits only those
                return await self._attempt(target, spec, wire, ctx, attempts)

            one_call = moving_on(attempt, last=last)
            if calls == 1:
                return await self.retry.call(one_call, deadline=ctx.deadline)
            return await in_parallel(lambda: self.retry.call(one_call, deadline=ctx.deadline), calls)

        answered = False
        try:
            if not await self.may_call(spec, required=required):
                return None  # the reservation is released below (settled at zero)
            estimate = worst_case_input(wire, spec.provider) * calls + candidate.max_tokens * request.n
            _, ticket, response = await call_deployments(self, plan, requests=calls, tokens=estimate, run=on_deployment)
            answered = True
            if ticket is not None and self.quotas is not None:
                used = spent_tokens(attempts, ticket.deployment.id)
                await ctx.defer.soon(functools.partial(self.quotas.settle, ticket, used))
            return response
        finally:
            # An answer ends the request: settle after the response (the reservation holds the worst
            # case until then). A failure may be followed by a fallback that needs the room now.
            await self.settle(ctx, reservation, spent(attempts) - spent_before, after_response=answered)

    async def reserve(
        self, ctx: RequestContext, candidate: Candidate, wire: ProviderRequest, *, calls: int, choices: int
    ) -> Reservation | None:
        """The budget's hold on the worst case: every call reads the whole input, every choice may write
        max_tokens. None without budgets."""
        if self.budget is None:
            return None
        spec = candidate.spec
        worst_input = worst_case_input(wire, spec.provider) * calls
        return await self.budget.reserve(ctx, spec.worst_case_cost(worst_input, candidate.max_tokens * choices))

    async def settle(
        self, ctx: RequestContext, reservation: Reservation | None, spent_usd: float, *, after_response: bool
    ) -> None:
        if self.budget is None or reservation is None:
            return
        settle = functools.partial(self.budget.settle, ctx, reservation, spent_usd)
        await (ctx.defer.soon(settle) if after_response else settle())

    async def may_call(self, spec: ModelSpec, *, required: bool) -> bool:
        """The breaker's go-ahead just before a call (it claims a half-open probe); a ``required`` call
        goes ahead whatever it says."""
        if self.breaker is None:
            return True
        return await self.breaker.allow(spec.provider, spec.id) or required

    async def _attempt(
        self,
        target: Target,
        spec: ModelSpec,
        wire: ProviderRequest,
        ctx: RequestContext,
        attempts: list[Attempt],
    ) -> ProviderResponse:
        timeout_s = min(self.request_timeout_s, ctx.deadline.remaining())
        started = time.perf_counter()
        deployment = target.deployment.id
        try:
            with span("provider.call", Provider=spec.provider, Model=spec.id, Deployment=deployment):
                response = await target.provider.complete(wire, client=self.client(), timeout_s=timeout_s)
        except ProviderError as err:
            await observe(self, target, err, err.rate_limits)
            await self.account(ctx, failed_attempt(spec, err, started, deployment=deployment), attempts, ok=False)
            raise
        await observe(self, target, None, response.rate_limits)
        attempt = Attempt(
            provider=spec.provider,
            model=spec.id,
            deployment=deployment,
            outcome="success",
            duration_ms=ms_since(started),
            usage=response.usage,
            cost_usd=spec.cost(response.usage),
        )
        await self.account(ctx, attempt, attempts, ok=True)
        return response

    async def account(self, ctx: RequestContext, attempt: Attempt, attempts: list[Attempt], *, ok: bool | None) -> None:
        """One attempt into the answer's list, the breaker (``ok`` None: leave it out) and the ledger."""
        attempts.append(attempt)
        if self.breaker is not None and ok is not None:
            await self.breaker.record(
                attempt.provider,
                attempt.model,
                ok=ok or not _counts_against_health(attempt, quota_aware=self.quotas is not None),
                auth_failure=attempt.error_code == "provider_auth_error",
            )
        if self.usage is not None:
            await self.usage.record(ctx, attempt)


def _falls_back(err: ProviderError, *, native_schema: bool) -> bool:
    """Another model may succeed where this one could not; the caller's own mistakes do not fall back.

    A request refused while a native schema was sent (a response schema, or tool parameters) may be the
    provider rejecting that schema (each supports a different subset of JSON Schema): another provider
    may accept it.
    """
    if native_schema and isinstance(err, ProviderBadRequestError):
        return True
    return err.retryable or isinstance(err, ProviderAuthError | ContextTooLongError)


def _counts_against_health(attempt: Attempt, *, quota_aware: bool) -> bool:
    if attempt.outcome == "truncated":
        return True  # a stream that broke after it began: whatever the cause, the provider failed mid-answer
    if quota_aware and attempt.error_code == "rate_limited":
        # One deployment out of quota is not the model unhealthy: the quota tracker skips that deployment
        # until its own reset, while the model's other deployments keep serving.
        return False
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


__all__ = ["Gateway", "GatewayError", "RequestContext"]
