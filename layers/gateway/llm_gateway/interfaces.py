"""The interfaces the gateway calls around each request, each optional.

The cache, the usage ledger, budgets and the circuit breaker plug in here; the gateway works without
any of them (a plain deployment, a unit test). Implementations live in their own modules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from llm_gateway.after_response import RUN_NOW, Deferral
from llm_gateway.models import Attempt, CompletionRequest, CompletionResult
from llm_gateway.routing.deadline import Deadline

if TYPE_CHECKING:
    from llm_gateway.catalog import ModelSpec
    from llm_gateway.guardrails.request import GuardrailRequest


@dataclass
class RequestContext:
    """Who is asking, how long we have, and where bookkeeping goes after the answer (``defer``: the
    invocation's after-response deferral, passed in by the edge). The tenant always comes from the
    platform, never the body."""

    tenant: str
    request_id: str
    deadline: Deadline
    operation: str = "completion"
    log_prompts: bool = False
    tags: dict[str, str] = field(default_factory=dict)
    defer: Deferral = RUN_NOW
    # The caller's key policy over catalog models: automatic fallbacks the key may not use are left out.
    allows_model: Callable[[ModelSpec], bool] | None = None
    # The guardrail policy the edge resolved (key policy, header, body) and its verdicts' sink; None:
    # the deployment's default (GATEWAY_GUARDRAILS).
    guardrails: GuardrailRequest | None = None


class ResponseCache(Protocol):
    async def lookup(self, ctx: RequestContext, request: CompletionRequest) -> CompletionResult | None: ...

    async def store(self, ctx: RequestContext, request: CompletionRequest, result: CompletionResult) -> None: ...


class UsageRecorder(Protocol):
    async def record(self, ctx: RequestContext, attempt: Attempt) -> None: ...


class Reservation(Protocol):
    amount_usd: float


class BudgetGuard(Protocol):
    async def reserve(self, ctx: RequestContext, amount_usd: float) -> Reservation: ...

    async def settle(self, ctx: RequestContext, reservation: Reservation, actual_usd: float) -> None: ...


class CircuitBreaker(Protocol):
    async def available(self, provider: str, model: str) -> bool:
        """Read-only: could the model be called now? (For ordering; claims nothing.)"""
        ...

    async def allow(self, provider: str, model: str) -> bool:
        """Just before a call: True to go ahead (claims the half-open probe when there is one)."""
        ...

    async def record(self, provider: str, model: str, *, ok: bool, auth_failure: bool = False) -> None: ...

    async def last_failure_at(self, provider: str, model: str) -> float:
        """Epoch seconds of the model's last counted failure (0 if none); picks a model when all are open."""
        ...
