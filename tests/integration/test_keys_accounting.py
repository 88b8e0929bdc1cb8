"""Gateway keys in the accounting: usage broken down by key (the ledger reads ``tags["key_id"]``) and a
key's own budget next to its tenant's (KeyBudgetGuard over the budget guard), on the local stack."""

from __future__ import annotations

from decimal import Decimal

import pytest

from llm_gateway import aws
from llm_gateway.accounting.budgets import DynamoDBBudgetGuard
from llm_gateway.accounting.usage_reports import report_range, usage_summary
from llm_gateway.errors import BudgetExceededError
from llm_gateway.interfaces import RequestContext
from llm_gateway.keys.budget import KeyBudgetGuard
from llm_gateway.keys.policy import KeyBudget, KeyPolicy, VerifiedKey
from llm_gateway.models import CompletionRequest
from llm_gateway.routing.deadline import Deadline
from llm_gateway.runtime import run_sync
from tests.support.accounting import MESSAGES, gateway_from_env, ledger_items, unique

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_real_aws")]


def key(tenant: str, key_id: str, budget_usd: str | None = None) -> VerifiedKey:
    budget = KeyBudget(Decimal(budget_usd), "day") if budget_usd else None
    return VerifiedKey(key_id, tenant, KeyPolicy(tenant=tenant, name="", created_at=0.0, budget=budget))


def ctx_for(verified: VerifiedKey) -> RequestContext:
    return RequestContext(
        tenant=verified.tenant, request_id=unique("req"), deadline=Deadline(20), tags=verified.context_tags()
    )


def test_usage_reports_break_down_by_key(local_stack, simulator) -> None:
    gateway = gateway_from_env(breaker_backend="off", cache_backend="off")
    tenant = unique()
    first, second = key(tenant, unique("key")), key(tenant, unique("key"))
    request = CompletionRequest.model_validate({"messages": MESSAGES, "model": "gpt-4o-mini", "fallback": []})
    for verified in (first, first, second):
        run_sync(gateway.complete(request, ctx_for(verified)))
    plain = RequestContext(tenant=tenant, request_id=unique("req"), deadline=Deadline(20))  # no key: not in "keys"
    run_sync(gateway.complete(request, plain))

    records = ledger_items(local_stack, tenant)
    assert sorted(r.get("key_id", {}).get("S", "-") for r in records) == sorted(
        [first.key_id, first.key_id, second.key_id, "-"]
    )
    day_from, day_to = report_range(None, None)
    summary = usage_summary(aws.dynamodb(), local_stack.physical["UsageTable"], tenant, day_from, day_to)
    by_key = {row["key_id"]: row for row in summary["keys"]}
    assert set(by_key) == {first.key_id, second.key_id}
    assert (by_key[first.key_id]["requests"], by_key[second.key_id]["requests"]) == (2, 1)
    assert summary["totals"]["requests"] == 4
    cost_by_key = by_key[first.key_id]["cost_usd"] + by_key[second.key_id]["cost_usd"]
    assert 0 < cost_by_key < summary["totals"]["cost_usd"]


def test_a_key_budget_refuses_when_spent_and_releases_the_tenant_share(local_stack) -> None:
    table = local_stack.physical["UsageTable"]
    inner = DynamoDBBudgetGuard(table)
    tenant = unique()
    verified = key(tenant, unique("key"), budget_usd="1.00")
    inner.set_policy(tenant, 10.0, "day")
    inner.set_policy(f"key:{verified.key_id}", 1.0, "day")
    guard = KeyBudgetGuard(inner)
    ctx = ctx_for(verified)

    reservation = run_sync(guard.reserve(ctx, 0.6))
    run_sync(guard.settle(ctx, reservation, 0.6))
    with pytest.raises(BudgetExceededError):  # the key has 0.40 left; the tenant would have 9.40
        run_sync(guard.reserve(ctx, 0.6))
    tenant_status = inner.status(tenant)
    assert tenant_status["committed_usd"] == pytest.approx(0.6)  # the refused call's tenant share was released
    assert tenant_status["outstanding_reservations"] == 0
    assert inner.status(f"key:{verified.key_id}")["spent_usd"] == pytest.approx(0.6)

    other = key(tenant, unique("key"))  # same tenant, no key budget: only the tenant's applies
    reservation = run_sync(guard.reserve(ctx_for(other), 0.6))
    run_sync(guard.settle(ctx_for(other), reservation, 0.5))
    assert inner.status(tenant)["spent_usd"] == pytest.approx(1.1)


def test_the_wired_gateway_enforces_a_key_budget_before_any_provider_call(local_stack, simulator) -> None:
    gateway = gateway_from_env(breaker_backend="off", cache_backend="off")
    tenant = unique()
    verified = key(tenant, unique("key"), budget_usd="0.000001")
    DynamoDBBudgetGuard(local_stack.physical["UsageTable"]).set_policy(f"key:{verified.key_id}", 0.000001, "day")
    request = CompletionRequest.model_validate({"messages": MESSAGES, "model": "gpt-4o-mini", "fallback": []})
    calls = len(simulator.calls())
    with pytest.raises(BudgetExceededError):
        run_sync(gateway.complete(request, ctx_for(verified)))
    assert len(simulator.calls()) == calls
    run_sync(gateway.complete(request, ctx_for(key(tenant, unique("key")))))  # the tenant itself has no budget
    assert len(simulator.calls()) == calls + 1
