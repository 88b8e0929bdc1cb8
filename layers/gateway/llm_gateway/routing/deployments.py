"""One model's call over the deployments that serve it, for a buffered answer and a stream alike.

``plan_deployments`` asks the quota tracker for the order (least utilised over weight first) and leaves
out the deployments known to be exhausted; when none is left the model answers ``QuotaExhaustedError``
(a 429 with the earliest reset) without a provider call, and the gateway falls back to the next model.
``call_deployments`` then tries them in turn: each gets a reservation against its declared limits (a
refusal moves on at once), and a 429, an outage or a refused key from one deployment moves on to the
same model's next deployment (a 429 is not retried on it: another deployment has room now) before the
gateway falls back to another model. The last deployment keeps today's retry policy.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

from llm_gateway.errors import (
    ContextTooLongError,
    ProviderAuthError,
    ProviderError,
    QuotaExhaustedError,
    RateLimitedError,
)
from llm_gateway.quotas.model import Deployment, RateLimitSnapshot, Target
from llm_gateway.quotas.tracker import QuotaTicket

if TYPE_CHECKING:
    from llm_gateway.catalog import ModelSpec
    from llm_gateway.gateway import Gateway

T = TypeVar("T")


@dataclass
class DeploymentPlan:
    spec: ModelSpec
    targets: list[Target]
    resets: dict[str, float] = field(default_factory=dict)  # deployment -> when it has room again


class MoveOn(Exception):
    """Carries a 429 out of the retry loop unretried: the model's next deployment is tried instead."""

    def __init__(self, error: ProviderError) -> None:
        super().__init__(error.message)
        self.error = error


def targets_of(gateway: Gateway, spec: ModelSpec) -> list[Target]:
    targets = gateway.deployments.targets(spec.provider, spec.id)
    if targets:
        return targets
    # A set that does not know the model: the provider's adapter, as one implicit deployment.
    provider = gateway.providers[spec.provider]
    return [Target(Deployment(id=spec.provider, provider=spec.provider, kind=spec.provider), provider)]


async def plan_deployments(gateway: Gateway, spec: ModelSpec) -> DeploymentPlan:
    """The deployments to try, in order; QuotaExhaustedError when every one is out of quota."""
    targets = targets_of(gateway, spec)
    if gateway.quotas is None:
        return DeploymentPlan(spec, targets)
    planned = await gateway.quotas.plan(targets)
    plan = DeploymentPlan(spec, planned.targets, dict(planned.resets))
    if not plan.targets:
        raise exhausted(plan, gateway.quotas.now())
    return plan


async def call_deployments(
    gateway: Gateway,
    plan: DeploymentPlan,
    *,
    requests: int,
    tokens: int,
    run: Callable[[Target, bool], Awaitable[T]],
) -> tuple[Target, QuotaTicket | None, T]:
    """``run(target, last)`` calls one deployment (with the retry policy; wrap its single call in
    :func:`moving_on` with ``last``). Returns the deployment that answered, its quota ticket (settle it
    with the tokens used, after the answer) and the answer."""
    tracker = gateway.quotas
    last_error: ProviderError | None = None
    for index, target in enumerate(plan.targets):
        ticket: QuotaTicket | None = None
        if tracker is not None:
            ticket = await tracker.admit(target, requests=requests, tokens=tokens)
            if ticket is None:  # its window is full: a refusal costs no provider call
                plan.resets[target.deployment.id] = tracker.reset_after_refusal()
                continue
        last = index == len(plan.targets) - 1
        try:
            answer = await run(target, last)
        except (ProviderError, MoveOn) as exc:
            err = exc.error if isinstance(exc, MoveOn) else exc
            if ticket is not None and tracker is not None:
                await tracker.settle(ticket, 0)  # a failed call used no tokens
            if isinstance(err, RateLimitedError) and tracker is not None:
                plan.resets[target.deployment.id] = tracker.exhausted_until(target.deployment.id)
            if last or not _next_deployment_may_help(err):
                raise err from None
            last_error = err
            continue
        return target, ticket, answer
    if last_error is not None and not isinstance(last_error, RateLimitedError):
        raise last_error
    raise exhausted(plan, tracker.now() if tracker is not None else time.time())


def moving_on(call: Callable[[], Awaitable[T]], *, last: bool) -> Callable[[], Awaitable[T]]:
    """``call`` whose 429 leaves the retry loop at once when another deployment is left to try."""
    if last:
        return call

    async def once() -> T:
        try:
            return await call()
        except RateLimitedError as err:
            raise MoveOn(err) from None

    return once


async def observe(
    gateway: Gateway, target: Target, err: ProviderError | None, snapshot: RateLimitSnapshot | None
) -> None:
    """Tell the tracker what one provider answer (or error) said about the deployment's quota."""
    if gateway.quotas is None:
        return
    rate_limited = isinstance(err, RateLimitedError)
    if snapshot is None and not rate_limited:
        return
    await gateway.quotas.observe(
        target.deployment,
        snapshot,
        rate_limited=rate_limited,
        retry_after_s=err.retry_after if err is not None else None,
    )


def exhausted(plan: DeploymentPlan, now: float) -> QuotaExhaustedError:
    resets = [r for r in plan.resets.values() if r > now]
    at = min(resets) if resets else now + 1.0
    error = QuotaExhaustedError(
        f"every deployment of {plan.spec.id} is out of quota until {datetime.fromtimestamp(at, UTC).isoformat()}",
        provider=plan.spec.provider,
        model=plan.spec.id,
        details={"model": plan.spec.id, "resets_at": datetime.fromtimestamp(at, UTC).isoformat()},
        retry_after=float(max(1, math.ceil(at - now))),
    )
    error.resets_at = at
    return error


def _next_deployment_may_help(err: ProviderError) -> bool:
    """Another deployment of the same model has its own quota, key and region; not its own prompt limits."""
    if isinstance(err, ContextTooLongError):
        return False
    return err.retryable or isinstance(err, ProviderAuthError)
