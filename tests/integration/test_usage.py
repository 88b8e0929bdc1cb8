"""The usage ledger on the usage table (moto server), its SQS fallback, GET /v1/usage and the CLI."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import httpx
import pytest
from botocore.exceptions import ClientError

from llm_gateway import aws
from llm_gateway.accounting.usage import CONFLICT_RETRIES, UsageLedger, replay_usage_message
from llm_gateway.accounting.usage_reports import report_range, usage_summary
from llm_gateway.errors import InvalidRequestError
from llm_gateway.interfaces import RequestContext
from llm_gateway.models import Attempt, Usage
from llm_gateway.routing.deadline import Deadline
from llm_gateway.runtime import run_sync
from local import usage_cli
from tests.support.accounting import api_key_for, complete, gateway_from_env, ledger_items, unique

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_real_aws")]


@pytest.fixture
def table(local_stack):
    return local_stack.physical["UsageTable"]


def summary(table, tenant):
    first, last = report_range(None, None)
    return usage_summary(aws.dynamodb(), table, tenant, first, last)


def test_every_attempt_of_a_fallback_is_recorded_and_costs_add_up(local_stack, simulator, table):
    simulator.add_fault("rate_limit", provider="openai", retry_after=0)
    gateway = gateway_from_env(breaker_backend="off")
    tenant = unique()
    result = complete(
        gateway, tenant, request_id="req-fallback", model="gpt-4o-mini", fallback=["claude-3-5-haiku-latest"]
    )
    assert [(a.provider, a.outcome) for a in result.attempts] == [("openai", "error"), ("anthropic", "success")]

    records = ledger_items(local_stack, tenant)
    assert sorted((r["provider"]["S"], r["outcome"]["S"]) for r in records) == [
        ("anthropic", "success"),
        ("openai", "error"),
    ]
    assert {r["request_id"]["S"] for r in records} == {"req-fallback"}
    assert {r["tenant"]["S"] for r in records} == {tenant}
    failed = next(r for r in records if r["outcome"]["S"] == "error")
    assert failed["error_code"]["S"] == "rate_limited" and float(failed["cost_usd"]["N"]) == 0
    assert sum(float(r["cost_usd"]["N"]) for r in records) == pytest.approx(result.cost_usd, abs=1e-9)
    assert sum(int(r["input_tokens"]["N"]) for r in records) == result.usage.input_tokens

    totals = summary(table, tenant)["totals"]
    assert (totals["requests"], totals["attempts"], totals["errors"]) == (1, 2, 1)
    assert totals["cost_usd"] == pytest.approx(result.cost_usd, abs=1e-9)
    assert totals["output_tokens"] == result.usage.output_tokens
    models = {(m["provider"], m["model"]): m for m in summary(table, tenant)["models"]}
    assert models[("openai", "gpt-4o-mini")]["errors"] == 1
    assert models[("anthropic", "claude-3-5-haiku-latest")]["cost_usd"] == pytest.approx(result.cost_usd, abs=1e-9)


def test_cache_hits_are_counted_with_what_they_saved(local_stack, simulator, table):
    gateway = gateway_from_env(breaker_backend="off")
    tenant = unique()
    body = {"model": "gpt-4o-mini", "fallback": [], "temperature": 0}
    first = complete(gateway, tenant, **body)
    assert complete(gateway, tenant, **body).cached
    totals = summary(table, tenant)["totals"]
    assert (totals["requests"], totals["cache_hits"], totals["attempts"]) == (2, 1, 1)
    assert totals["cache_hit_rate"] == 0.5
    assert totals["saved_usd"] == pytest.approx(first.cost_usd, abs=1e-9)
    assert totals["cost_usd"] == pytest.approx(first.cost_usd, abs=1e-9)


def ledger_that_cannot_write(queue_url):
    return UsageLedger("no-such-table", queue_url=queue_url)  # every write fails: ResourceNotFound


def ctx(tenant):
    return RequestContext(tenant=tenant, request_id="req-queued", deadline=Deadline(10))


ATTEMPT = Attempt(
    provider="openai",
    model="gpt-4o-mini",
    outcome="success",
    duration_ms=12.5,
    usage=Usage(input_tokens=100, output_tokens=20, cached_input_tokens=40),
    cost_usd=0.0000255,
)


def test_a_failed_write_is_queued_then_replayed_exactly_once(local_stack, table):
    sqs = local_stack.client("sqs")
    queue_url = sqs.create_queue(QueueName=unique("usage-retry"))["QueueUrl"]  # not the worker's queue
    tenant = unique()
    ledger = ledger_that_cannot_write(queue_url)
    run_sync(ledger.record(ctx(tenant), ATTEMPT))
    assert ledger.counters.get("UsageWriteFailed") == 1 and ledger.counters.get("UsageQueued") == 1
    [message] = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)["Messages"]
    body = json.loads(message["Body"])
    assert body["kind"] == "usage" and body["version"] == 1 and body["record"]["tenant"] == tenant

    assert replay_usage_message(message["Body"], table=table) is True
    assert replay_usage_message(message["Body"], table=table) is False  # a redelivery is not counted twice
    [record] = ledger_items(local_stack, tenant)
    assert record["cached_input_tokens"]["N"] == "40" and record["request_id"]["S"] == "req-queued"
    totals = summary(table, tenant)["totals"]
    assert (totals["requests"], totals["attempts"], totals["input_tokens"]) == (1, 1, 100)
    assert totals["cost_usd"] == pytest.approx(0.0000255)


def test_the_retry_worker_replays_a_queued_record(local_stack, table):
    """End to end: the write fails, the record goes to the real retry queue, the worker lands it."""
    tenant = unique()
    ledger = ledger_that_cannot_write(local_stack.physical["RetryQueue"])
    run_sync(ledger.record(ctx(tenant), ATTEMPT))
    assert ledger.counters.get("UsageQueued") == 1
    deadline = time.monotonic() + 20
    while not ledger_items(local_stack, tenant) and time.monotonic() < deadline:
        time.sleep(0.2)
    [record] = ledger_items(local_stack, tenant)
    assert record["request_id"]["S"] == "req-queued"
    assert summary(table, tenant)["totals"]["attempts"] == 1


def test_when_even_the_queue_is_down_the_record_is_logged_not_raised(local_stack, caplog):
    ledger = ledger_that_cannot_write("http://127.0.0.1:9/000000000000/nowhere")
    run_sync(ledger.record(ctx(unique()), ATTEMPT))
    assert ledger.counters.get("UsageLost") == 1
    [logged] = [r for r in caplog.records if r.getMessage() == "usage record could not be written or queued"]
    assert logged.usage_message["record"]["cost_usd"] == pytest.approx(0.0000255)


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        json.dumps({"kind": "job"}),
        json.dumps({"kind": "usage", "version": 9, "record": {}}),
        json.dumps({"kind": "usage", "version": 1, "record": {"tenant": "x"}}),
    ],
)
def test_malformed_usage_messages_are_rejected_for_the_dead_letter_queue(table, body):
    with pytest.raises(InvalidRequestError):
        replay_usage_message(body, table=table)


class ConflictingTransactions:
    """The real (moto) client, except that the first ``conflicts`` transactions are cancelled the way
    DynamoDB cancels concurrent transactions on one item (botocore does not retry these)."""

    def __init__(self, client, conflicts):
        self._client = client
        self.conflicts = conflicts
        self.transactions = 0

    def __getattr__(self, name):
        return getattr(self._client, name)

    def transact_write_items(self, **kwargs):
        self.transactions += 1
        if self.conflicts > 0:
            self.conflicts -= 1
            reasons = [
                {"Code": "None"},
                {"Code": "TransactionConflict", "Message": "Transaction is ongoing"},
                {"Code": "None"},
            ]
            raise ClientError(
                {
                    "Error": {
                        "Code": "TransactionCanceledException",
                        "Message": "Transaction cancelled, please "
                        "refer cancellation reasons for specific reasons [None, TransactionConflict, None]",
                    },
                    "CancellationReasons": reasons,
                },
                "TransactWriteItems",
            )
        return self._client.transact_write_items(**kwargs)


def conflicted_ledger(local_stack, table, conflicts, queue_url=None):
    client = ConflictingTransactions(local_stack.client("dynamodb"), conflicts)
    ledger = UsageLedger(table, queue_url=queue_url, client=lambda: client)
    return ledger, client


def test_a_transaction_conflict_is_retried_in_place_and_counted_once(local_stack, table):
    tenant = unique()
    ledger, client = conflicted_ledger(local_stack, table, conflicts=2)
    run_sync(ledger.record(ctx(tenant), ATTEMPT))
    assert client.transactions == 3
    assert ledger.counters.get("UsageWriteConflict") == 2 and ledger.counters.get("UsageRecorded") == 1
    assert ledger.counters.get("UsageWriteFailed") == 0 and ledger.counters.get("UsageQueued") == 0
    assert len(ledger_items(local_stack, tenant)) == 1
    totals = summary(table, tenant)["totals"]
    assert (totals["attempts"], totals["input_tokens"]) == (1, 100)


def test_persistent_conflicts_are_retried_a_bounded_number_of_times_then_queued(local_stack, table):
    sqs = local_stack.client("sqs")
    queue_url = sqs.create_queue(QueueName=unique("usage-retry"))["QueueUrl"]
    tenant = unique()
    ledger, client = conflicted_ledger(local_stack, table, conflicts=1_000, queue_url=queue_url)
    run_sync(ledger.record(ctx(tenant), ATTEMPT))
    assert client.transactions == 1 + CONFLICT_RETRIES
    assert ledger.counters.get("UsageWriteFailed") == 1 and ledger.counters.get("UsageQueued") == 1
    assert ledger_items(local_stack, tenant) == []  # a cancelled transaction wrote nothing
    [message] = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)["Messages"]
    assert replay_usage_message(message["Body"], table=table) is True
    assert summary(table, tenant)["totals"]["attempts"] == 1


def test_no_conflict_retry_past_the_invocations_deadline(local_stack, table):
    sqs = local_stack.client("sqs")
    queue_url = sqs.create_queue(QueueName=unique("usage-retry"))["QueueUrl"]
    ledger, client = conflicted_ledger(local_stack, table, conflicts=1, queue_url=queue_url)
    almost_out = RequestContext(tenant=unique(), request_id="req-late", deadline=Deadline(0.5))
    run_sync(ledger.record(almost_out, ATTEMPT))
    assert client.transactions == 1 and ledger.counters.get("UsageQueued") == 1


def test_other_transaction_failures_are_not_retried_in_place(local_stack, table):
    ledger = UsageLedger("no-such-table", queue_url=None)
    run_sync(ledger.record(ctx(unique()), ATTEMPT))
    assert ledger.counters.get("UsageWriteConflict") == 0 and ledger.counters.get("UsageWriteFailed") == 1


# --------------------------------------------------------------------------- reporting


def test_usage_endpoint_reports_only_the_callers_tenant(local_stack, simulator):
    tenant, other = unique(), unique()
    body = {"model": "gpt-4o-mini", "temperature": 0, "messages": [{"role": "user", "content": "Usage?"}]}
    with (
        api_key_for(local_stack, tenant) as key,
        api_key_for(local_stack, other) as other_key,
        httpx.Client(base_url=local_stack.api_url, timeout=30) as http,
    ):
        for _ in range(2):
            assert http.post("/v1/completions", json=body, headers={"x-api-key": key}).status_code == 200
        mine = http.get("/v1/usage", headers={"x-api-key": key})
        theirs = http.get("/v1/usage", headers={"x-api-key": other_key})
        today = datetime.now(UTC).date().isoformat()
        bounded = http.get("/v1/usage", params={"from": today, "to": today}, headers={"x-api-key": key})
        bad_date = http.get("/v1/usage", params={"from": "yesterday"}, headers={"x-api-key": key})
        reversed_range = http.get(
            "/v1/usage", params={"from": "2026-02-01", "to": "2026-01-01"}, headers={"x-api-key": key}
        )
        forged = http.get("/v1/usage", params={"tenant": other}, headers={"x-api-key": other_key})
    assert mine.status_code == 200
    report = mine.json()
    assert report["tenant"] == tenant
    assert (report["totals"]["requests"], report["totals"]["cache_hits"]) == (2, 1)
    assert [d["date"] for d in report["days"]] == [today]
    assert [m["model"] for m in report["models"]] == ["gpt-4o-mini"]
    assert theirs.json()["tenant"] == other and theirs.json()["totals"]["requests"] == 0
    assert bounded.json()["totals"] == report["totals"]
    assert bad_date.status_code == 400 and bad_date.json()["error"]["details"]["param"] == "from"
    assert reversed_range.status_code == 400
    assert forged.json()["tenant"] == other  # the tenant comes from the API key, never the query


def test_usage_cli_prints_a_readable_table(local_stack, simulator, table, capsys):
    gateway = gateway_from_env(breaker_backend="off")
    tenant = unique()
    body = {"model": "gpt-4o-mini", "fallback": [], "temperature": 0}
    complete(gateway, tenant, **body)
    complete(gateway, tenant, **body)
    assert usage_cli.main(["--tenant", tenant, "--table", table]) == 0
    out = capsys.readouterr().out
    assert f"Usage for {tenant}" in out
    assert "requests 2   cache hits 1 (50.0%)" in out
    assert "openai/gpt-4o-mini" in out and "By model and day" in out
    assert usage_cli.main(["--tenant", tenant, "--table", table, "--from", "soon"]) == 2
