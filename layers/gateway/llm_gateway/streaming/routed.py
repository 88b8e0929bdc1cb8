"""The routed stream behind ``Gateway.open_stream``: the non-streamed policy until the first event, then
the provider's events passed through, accounted however the stream ends.

Before the first event a failure is an ordinary failed attempt: retried by the one retry policy, then
fallen back from by the gateway's routing, exactly as for ``complete``. After it, nothing is retried
(the caller already holds part of an answer): a provider failure is a ``truncated`` attempt and a
``StreamInterruptedError``; the caller leaving (``aclose``, or its task cancelled) a ``cancelled``
attempt. Either way the tokens seen are billed and the budget reservation is settled.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

from llm_gateway.catalog import ModelSpec
from llm_gateway.errors import (
    InvalidRequestError,
    MalformedResponseError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    StreamInterruptedError,
)
from llm_gateway.interfaces import RequestContext, Reservation
from llm_gateway.models import Attempt, CompletionRequest, CompletionResult, Outcome, ProviderRequest, Usage
from llm_gateway.observability.spans import span
from llm_gateway.quotas.model import Target
from llm_gateway.quotas.tracker import QuotaTicket
from llm_gateway.routing.attempts import failed_attempt, ms_since, spent
from llm_gateway.routing.deployments import call_deployments, moving_on, observe, plan_deployments
from llm_gateway.routing.router import Candidate
from llm_gateway.routing.wire import canonical_models, wire_request, worst_case_input
from llm_gateway.streaming.assembly import StreamAssembly
from llm_gateway.streaming.events import GatewayEvent, ProviderEvent, StreamDone, StreamEnd
from llm_gateway.streaming.protocol import CompletionStream
from llm_gateway.streaming.replay import CachedReplay

if TYPE_CHECKING:
    from llm_gateway.gateway import Gateway

log = logging.getLogger("llm_gateway.streaming")


@dataclass
class OpenedCall:
    """A provider stream whose first event has arrived, with what its model's call holds."""

    spec: ModelSpec
    wire: ProviderRequest
    events: AsyncIterator[ProviderEvent]
    first: ProviderEvent
    started: float  # perf_counter when this attempt began
    reservation: Reservation | None = None
    spent_before: float = 0.0  # what the request's attempts had cost before this model's call
    target: Target | None = None  # which of the model's deployments is streaming
    quota_ticket: QuotaTicket | None = None  # its hold on the deployment's quota, settled at the end


async def open_routed_stream(gateway: Gateway, request: CompletionRequest, ctx: RequestContext) -> CompletionStream:
    started = time.perf_counter()
    if request.n != 1:
        raise InvalidRequestError("a streamed answer has one choice: send n=1", details={"param": "n"})
    request = canonical_models(request, gateway.catalog)
    if gateway.cache is not None:
        hit = await gateway.cache.lookup(ctx, request)
        if hit is not None:
            return CachedReplay(hit, started)
    attempts: list[Attempt] = []

    async def call(candidate: Candidate, share: RequestContext, required: bool) -> OpenedCall | None:
        return await _open_candidate(gateway, candidate, request, ctx, share, attempts, required=required)

    _, opened = await gateway.route(request, ctx, attempts, call)
    return RoutedStream(gateway, request, ctx, opened, attempts, started)


async def _open_candidate(
    gateway: Gateway,
    candidate: Candidate,
    request: CompletionRequest,
    ctx: RequestContext,
    share: RequestContext,
    attempts: list[Attempt],
    *,
    required: bool,
) -> OpenedCall | None:
    """One model, as ``Gateway._call_with_retries`` calls it: its deployments in quota order, its
    reservation, the breaker's go-ahead, retries until a first event. The reservation goes with the
    opened stream, else is settled now."""
    spec = candidate.spec
    plan = await plan_deployments(gateway, spec)
    wire = wire_request(candidate, request)
    # Held for the whole stream, which may outlast this model's share of the time: the request's context.
    reservation = await gateway.reserve(ctx, candidate, wire, calls=1, choices=1)
    spent_before = spent(attempts)

    async def on_deployment(target: Target, last: bool) -> OpenedCall:
        async def attempt() -> OpenedCall:  # a coroutine function: tenacity awaits only those
            return await _first_event(gateway, target, spec, wire, ctx, share, attempts)

        one_call = moving_on(attempt, last=last)
        return await gateway.retry.call(one_call, deadline=share.deadline)

    opened: OpenedCall | None = None
    try:
        if not await gateway.may_call(spec, required=required):
            return None
        estimate = worst_case_input(wire, spec.provider) + candidate.max_tokens
        _, ticket, answer = await call_deployments(gateway, plan, requests=1, tokens=estimate, run=on_deployment)
        answer.reservation, answer.spent_before, answer.quota_ticket = reservation, spent_before, ticket
        opened = answer
        return opened
    finally:
        if opened is None:  # a fallback may need the room now
            await gateway.settle(ctx, reservation, spent(attempts) - spent_before, after_response=False)


