"""Budget alerts over the local stack: the budget guard on moto's DynamoDB, notifications published to the
template's AlertsTopic in moto's SNS and read back from an SQS queue subscribed to it."""

from __future__ import annotations

import functools
import threading
import time
from decimal import Decimal

import httpx
import pytest

from llm_gateway import after_response, aws
from llm_gateway.accounting.alerts import BudgetAlert, BudgetAlerts, alerts_sent
from llm_gateway.accounting.budgets import DynamoDBBudgetGuard, period_of
from llm_gateway.accounting.usage_reports import report_range, usage_summary
from llm_gateway.interfaces import RequestContext
from llm_gateway.keys.budget import KeyBudgetGuard
from llm_gateway.keys.policy import KeyBudget, KeyPolicy, VerifiedKey
from llm_gateway.routing.deadline import Deadline
from llm_gateway.runtime import close_thread_resources, run_sync
from local import usage_cli
from tests.support.accounting import api_key_for, unique
from tests.support.alerts import Published, subscribed_queue

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_real_aws")]


@pytest.fixture
def table(local_stack):
    return local_stack.physical["UsageTable"]


@pytest.fixture
def topic(local_stack):
    return local_stack.physical["AlertsTopic"]


@pytest.fixture
def published(local_stack):
    with subscribed_queue(local_stack) as reader:
        yield reader


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def guard_with_alerts(table: str, topic: str, clock=time.time, **alert_options) -> DynamoDBBudgetGuard:
    """One sandbox's budget guard with its own alerts (its own caches), as the functions build it."""
    alerts = BudgetAlerts(table, topic, clock=clock, **alert_options)
    return DynamoDBBudgetGuard(table, clock=clock, alerts=alerts)


def ctx(tenant: str, **tags: str) -> RequestContext:
    return RequestContext(tenant=tenant, request_id=unique("req"), deadline=Deadline(30), tags=dict(tags))


def spend(guard, context: RequestContext, usd: float) -> None:
    reservation = run_sync(guard.reserve(context, usd))
    run_sync(guard.settle(context, reservation, usd))


def test_crossing_80_then_100_percent_sends_one_alert_each(table, topic, published: Published):
    guard, tenant = guard_with_alerts(table, topic), unique()
    guard.set_policy(tenant, 1.0, "day")

    spend(guard, ctx(tenant), 0.5)
    assert published.for_tenant(tenant) == []
    spend(guard, ctx(tenant), 0.35)  # 85 %
    first = published.for_tenant(tenant)
    assert [m["body"]["threshold"] for m in first] == [0.8]
    spend(guard, ctx(tenant), 0.1)  # 95 %: nothing new
    assert len(published.for_tenant(tenant)) == 1
    spend(guard, ctx(tenant), 0.05)  # 100 %
    alerts = published.for_tenant(tenant)
    assert [m["body"]["threshold"] for m in alerts] == [0.8, 1.0]

    eighty, hundred = (m["body"] for m in alerts)
    period = period_of("day", time.time())
    assert eighty | {"sent_at": None} == {
        "type": "budget_alert",
        "alert_id": f"{tenant}/{period}/80",
        "tenant": tenant,
        "key_id": None,
        "window": "day",
        "period": period,
        "threshold": 0.8,
        "threshold_percent": 80.0,
        "spent_usd": pytest.approx(0.85),
        "budget_usd": 1.0,
        "sent_at": None,
    }
    assert hundred["spent_usd"] == pytest.approx(1.0) and hundred["threshold_percent"] == 100.0
    assert alerts[0]["subject"] == f"LLM gateway budget alert: tenant {tenant} at 80% of its daily budget"

    first_day, last_day = report_range(None, None)
    listed = alerts_sent(aws.dynamodb(), table, tenant, first_day, last_day)
    assert [(row["threshold"], row["key_id"], row["period"]) for row in listed] == [
        (0.8, None, period),
        (1.0, None, period),
    ]
    printed = usage_cli.render(usage_summary(aws.dynamodb(), table, tenant, first_day, last_day))  # make usage
    assert f"tenant  day {period}  80% of 1.000000 USD (spent 0.850000)" in printed
    assert f"tenant  day {period}  100% of 1.000000 USD (spent 1.000000)" in printed


