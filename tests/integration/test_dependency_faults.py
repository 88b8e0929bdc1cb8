"""Fault injection into DynamoDB and S3 under the local stack (tests/support/faults.py): a dependency
that times out or throttles answers 503 ``service_unavailable`` with ``Retry-After`` (never a 500, never
a bucket name), and bookkeeping written under a stalled DynamoDB is not lost: every attempt's ledger
record lands, directly or through the retry queue once DynamoDB is back.

Prints the fault table (fault, answer, records lost)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from llm_gateway import aws
from llm_gateway import wiring as service
from local.stack import LocalStack
from tests.support.accounting import api_key_for, ledger_items, unique
from tests.support.faults import aws_fault
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_real_aws")]

REQUESTS = 6
# Replays of queued usage records back off 2 s: during the few seconds of an injected stall they are
# delivered at most a couple of times, far from the receive limit that would dead-letter them.
ENV = {"JOB_BACKOFF_BASE": "2", "JOB_BACKOFF_MAX": "2", "GATEWAY_MAX_ATTEMPTS": "1"}
FAULT_TABLE: list[tuple[str, str, str]] = []


@pytest.fixture
def stack(local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalStack]:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    service.reset()
    yield local_stack
    monkeypatch.undo()
    service.reset()


@pytest.fixture
def tenant_http(stack: LocalStack) -> Iterator[tuple[str, httpx.Client]]:
    tenant = unique("faults")
    with (
        api_key_for(stack, tenant) as key,
        httpx.Client(base_url=stack.api_url or "", timeout=60, headers={"x-api-key": key}) as client,
    ):
        yield tenant, client


@pytest.fixture(scope="module", autouse=True)
def _print_fault_table() -> Iterator[None]:
    yield
    if FAULT_TABLE:
        print("\nfault table (fault | answer | records lost)")
        for row in FAULT_TABLE:
            print(" | ".join(row))


def _complete(client: httpx.Client, i: int) -> httpx.Response:
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": f"fault run {uuid.uuid4().hex} #{i}"}],
        "cache": {"no_cache": True, "no_store": True},
    }
    return client.post("/v1/completions", json=body)


def _run_completions(client: httpx.Client) -> list[httpx.Response]:
    with ThreadPoolExecutor(max_workers=3) as pool:
        return list(pool.map(lambda i: _complete(client, i), range(REQUESTS)))


@pytest.mark.parametrize(
    ("operations", "fault"),
    [
        ({"TransactWriteItems"}, "read_timeout"),
        ({"TransactWriteItems"}, "throttle"),
        ({"TransactWriteItems", "GetItem", "PutItem", "UpdateItem", "Query", "DeleteItem"}, "connect_timeout"),
        ({"TransactWriteItems", "GetItem", "PutItem", "UpdateItem", "Query", "DeleteItem"}, "internal"),
    ],
)
def test_usage_records_survive_a_stalled_dynamodb(
    stack: LocalStack, tenant_http: tuple[str, httpx.Client], operations: set[str], fault: str
) -> None:
    tenant, client = tenant_http
    # The key verified before the fault (an edge whose sandbox has seen it): a stalled keys table then
    # costs nothing; a key never seen would be refused, 503 keys_unavailable (keys fail closed).
    assert client.get("/v1/models").status_code == 200
    with aws_fault("dynamodb", operations, fault) as injected:
        responses = _run_completions(client)
        assert sum(injected.failed.values()) >= REQUESTS  # every request met the fault
    answers = sorted({_answer(r) for r in responses})
    # Only the ledger stalled: every request answers. Every table stalled: budgets cannot be checked and
    # fail closed (503 budget_unavailable, retryable, before any provider call).
    allowed = {"200"} if operations == {"TransactWriteItems"} else {"200", "503 budget_unavailable"}
    assert set(answers) <= allowed, [r.text for r in responses]
    attempts = sum(len(_attempts(r)) for r in responses)
    # DynamoDB is back: the queued records are replayed by the retry worker, none lost.
    if attempts:
        wait_for(lambda: len(ledger_items(stack, tenant)) >= attempts, timeout=60, what=f"{attempts} ledger records")
    assert len(ledger_items(stack, tenant)) == attempts  # and none twice
    where = "/".join(sorted(operations)) if len(operations) == 1 else "every table operation"
    FAULT_TABLE.append((f"DynamoDB {fault} on {where}", ", ".join(answers), f"0 of {attempts}"))


def _answer(response: httpx.Response) -> str:
    if response.status_code == 200:
        return "200"
    return f"{response.status_code} {response.json()['error']['code']}"


def _attempts(response: httpx.Response) -> list[Any]:
    body = response.json()
    return list(body["attempts"] if response.status_code == 200 else body["error"].get("attempts", []))


def test_a_stalled_s3_read_answers_503_with_retry_after(
    stack: LocalStack, tenant_http: tuple[str, httpx.Client]
) -> None:
    tenant, client = tenant_http
    bucket = stack.physical["DocumentsBucket"]
    key = f"incoming/tenants/{tenant}/{uuid.uuid4().hex}.md"
    stack.client("s3").put_object(Bucket=bucket, Key=key, Body=b"# Card\nJane Doe, jane@acme.example")
    for fault in ("read_timeout", "slowdown", "endpoint"):
        with aws_fault("s3", {"GetObject"}, fault) as injected:
            extraction = client.post("/v1/extractions", json={"s3": {"key": key}, "schema": "contact"})
            summary = client.post("/v1/summaries", json={"s3": {"key": key}})
        assert injected.failed["GetObject"] >= 2
        for response in (extraction, summary):
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "service_unavailable"
            assert int(response.headers["retry-after"]) >= 1
            assert bucket not in response.text and "arn:" not in response.text
        FAULT_TABLE.append((f"S3 {fault} on GetObject (extraction, summary)", "503 service_unavailable", "0"))
    assert client.post("/v1/extractions", json={"s3": {"key": key}, "schema": "contact"}).status_code == 200


def test_job_submission_and_reads_under_a_throttled_dynamodb_are_503(
    stack: LocalStack, tenant_http: tuple[str, httpx.Client], aws_clients: Callable[[str], Any]
) -> None:
    _tenant, client = tenant_http
    job = {"operation": "completion", "input": {"messages": [{"role": "user", "content": "hi"}]}}
    with aws_fault("dynamodb", {"PutItem"}, "throttle"):
        refused = client.post("/v1/jobs", json=job)
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "service_unavailable"
    accepted = client.post("/v1/jobs", json=job)
    assert accepted.status_code == 202, accepted.text
    with aws_fault("dynamodb", {"GetItem"}, "read_timeout"):
        read = client.get(f"/v1/jobs/{accepted.json()['id']}")
    assert read.status_code == 503 and read.json()["error"]["code"] == "service_unavailable"
    with aws_fault("dynamodb", {"Query"}, "request_limit"):
        usage = client.get("/v1/usage")
    assert usage.status_code == 503 and usage.json()["error"]["code"] == "service_unavailable"
    assert int(usage.headers["retry-after"]) >= 1
    FAULT_TABLE.append(
        ("DynamoDB throttle on PutItem (POST /v1/jobs)", "503 service_unavailable, nothing accepted", "0")
    )
    FAULT_TABLE.append(("DynamoDB read timeout on GetItem (GET /v1/jobs/{id})", "503 service_unavailable", "0"))
    FAULT_TABLE.append(("DynamoDB RequestLimitExceeded on Query (GET /v1/usage)", "503 service_unavailable", "0"))


def test_unavailable_is_told_apart_from_the_callers_mistakes() -> None:
    from botocore.exceptions import ClientError, ReadTimeoutError

    def client_error(code: str, status: int) -> ClientError:
        return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")

    assert aws.is_unavailable(ReadTimeoutError(endpoint_url="http://x"))
    for code in ("ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"):
        assert aws.is_unavailable(client_error(code, 400))
    assert aws.is_unavailable(client_error("Whatever", 503))
    for code in ("ConditionalCheckFailedException", "ValidationException", "NoSuchKey"):
        assert not aws.is_unavailable(client_error(code, 400))
    assert not aws.is_unavailable(ValueError("x"))


def test_a_stalled_ledger_queues_later_records_without_waiting_on_dynamodb(local_stack: LocalStack) -> None:
    """After one write times out, the sandbox's next records go straight to the retry queue: bounded
    time after the response (a sandbox that times out would lose what it had not written)."""
    import time

    from llm_gateway.accounting.usage import UsageLedger, replay_usage_message
    from llm_gateway.interfaces import RequestContext
    from llm_gateway.models import Attempt, Usage
    from llm_gateway.routing.deadline import Deadline
    from llm_gateway.runtime import run_sync

    sqs = local_stack.client("sqs")
    queue_url = sqs.create_queue(QueueName=unique("ledger-stall"))["QueueUrl"]
    table = local_stack.physical["UsageTable"]
    tenant = unique("stall")
    ledger = UsageLedger(table, queue_url=queue_url)
    attempt = Attempt(provider="openai", model="gpt-4o-mini", outcome="success", duration_ms=5, usage=Usage())
    with aws_fault("dynamodb", {"TransactWriteItems"}, "read_timeout") as injected:
        started = time.perf_counter()
        for i in range(5):
            ctx = RequestContext(tenant=tenant, request_id=f"req-{i}", deadline=Deadline(10))
            run_sync(ledger.record(ctx, attempt))
        elapsed = time.perf_counter() - started
    assert injected.failed["TransactWriteItems"] >= 1
    # Only the first record waited on DynamoDB (botocore's attempts); the next four were queued at once.
    assert ledger.counters.get("UsageWriteFailed") == 1, ledger.counters.snapshot()
    assert ledger.counters.get("UsageWriteSkippedWhileStalled") == 4 and ledger.counters.get("UsageQueued") == 5
    messages = []
    while batch := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages"):
        messages += batch
    assert len(messages) == 5
    assert all(replay_usage_message(m["Body"], table=table) for m in messages)
    assert len(ledger_items(local_stack, tenant)) == 5
    FAULT_TABLE.append(
        (f"DynamoDB read timeout, 5 ledger records in one sandbox ({elapsed:.1f} s)", "all queued", "0 of 5")
    )
