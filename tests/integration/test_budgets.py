"""Per-tenant budgets on the usage table (moto server over real sockets), including the 50-way race
(the local stack makes moto's DynamoDB atomic per table, as DynamoDB is: see local/stack.py)."""

from __future__ import annotations

import contextlib
import json
import math
import threading

import boto3
import httpx
import pytest
from botocore.config import Config

from llm_gateway import aws
from llm_gateway.accounting.budgets import DynamoDBBudgetGuard
from llm_gateway.catalog import default_catalog
from llm_gateway.documents.tokens import estimate_message_tokens, worst_case_input_tokens
from llm_gateway.errors import BudgetExceededError, BudgetUnavailableError, GatewayError
from llm_gateway.interfaces import RequestContext
from llm_gateway.models import JsonObjectFormat, Message, ProviderRequest, Usage
from llm_gateway.providers.base import with_json_instruction
from llm_gateway.routing.deadline import Deadline
from llm_gateway.runtime import close_thread_resources, run_sync
from local import budget_cli
from tests.support.accounting import (
    api_key_for,
    complete,
    dynamodb_calls,
    gateway_from_env,
    unique,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_real_aws")]

PROMPT = "x" * 40  # 14 tokens by both the gateway's estimate and the simulator's count (4 + 40/4)
MAX_TOKENS = 50
REPLY = "y" * (4 * MAX_TOKENS)  # exactly MAX_TOKENS output tokens


@pytest.fixture
def table(local_stack):
    return local_stack.physical["UsageTable"]


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def ctx(tenant, deadline_s=30.0):
    return RequestContext(tenant=tenant, request_id=unique("req"), deadline=Deadline(deadline_s))


def reservation_for(spec, messages, max_tokens):
    """What the gateway reserves for a call: worst-case input (as sent, with a margin) + max_tokens out."""
    return spec.worst_case_cost(worst_case_input_tokens(messages, provider=spec.provider), max_tokens)


def race(tenant, body, *, n=50):
    """``n`` "instances" (each its own gateway, budget guard and policy cache), released at once."""
    gateways = [gateway_from_env(breaker_backend="off", cache_backend="off") for _ in range(n)]
    start = threading.Barrier(n)
    outcomes: list[str] = []
    costs: list[float] = []
    lock = threading.Lock()

    def one(gateway):
        try:
            start.wait()
            result = complete(gateway, tenant, **body)
            with lock:
                outcomes.append("ok")
                costs.append(result.cost_usd)
        except GatewayError as err:
            with lock:
                outcomes.append(err.code)
        finally:
            close_thread_resources()

    threads = [threading.Thread(target=one, args=(g,)) for g in gateways]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return outcomes, costs


def test_fifty_concurrent_requests_cannot_overspend_a_budget_that_fits_ten(local_stack, simulator, table):
    spec = default_catalog().get("gpt-4o-mini")
    messages = [{"role": "user", "content": PROMPT}]
    per_reservation = reservation_for(spec, [Message.model_validate(m) for m in messages], MAX_TOKENS)
    budget = 10 * per_reservation
    tenant = unique()
    DynamoDBBudgetGuard(table).set_policy(tenant, budget, "day")
    simulator.script("openai", [REPLY] * 50)
    body = {"model": spec.id, "fallback": [], "max_tokens": MAX_TOKENS, "messages": messages}
    outcomes, costs = race(tenant, body)

    status = DynamoDBBudgetGuard(table).status(tenant)
    spent, succeeded = status["spent_usd"], outcomes.count("ok")
    overspend = max(0.0, spent - budget)
    print(
        f"\nbudget race: budget={budget:.9f} USD ({budget / per_reservation:.0f} reservations), 50 concurrent, "
        f"succeeded={succeeded}, rejected={outcomes.count('budget_exceeded')}, spent={spent:.9f} USD, "
        f"overspend={overspend:.9f} USD, provider calls={len(simulator.calls('openai'))}"
    )
    assert len(outcomes) == 50 and set(outcomes) <= {"ok", "budget_exceeded"}
    assert costs and all(c < per_reservation for c in costs)  # the worst case was reserved
    assert succeeded >= 10  # ten always fit; more when early ones settle below their reservation
    assert spent <= budget + per_reservation  # the guarantee: at most one reservation over
    assert spent == pytest.approx(sum(costs))
    assert len(simulator.calls("openai")) == succeeded  # a refused request never reached the provider
    assert status["outstanding_reservations"] == 0 and status["committed_usd"] == pytest.approx(spent)


def test_the_race_holds_when_the_provider_bills_more_input_than_the_gateway_estimates(local_stack, simulator, table):
    """Claude has no JSON mode, so the adapter adds a JSON instruction (billed input) to every request,
    and here the provider's tokenizer counts 20% more than the gateway's estimate of what was sent."""
    spec = default_catalog().get("claude-3-5-haiku-latest")
    max_tokens = 5
    messages = [{"role": "user", "content": PROMPT}]
    wire = ProviderRequest(
        model=spec.id,
        messages=[Message.model_validate(m) for m in messages],
        max_tokens=max_tokens,
        response_format=JsonObjectFormat(),
    )
    sent = with_json_instruction(wire)  # what the simulator receives: the instruction and the prompt
    estimate = estimate_message_tokens(sent)
    billed_input = math.ceil(estimate * 1.2)
    assert billed_input > estimate > estimate_message_tokens(wire.messages)
    per_reservation = reservation_for(spec, sent, max_tokens)
    actual = spec.cost(Usage(input_tokens=billed_input, output_tokens=max_tokens))
    assert actual > spec.worst_case_cost(estimate, max_tokens)  # real usage above the gateway's estimate
    budget = 10 * per_reservation
    tenant = unique()
    DynamoDBBudgetGuard(table).set_policy(tenant, budget, "day")
    answer = '{"a":"' + "y" * (4 * max_tokens - 8) + '"}'  # exactly max_tokens output tokens
    simulator.script("anthropic", [{"content": answer, "input_tokens": billed_input}] * 50)
    body = {
        "model": spec.id,
        "fallback": [],
        "max_tokens": max_tokens,
        "messages": messages,
        "response_format": {"type": "json_object"},
    }
    outcomes, costs = race(tenant, body)

    status = DynamoDBBudgetGuard(table).status(tenant)
    spent, succeeded = status["spent_usd"], outcomes.count("ok")
    print(
        f"\nbudget race, usage above the estimate: reservation={per_reservation:.9f} actual={actual:.9f} "
        f"budget={budget:.9f} succeeded={succeeded} spent={spent:.9f} "
        f"overspend={(spent - budget) / per_reservation:+.2f} reservations"
    )
    assert set(outcomes) <= {"ok", "budget_exceeded"} and succeeded >= 10
    assert costs and all(c == pytest.approx(actual) for c in costs)
    assert spent <= budget + per_reservation
    assert spent == pytest.approx(sum(costs)) and status["committed_usd"] == pytest.approx(spent)


def test_an_actual_cost_above_the_reservation_is_charged_and_seen_by_later_reservations(table):
    guard, tenant = DynamoDBBudgetGuard(table), unique()
    guard.set_policy(tenant, 10.0, "day")
    reservation = run_sync(guard.reserve(ctx(tenant), 4.0))
    run_sync(guard.settle(ctx(tenant), reservation, 11.0))  # the estimate was badly short
    status = guard.status(tenant)
    assert (status["committed_usd"], status["spent_usd"]) == (pytest.approx(11.0), pytest.approx(11.0))
    with pytest.raises(BudgetExceededError):  # the excess is not forgiven: nothing more fits this window
        run_sync(guard.reserve(ctx(tenant), 0.01))


class LostResponses:
    """A DynamoDB client whose first UpdateItem response is lost: the call is sent again, as botocore's
    retry does after a timeout, and the second answer is the one the caller sees."""

    def __init__(self, client):
        self._client = client

    def __getattr__(self, name):
        return getattr(self._client, name)

    def update_item(self, **kwargs):
        with contextlib.suppress(Exception):  # whatever the first attempt answered is lost
            self._client.update_item(**kwargs)
        return self._client.update_item(**kwargs)


def test_a_retried_reservation_is_charged_once(local_stack, table):
    client = LostResponses(local_stack.client("dynamodb"))
    guard, tenant = DynamoDBBudgetGuard(table, client=lambda: client), unique()
    guard.set_policy(tenant, 10.0, "day")
    reservation = run_sync(guard.reserve(ctx(tenant), 1.0))  # landed twice on the wire
    status = guard.status(tenant)
    assert (status["committed_usd"], status["outstanding_reservations"]) == (pytest.approx(1.0), 1)
    run_sync(guard.settle(ctx(tenant), reservation, 0.5))
    status = guard.status(tenant)
    assert (status["committed_usd"], status["spent_usd"]) == (pytest.approx(0.5), pytest.approx(0.5))


def test_a_retried_reservation_that_no_longer_fits_is_still_recognised_as_ours(local_stack, table):
    client = LostResponses(local_stack.client("dynamodb"))
    guard, tenant = DynamoDBBudgetGuard(table, client=lambda: client), unique()
    guard.set_policy(tenant, 1.5, "day")
    run_sync(guard.reserve(ctx(tenant), 1.0))  # the replay fails the room check too: still success
    assert guard.status(tenant)["committed_usd"] == pytest.approx(1.0)


def test_settling_is_exactly_once(local_stack, table):
    guard, tenant = DynamoDBBudgetGuard(table), unique()
    guard.set_policy(tenant, 10.0, "day")
    reservation = run_sync(guard.reserve(ctx(tenant), 1.0))
    run_sync(guard.settle(ctx(tenant), reservation, 0.5))
    run_sync(guard.settle(ctx(tenant), reservation, 0.5))  # a duplicate (e.g. a retried settle)
    status = guard.status(tenant)
    assert (status["committed_usd"], status["spent_usd"]) == (pytest.approx(0.5), pytest.approx(0.5))
    assert guard.counters.get("BudgetSettleDuplicate") == 1
    retried = LostResponses(local_stack.client("dynamodb"))
    replaying = DynamoDBBudgetGuard(table, client=lambda: retried)
    second = run_sync(replaying.reserve(ctx(tenant), 1.0))
    run_sync(replaying.settle(ctx(tenant), second, 0.25))  # sent twice on the wire
    status = guard.status(tenant)
    assert (status["committed_usd"], status["spent_usd"]) == (pytest.approx(0.75), pytest.approx(0.75))
    assert status["outstanding_reservations"] == 0


def test_over_budget_is_a_429_with_a_clear_code_and_no_provider_call(local_stack, simulator, table):
    tenant = unique()
    DynamoDBBudgetGuard(table).set_policy(tenant, 0.000001, "month")
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Too expensive."}]}
    with api_key_for(local_stack, tenant) as key, httpx.Client(base_url=local_stack.api_url, timeout=30) as http:
        native = http.post("/v1/completions", json=body, headers={"x-api-key": key})
        openai_style = http.post("/v1/chat/completions", json=body, headers={"x-api-key": key})
    assert native.status_code == 429
    error = native.json()["error"]
    assert error["code"] == "budget_exceeded" and "monthly budget" in error["message"]
    assert error["details"]["limit_usd"] == pytest.approx(0.000001) and error["details"]["window"] == "month"
    assert openai_style.status_code == 429
    assert openai_style.json()["error"]["code"] == "budget_exceeded"
    assert openai_style.json()["error"]["type"] == "rate_limit_error"
    assert simulator.calls() == []


def test_settling_charges_the_actual_cost(table):
    guard, tenant = DynamoDBBudgetGuard(table), unique()
    guard.set_policy(tenant, 10.0, "day")
    reservation = run_sync(guard.reserve(ctx(tenant), 1.0))
    assert guard.status(tenant)["committed_usd"] == pytest.approx(1.0)
    run_sync(guard.settle(ctx(tenant), reservation, 0.25))
    status = guard.status(tenant)
    assert (status["committed_usd"], status["spent_usd"], status["outstanding_reservations"]) == (0.25, 0.25, 0)


def test_reservations_never_settled_expire(table):
    clock, tenant = Clock(), unique()
    guard = DynamoDBBudgetGuard(table, clock=clock)
    guard.set_policy(tenant, 1.5, "day")
    abandoned = run_sync(guard.reserve(ctx(tenant, deadline_s=5), 1.0))  # the instance then dies
    with pytest.raises(BudgetExceededError):
        run_sync(guard.reserve(ctx(tenant), 1.0))  # still outstanding: no room
    clock.now += 5 + 61  # past the invocation's deadline plus the grace period
    second = run_sync(guard.reserve(ctx(tenant), 1.0))
    assert guard.counters.get("BudgetReservationExpired") == 1
    assert guard.status(tenant)["committed_usd"] == pytest.approx(1.0)
    run_sync(guard.settle(ctx(tenant), second, 0.5))
    run_sync(guard.settle(ctx(tenant), abandoned, 0.25))  # late: it was reclaimed, so its cost is added afresh
    run_sync(guard.settle(ctx(tenant), abandoned, 0.25))  # ...once
    status = guard.status(tenant)
    assert (status["committed_usd"], status["spent_usd"]) == (pytest.approx(0.75), pytest.approx(0.75))
    assert guard.counters.get("BudgetSettleDuplicate") == 1


def test_tenants_without_a_budget_cost_one_cached_read(table):
    guard, tenant = DynamoDBBudgetGuard(table), unique()
    with dynamodb_calls(aws.DURABLE) as calls:
        for _ in range(3):
            reservation = run_sync(guard.reserve(ctx(tenant), 5.0))
            run_sync(guard.settle(ctx(tenant), reservation, 5.0))
    assert dict(calls) == {"GetItem": 1}
    assert DynamoDBBudgetGuard(table, default_limit_usd=1.0).status(tenant)["budget"] == {
        "limit_usd": 1.0,
        "window": "day",
    }


def test_a_default_budget_applies_to_every_tenant(table):
    guard = DynamoDBBudgetGuard(table, default_limit_usd=2.0)
    tenant = unique()
    run_sync(guard.reserve(ctx(tenant), 1.5))
    with pytest.raises(BudgetExceededError) as info:
        run_sync(guard.reserve(ctx(tenant), 1.0))
    assert info.value.http_status == 429 and info.value.details["committed_usd"] == pytest.approx(1.5)
    assert "daily budget of 2 USD" in info.value.message


def test_budget_store_down_fails_closed_unless_configured_open(local_stack):
    dead = boto3.session.Session().client(
        "dynamodb",
        endpoint_url="http://127.0.0.1:9",
        config=Config(connect_timeout=0.2, read_timeout=0.2, retries={"total_max_attempts": 1}),
    )
    closed = DynamoDBBudgetGuard("t", default_limit_usd=1.0, client=lambda: dead)
    with pytest.raises(BudgetUnavailableError) as info:
        run_sync(closed.reserve(ctx(unique()), 0.1))
    assert info.value.http_status == 503 and info.value.retryable
    opened = DynamoDBBudgetGuard("t", default_limit_usd=1.0, fail_open=True, client=lambda: dead)
    assert run_sync(opened.reserve(ctx(unique()), 0.1)).reservation_id is None
    assert opened.counters.get("BudgetStoreError") == 1


def test_budget_cli_sets_and_shows(local_stack, table, capsys):
    tenant = unique()
    assert budget_cli.main(["--tenant", tenant, "--limit", "2.5", "--window", "month", "--table", table]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["budget"] == {"limit_usd": 2.5, "window": "month"} and shown["spent_usd"] == 0
    assert budget_cli.main(["--tenant", tenant, "--table", table]) == 0
    assert json.loads(capsys.readouterr().out)["budget"]["limit_usd"] == 2.5


def test_budget_is_checked_before_each_fallback_candidate(local_stack, simulator, table):
    """A fallback to a pricier model needs its own reservation; without room it is refused, not called."""
    simulator.add_fault("server_error", provider="gemini")
    tenant = unique()
    catalog = default_catalog()
    cheap, pricey = catalog.get("gemini-2.0-flash"), catalog.get("claude-sonnet-4-5")
    room = cheap.worst_case_cost(20, 100) * 1.5  # fits the cheap model's worst case, not the pricey one's
    assert pricey.worst_case_cost(20, 100) > room
    DynamoDBBudgetGuard(table).set_policy(tenant, room, "day")
    gateway = gateway_from_env(breaker_backend="off", cache_backend="off")
    with pytest.raises(BudgetExceededError):
        complete(
            gateway,
            tenant,
            model=cheap.id,
            fallback=[pricey.id],
            max_tokens=100,
            messages=[{"role": "user", "content": "z" * 64}],
        )
    assert {c["provider"] for c in simulator.calls()} == {"gemini"}
    assert DynamoDBBudgetGuard(table).status(tenant)["committed_usd"] == 0  # the failed call cost nothing
