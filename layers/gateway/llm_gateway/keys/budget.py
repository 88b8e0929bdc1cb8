"""Per-key budgets on top of the per-tenant ones, with the budget machinery as it is (budgets.py).

A key with a budget has it stored as the budget policy of the subject ``key:<key_id>`` (admin.py
writes it); the edge puts that subject in ``RequestContext.tags["key_budget"]``. This guard wraps the
gateway's budget guard: every reservation is made against the tenant as before and, when the request
carries a key budget, against the key's subject too; refusing either refuses the call (the other is
released at once), and settling settles both. Keys without a budget of their own never reserve as a
key, so ``GATEWAY_DEFAULT_BUDGET_USD`` stays a per-tenant default.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from llm_gateway.interfaces import BudgetGuard, RequestContext, Reservation

KEY_BUDGET_TAG = "key_budget"
# The tenant a key's budget belongs to, on the key's view of the request (budget alerts are filed under it).
BUDGET_OWNER_TAG = "budget_owner"


@dataclass
class PairedReservation:
    amount_usd: float
    tenant: Reservation
    key: Reservation


class KeyBudgetGuard:
    def __init__(self, inner: BudgetGuard) -> None:
        self.inner = inner

    async def reserve(self, ctx: RequestContext, amount_usd: float) -> Reservation:
        tenant = await self.inner.reserve(ctx, amount_usd)
        subject = ctx.tags.get(KEY_BUDGET_TAG)
        if not subject:
            return tenant
        try:
            key = await self.inner.reserve(_as_key(ctx, subject), amount_usd)
        except BaseException:
            await self.inner.settle(ctx, tenant, 0.0)  # release the tenant's share for the next caller
            raise
        return PairedReservation(amount_usd, tenant, key)

    async def settle(self, ctx: RequestContext, reservation: Any, actual_usd: float) -> None:
        if not isinstance(reservation, PairedReservation):
            await self.inner.settle(ctx, reservation, actual_usd)
            return
        await self.inner.settle(ctx, reservation.tenant, actual_usd)
        subject = ctx.tags.get(KEY_BUDGET_TAG) or ""
        await self.inner.settle(_as_key(ctx, subject), reservation.key, actual_usd)


def _as_key(ctx: RequestContext, subject: str) -> RequestContext:
    """The request as the key's budget sees it; the tenant stays known (its report lists the key's alerts)."""
    return replace(ctx, tenant=subject, tags={**ctx.tags, BUDGET_OWNER_TAG: ctx.tenant})