async def _first_event(
    gateway: Gateway,
    target: Target,
    spec: ModelSpec,
    wire: ProviderRequest,
    ctx: RequestContext,
    share: RequestContext,
    attempts: list[Attempt],
) -> OpenedCall:
    """One attempt: call the provider and wait for its first event (``_attempt``'s accounting of a failure).

    The wait is bounded by the first-byte timeout and this model's share of the time (room to fall
    back); the whole stream by the request's deadline, not by the buffered calls' ``request_timeout_s``.
    """
    first_byte_s = min(gateway.stream_first_byte_timeout_s, share.deadline.remaining())
    started = time.perf_counter()
    deployment = target.deployment.id
    events = target.provider.stream(
        wire,
        client=gateway.client(),
        timeout_s=ctx.deadline.remaining(),
        first_byte_timeout_s=first_byte_s,
        idle_timeout_s=gateway.stream_idle_timeout_s,
    )
    try:
        with span("provider.stream_open", Provider=spec.provider, Model=spec.id, Deployment=deployment):  # to 1st event
            async with asyncio.timeout(first_byte_s):
                first = await anext(events)
    except BaseException as exc:
        await close_quietly(events)
        failure = stream_failure(exc, spec.provider, f"sent no event within {first_byte_s:.1f}s")
        if failure is None:  # the caller left while waiting: its health is unknown, the ledger says so
            left = Attempt(
                provider=spec.provider,
                model=spec.id,
                deployment=deployment,
                outcome="cancelled",
                duration_ms=ms_since(started),
            )
            await gateway.account(ctx, left, attempts, ok=None)
            raise
        await observe(gateway, target, failure, failure.rate_limits)
        await gateway.account(ctx, failed_attempt(spec, failure, started, deployment=deployment), attempts, ok=False)
        if failure is exc:
            raise
        raise failure from exc
    return OpenedCall(spec=spec, wire=wire, events=events, first=first, started=started, target=target)