def test_concurrent_settlements_crossing_a_threshold_at_once_send_exactly_one(table, topic, published):
    tenant, n = unique(), 16
    setup = guard_with_alerts(table, topic)
    setup.set_policy(tenant, 1.0, "day")
    spend(setup, ctx(tenant), 0.79)
    guards = [guard_with_alerts(table, topic) for _ in range(n)]  # n sandboxes, each its own caches
    reservations = [run_sync(g.reserve(ctx(tenant), 0.01)) for g in guards]
    start, errors = threading.Barrier(n), []

    def settle(guard, reservation):
        try:
            start.wait()
            run_sync(guard.settle(ctx(tenant), reservation, 0.01))  # every one of them ends at >= 80 %
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            close_thread_resources()

    threads = [threading.Thread(target=settle, args=pair) for pair in zip(guards, reservations, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    assert setup.status(tenant)["spent_usd"] == pytest.approx(0.79 + n * 0.01)
    alerts = published.for_tenant(tenant, settle_s=0.5)
    assert [m["body"]["threshold"] for m in alerts] == [0.8]
    assert sum(g.alerts.counters.get("BudgetAlertsSent") for g in guards) == 1


def test_a_new_window_alerts_again(table, topic, published):
    clock = Clock(1_800_000_000.0)  # 2027-01-15
    guard, tenant = guard_with_alerts(table, topic, clock=clock), unique()
    guard.set_policy(tenant, 1.0, "day")
    spend(guard, ctx(tenant), 0.9)
    spend(guard, ctx(tenant), 0.05)
    clock.now += 86_400
    spend(guard, ctx(tenant), 0.9)
    alerts = [m["body"] for m in published.for_tenant(tenant)]
    assert [(a["period"], a["threshold"]) for a in alerts] == [("2027-01-15", 0.8), ("2027-01-16", 0.8)]


def test_a_key_budget_alerts_under_its_tenant(table, topic, published):
    inner = guard_with_alerts(table, topic)
    tenant, key_id = unique(), unique("key")
    inner.set_policy(tenant, 10.0, "day")
    inner.set_policy(f"key:{key_id}", 1.0, "day")
    policy = KeyPolicy(tenant=tenant, name="", created_at=0.0, budget=KeyBudget(Decimal(1), "day"))
    verified = VerifiedKey(key_id, tenant, policy)
    guard = KeyBudgetGuard(inner)

    spend(guard, ctx(tenant, **verified.context_tags()), 0.85)  # the key at 85 %, the tenant at 8.5 %
    alerts = published.for_tenant(tenant)
    assert [(m["body"]["key_id"], m["body"]["threshold"]) for m in alerts] == [(key_id, 0.8)]
    assert alerts[0]["subject"].startswith(f"LLM gateway budget alert: key {key_id} at 80%")

    first_day, last_day = report_range(None, None)
    listed = alerts_sent(aws.dynamodb(), table, tenant, first_day, last_day)
    assert [(row["key_id"], row["threshold"]) for row in listed] == [(key_id, 0.8)]


def test_a_failed_publish_is_retried_by_the_next_settlement(local_stack, table, topic, published):
    tenant = unique()
    missing_topic = topic + "-missing"
    broken = guard_with_alerts(table, missing_topic)
    broken.set_policy(tenant, 1.0, "day")
    spend(broken, ctx(tenant), 0.85)  # claims, cannot publish (no such topic), releases its claim
    assert published.for_tenant(tenant) == []
    spend(guard_with_alerts(table, topic), ctx(tenant), 0.01)
    assert [m["body"]["threshold"] for m in published.for_tenant(tenant)] == [0.8]


def test_a_stale_claim_is_taken_over_and_a_fresh_one_is_left_alone(local_stack, table, topic, published):
    """The crash between the marker and the publish: a claim nobody marked sent is taken over after the lease."""
    tenant, now = unique(), time.time()
    period = period_of("day", now)
    alert = BudgetAlert(tenant, tenant, "day", period, 0.8, 0.85, 1.0)
    ddb = local_stack.client("dynamodb")

    def claim(at: float) -> None:
        item = {**alert.marker_key(), "state": {"S": "claimed"}, "claim_id": {"S": "dead"}}
        ddb.put_item(TableName=table, Item={**item, "claimed_at": {"N": str(at)}})

    guard = guard_with_alerts(table, topic, lease_s=60)
    guard.set_policy(tenant, 1.0, "day")
    claim(now - 5)  # a sandbox is publishing it right now
    spend(guard, ctx(tenant), 0.85)
    assert published.for_tenant(tenant) == []
    claim(now - 120)  # that sandbox died before publishing
    spend(guard, ctx(tenant), 0.01)
    assert [m["body"]["threshold"] for m in published.for_tenant(tenant)] == [0.8]
    marker = ddb.get_item(TableName=table, Key=alert.marker_key())["Item"]
    assert marker["state"]["S"] == "sent" and marker["message_id"]["S"] not in ("", "-")


def test_the_gateway_alerts_and_the_usage_report_shows_it(local_stack, simulator, table, published):
    """Through the functions: a request over the bridge settles the budget; GET /v1/usage lists the alert."""
    tenant, budget = unique(), 0.0002  # about ten of these calls; a reservation is under an eighth of it
    DynamoDBBudgetGuard(table).set_policy(tenant, budget, "day")
    with api_key_for(local_stack, tenant) as key, httpx.Client(base_url=local_stack.api_url, timeout=30) as http:
        headers = {"x-api-key": key}
        body = {"model": "gpt-4o-mini", "max_tokens": 16, "messages": [{"role": "user", "content": "hi " * 40}]}
        spent = 0.0
        for _ in range(30):
            if spent >= budget * 0.8:
                break
            answer = http.post("/v1/completions", json=body, headers=headers)
            if answer.status_code == 429:
                break
            assert answer.status_code == 200, answer.text
            spent += answer.json()["cost_usd"]
        report = http.get("/v1/usage", headers=headers).json()
    assert spent >= budget * 0.8
    alerts = published.for_tenant(tenant, settle_s=0.2)
    assert [m["body"]["threshold"] for m in alerts][:1] == [0.8]
    assert [row["threshold"] for row in report["alerts"]] == [m["body"]["threshold"] for m in alerts]
    assert report["alerts"][0]["spent_usd"] == pytest.approx(alerts[0]["body"]["spent_usd"])


@pytest.fixture
def thread_mode():
    after_response._reset_for_tests()
    assert after_response.install("thread") == "thread"
    yield
    assert after_response.wait_idle(30.0)
    after_response._reset_for_tests()


def test_the_alert_goes_out_after_the_response_with_the_settlement(table, topic, published, thread_mode):
    """As on Lambda: the settlement is deferred work, and the alert it finds is deferred in turn (the same
    invocation's batch), so neither holds the answer and both are done before the next invocation."""
    guard, tenant = guard_with_alerts(table, topic), unique()
    guard.set_policy(tenant, 1.0, "day")
    with after_response.scope("invocation") as deferral:
        context = RequestContext(tenant=tenant, request_id=unique("req"), deadline=Deadline(30), defer=deferral)
        reservation = run_sync(guard.reserve(context, 0.9))
        run_sync(deferral.soon(functools.partial(guard.settle, context, reservation, 0.9)))
        assert guard.status(tenant)["spent_usd"] == 0  # the "answer" is out; nothing settled yet
    assert after_response.wait_idle(30.0)
    assert guard.status(tenant)["spent_usd"] == pytest.approx(0.9)
    assert [m["body"]["threshold"] for m in published.for_tenant(tenant)] == [0.8]