def stream_failure(exc: BaseException, provider: str, timed_out: str) -> ProviderError | None:
    """The provider failure an exception from a provider stream amounts to; None when the caller's side
    was cancelled (nothing the provider did). ``timed_out`` says what the gateway's own timer saw."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, StopAsyncIteration):
        return ProviderConnectionError(f"{provider} ended its stream without its end event")
    if isinstance(exc, TimeoutError):
        return ProviderTimeoutError(f"{provider} stream stalled: {timed_out}")
    if isinstance(exc, Exception):  # an event the adapter could not handle, as ``Provider.complete`` maps it
        log.warning("provider stream failed", extra={"provider": provider, "error": type(exc).__name__})
        return MalformedResponseError(f"{provider} sent a stream event it could not handle: {type(exc).__name__}")
    return None


async def close_quietly(events: AsyncIterator[ProviderEvent]) -> None:
    """Close a provider stream (its connection) if it can be closed; a failure to close changes nothing."""
    aclose = getattr(events, "aclose", None)
    if aclose is None:
        return
    try:
        await aclose()
    except Exception as exc:  # already running, already broken: the connection goes with the generator
        log.warning("provider stream did not close cleanly", extra={"error": type(exc).__name__})


class RoutedStream:
    """A ``CompletionStream`` over an opened provider stream.

    Read it from one task. To stop early, call ``aclose`` between two events, or cancel the reading
    task (its ``CancelledError`` closes the stream the same way): ``aclose`` from another task while a
    read is waiting on the provider cannot close a generator that is running.
    """

    cached = False

    def __init__(
        self,
        gateway: Gateway,
        request: CompletionRequest,
        ctx: RequestContext,
        opened: OpenedCall,
        attempts: list[Attempt],
        started: float,
    ) -> None:
        self.id = f"gw-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.provider = opened.spec.provider
        self.model = opened.spec.id
        self._gateway = gateway
        self._request = request
        self._ctx = ctx
        self._opened = opened
        self._attempts = attempts
        self._started = started
        self._seen = StreamAssembly()
        self._pending: ProviderEvent | None = self._receive(opened.first)
        self._finished = False  # StreamDone given, interrupted, or closed: nothing more to do

    def __aiter__(self) -> AsyncIterator[GatewayEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[GatewayEvent]:
        """``async for``'s iterator: when it is closed before the end (its consumer's ``GeneratorExit``,
        or the loop finalizing an abandoned one), the stream is closed as by ``aclose``."""
        try:
            while True:
                try:
                    event = await self.__anext__()
                except StopAsyncIteration:
                    return
                yield event
        finally:
            await self.aclose()  # nothing to do after the end

    async def __anext__(self) -> GatewayEvent:
        if self._finished:
            raise StopAsyncIteration
        if self._pending is not None:
            event, self._pending = self._pending, None
        else:
            event = self._receive(await self._next_from_provider())
        if isinstance(event, StreamEnd):
            return await self._complete(event)
        return event

    async def aclose(self) -> None:
        """The caller left before the end: stop the provider call, bill what it generated. Idempotent."""
        if self._finished:
            return
        self._finished = True
        await close_quietly(self._opened.events)
        # The provider was streaming fine: its circuit learns nothing bad from the caller leaving.
        await self._end_attempt("cancelled", self._seen_usage(), ok=True)

    # --- the provider's side -------------------------------------------------------------------

    def _receive(self, event: ProviderEvent) -> ProviderEvent:
        if not isinstance(event, StreamEnd):
            self._seen.add(event)
        return event

    async def _next_from_provider(self) -> ProviderEvent:
        idle_s = self._gateway.stream_idle_timeout_s
        left_s = self._ctx.deadline.remaining()
        try:
            async with asyncio.timeout(min(idle_s, left_s)):
                return await anext(self._opened.events)
        except BaseException as exc:
            waited = "the request's deadline passed" if left_s < idle_s else f"no event for {idle_s:.1f}s"
            failure = stream_failure(exc, self.provider, waited)
            if failure is None:  # the caller's task was cancelled: as if it had closed the stream
                await self.aclose()
                raise
        await self._interrupt(failure)

    async def _interrupt(self, failure: ProviderError) -> NoReturn:
        """After the first event: no retry, no fallback. The attempt is truncated, the caller told."""
        self._finished = True
        await close_quietly(self._opened.events)
        failure.provider, failure.model = self.provider, self.model
        await self._end_attempt("truncated", self._seen_usage(), ok=False, failure=failure)
        error = StreamInterruptedError(
            f"the {self.provider} stream broke after the answer began: {failure.message}",
            details={"provider": self.provider, "model": self.model, "cause": failure.code},
        )
        error.attempts = self._attempts
        raise error from failure

    async def _complete(self, end: StreamEnd) -> StreamDone:
        try:
            tool_calls = self._seen.tool_calls()
        except ProviderError as err:
            await self._interrupt(err)
        self._finished = True
        await close_quietly(self._opened.events)  # past its end event: lets the adapter release the connection
        usage = end.usage if end.usage is not None else self._seen.estimated_usage(self._opened.wire)
        if self._opened.target is not None:  # what the stream's headers said about the deployment's quota
            await observe(self._gateway, self._opened.target, None, end.rate_limits)
        await self._end_attempt("success", usage, ok=True)
        result = CompletionResult(
            id=self.id,
            created=self.created,
            content=self._seen.text,
            tool_calls=tool_calls,
            provider=self.provider,
            model=self.model,
            finish_reason=end.finish_reason,
            usage=sum((a.usage for a in self._attempts), Usage()),
            cost_usd=round(spent(self._attempts), 10),
            latency_ms=ms_since(self._started),
            attempts=self._attempts,
            metadata=self._request.metadata,
        )
        if self._gateway.cache is not None:  # the cache decides what is complete enough to keep
            await self._gateway.cache.store(self._ctx, self._request, result)
        return StreamDone(result, usage_estimated=end.usage is None)

    # --- accounting ----------------------------------------------------------------------------

    def _seen_usage(self) -> Usage:
        return self._seen.estimated_usage(self._opened.wire)

    async def _end_attempt(
        self, outcome: Outcome, usage: Usage, *, ok: bool, failure: ProviderError | None = None
    ) -> None:
        """The stream's attempt into the ledger and the breaker, then the model's reservation settled on
        what its attempts cost (after the response, as for any answer), whatever happens in between."""
        opened = self._opened
        attempt = Attempt(
            provider=self.provider,
            model=self.model,
            deployment=opened.target.deployment.id if opened.target is not None else None,
            outcome=outcome,
            error_class=type(failure).__name__ if failure is not None else None,
            error_code=failure.code if failure is not None else None,
            status_code=failure.status_code if failure is not None else None,
            duration_ms=ms_since(opened.started),
            usage=usage,
            cost_usd=opened.spec.cost(usage),
        )
        try:
            await self._gateway.account(self._ctx, attempt, self._attempts, ok=ok)
        finally:
            spent_usd = spent(self._attempts) - opened.spent_before
            await self._gateway.settle(self._ctx, opened.reservation, spent_usd, after_response=True)
            if opened.quota_ticket is not None and self._gateway.quotas is not None:
                settle = functools.partial(self._gateway.quotas.settle, opened.quota_ticket, usage.total_tokens)
                await self._ctx.defer.soon(settle)
