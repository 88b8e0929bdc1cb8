"""Async jobs end to end, over real sockets: the API bridge and the real handlers, moto (SQS with its
redrive policy, DynamoDB, S3, Step Functions executing a state machine), and the provider simulator.

The retry worker is driven by the local stack's SQS pollers, as Lambda's event source mapping would:
real receipt handles, partial batch failures, visibility-timeout backoff; the worker dead-letters a job's
message after JOB_MAX_RECEIVES (5) deliveries, the queue's redrive policy after maxReceiveCount (6).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from llm_gateway import aws, wiring
from llm_gateway.config import Settings
from llm_gateway.jobs import store as jobs
from llm_gateway.jobs.messages import Delivery
from llm_gateway.jobs.model import Job, derived_job_id
from llm_gateway.jobs.store import JobStore
from llm_gateway.jobs.worker import Worker, worker_for
from llm_gateway.runtime import close_thread_resources
from local.context import LambdaContext
from local.redrive import redrive
from local.stack import LocalStack
from tests.support.accounting import api_key_for, ledger_items, unique
from tests.support.waiting import queue_depth, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_real_aws")]


# Faithful but quick: one try per candidate model, and 1 s of SQS backoff between job attempts.
FAST_RETRIES = {
    "GATEWAY_MAX_ATTEMPTS": "1",
    "GATEWAY_BACKOFF_BASE": "0",
    "JOB_BACKOFF_BASE": "1",
    "JOB_BACKOFF_MAX": "1",
    "GATEWAY_BREAKER_BACKEND": "off",  # the shared breaker state would outlive this test's outage
}
MAX_RECEIVES = 5


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def stack(local_stack: LocalStack) -> Iterator[LocalStack]:
    """The session stack; afterwards the retry queue must be drained (no job of ours still running)."""
    yield local_stack
    sqs = local_stack.client("sqs")
    wait_for(lambda: queue_depth(sqs, local_stack.physical["RetryQueue"]) == 0, timeout=60, what="retry queue drained")


@pytest.fixture
def fast(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalStack]:
    for name, value in FAST_RETRIES.items():
        monkeypatch.setenv(name, value)
    wiring.reset()  # the handlers re-read the environment
    yield stack
    monkeypatch.undo()
    wiring.reset()


@pytest.fixture
def http(stack: LocalStack) -> Iterator[httpx.Client]:
    assert stack.api_url
    with httpx.Client(base_url=stack.api_url, timeout=30) as client:
        yield client


@pytest.fixture
def tenant_key(stack: LocalStack) -> Iterator[tuple[str, str]]:
    tenant = unique("jobs")
    with api_key_for(stack, tenant) as key:
        yield tenant, key


def prompt(marker: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": f"Summarize the ticket {marker} in one line."}]}


def submit(http: httpx.Client, key: str, marker: str, *, prefer: str = "respond-async", **body: Any) -> str:
    response = http.post(
        "/v1/completions", json={**prompt(marker), **body}, headers={"x-api-key": key, "Prefer": prefer}
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def get_job(http: httpx.Client, key: str, job_id: str) -> dict[str, Any]:
    response = http.get(f"/v1/jobs/{job_id}", headers={"x-api-key": key})
    assert response.status_code == 200, response.text
    return dict(response.json())


def wait_status(http: httpx.Client, key: str, ids: list[str], status: str, timeout: float = 30) -> dict[str, dict]:
    def views() -> dict[str, dict] | None:
        found = {job_id: get_job(http, key, job_id) for job_id in ids}
        return found if all(v["status"] == status for v in found.values()) else None

    return wait_for(views, timeout=timeout, what=f"{len(ids)} job(s) {status}")


def provider_successes(simulator: Any, marker: str) -> int:
    return sum(1 for c in simulator.calls() if c["status"] == 200 and marker in json.dumps(c["body"]))


def ledger_successes(stack: LocalStack, tenant: str) -> dict[str, list[float]]:
    """Successful attempts in the usage ledger, by job id (request ids are ``<job_id>#<attempt>``)."""
    items = ledger_items(stack, tenant)
    by_job: dict[str, list[float]] = {}
    for item in items:
        if item["outcome"]["S"] == "success":
            by_job.setdefault(item["request_id"]["S"].split("#")[0], []).append(float(item["cost_usd"]["N"]))
    return by_job


def dead_letters(stack: LocalStack, *, delete: Callable[[dict[str, Any]], bool] | None = None) -> list[dict[str, Any]]:
    """Every message on the retry DLQ; those ``delete`` picks are deleted, the rest left visible."""
    sqs, url = stack.client("sqs"), stack.physical["RetryDeadLetterQueue"]
    seen: dict[str, dict[str, Any]] = {}
    while batch := sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=10, MessageAttributeNames=["All"]
    ).get("Messages", []):
        seen.update({m["MessageId"]: m for m in batch})
    for message in seen.values():
        if delete is not None and delete(message):
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        else:
            sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
    return list(seen.values())


def sqs_event(stack: LocalStack, *bodies: str) -> dict[str, Any]:
    """An SQS event for the worker, as Lambda builds it, for messages that are not on the queue."""
    arn = stack.client("sqs").get_queue_attributes(QueueUrl=stack.physical["RetryQueue"], AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    return {
        "Records": [
            {
                "messageId": str(uuid.uuid4()),
                "receiptHandle": f"local-{uuid.uuid4().hex}",
                "body": body,
                "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": str(int(time.time() * 1000))},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": arn,
                "awsRegion": "us-east-1",
            }
            for body in bodies
        ]
    }


def job_message(job_id: str, tenant: str) -> str:
    return json.dumps({"kind": "job", "job_id": job_id, "tenant": tenant, "operation": "completion"})


# --------------------------------------------------------------------------- the job API


def test_respond_async_gives_a_job_that_only_its_tenant_can_read(fast, http, tenant_key, simulator):
    _tenant, key = tenant_key
    marker = uuid.uuid4().hex
    response = http.post(
        "/v1/chat/completions",
        json={"model": "gpt-4o-mini", **prompt(marker)},
        headers={"x-api-key": key, "Prefer": "respond-async"},
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert response.headers["location"] == f"/v1/jobs/{body['id']}"
    assert response.headers["preference-applied"] == "respond-async"
    assert body["status"] == "queued" and body["operation"] == "completion"

    [done] = wait_status(http, key, [body["id"]], "succeeded").values()
    assert done["attempts"] == 1 and done["max_attempts"] == MAX_RECEIVES
    assert done["result"]["content"].startswith("[sim openai/gpt-4o-mini]")
    assert done["result"]["usage"]["input_tokens"] > 0
    assert provider_successes(simulator, marker) == 1

    # Another tenant, an unknown id and a malformed id all look the same: 404 job_not_found.
    for job_id, api_key in ((body["id"], "key-b"), ("job_" + "0" * 32, key), ("not-a-job-id", key)):
        other = http.get(f"/v1/jobs/{job_id}", headers={"x-api-key": api_key})
        assert other.status_code == 404 and other.json()["error"]["code"] == "job_not_found", other.text
    no_key = http.get(f"/v1/jobs/{body['id']}")  # no API key at all
    assert no_key.status_code == 401 and no_key.json()["error"]["code"] == "missing_api_key"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"operation": "teleport", "input": {}}, "operation"),
        ({"operation": "completion", "input": {"messages": []}}, "messages"),
        ({"operation": "completion"}, "input"),
        (
            {"operation": "completion", "input": {"messages": [{"role": "user", "content": "hi"}]}, "tenant": "x"},
            "tenant",
        ),
    ],
)
def test_bad_submissions_are_refused_before_anything_is_queued(stack, http, body, param):
    sqs = stack.client("sqs")
    response = http.post("/v1/jobs", json=body, headers={"x-api-key": "key-a"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and error["details"]["param"] == param
    assert queue_depth(sqs, stack.physical["RetryQueue"]) == 0


def test_post_jobs_runs_a_named_operation(fast, http, tenant_key):
    _tenant, key = tenant_key
    response = http.post(
        "/v1/jobs", json={"operation": "completion", "input": prompt(uuid.uuid4().hex)}, headers={"x-api-key": key}
    )
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/v1/jobs/{response.json()['id']}"
    [done] = wait_status(http, key, [response.json()["id"]], "succeeded").values()
    assert done["result"]["content"].startswith("[sim ")


# --------------------------------------------------------------------------- outages


def test_outage_replay_loses_nothing_and_bills_nothing_twice(fast, http, tenant_key, simulator):
    tenant, key = tenant_key
    stack = fast
    simulator.add_fault("overloaded")  # every provider and model answers 529/503
    # Submitted first, these use up their deliveries during the outage and end on the dead-letter queue.
    doomed_markers = [uuid.uuid4().hex for _ in range(2)]
    doomed = [submit(http, key, marker) for marker in doomed_markers]
    markers = dict(zip(doomed, doomed_markers, strict=True))
    failed = wait_status(http, key, doomed, "failed", timeout=40)
    for view in failed.values():
        assert view["attempts"] == MAX_RECEIVES
        assert view["error"]["retryable"] is True
        assert view["error"]["message"].startswith(f"gave up after {MAX_RECEIVES} deliveries")

    # These are mid-way through their retries when the providers come back.
    recovering = []
    for _ in range(4):
        marker = uuid.uuid4().hex
        recovering.append(submit(http, key, marker))
        markers[recovering[-1]] = marker

    def all_retrying() -> dict[str, dict] | None:
        views = {job_id: get_job(http, key, job_id) for job_id in recovering}
        ok = all(v["status"] == "retrying" and v["attempts"] >= 2 for v in views.values())
        return views if ok else None

    retrying = wait_for(all_retrying, timeout=20, what="jobs retrying with backoff")
    sample = next(iter(retrying.values()))
    assert sample["last_error"]["retryable"] is True and sample["next_attempt_at"] > sample["created_at"]
    simulator.clear_faults()
    succeeded = wait_status(http, key, recovering, "succeeded", timeout=30)

    # Count in = count out: every job succeeded, or failed with its message on the dead-letter queue.
    def dlq_job_ids() -> set[str] | None:
        found = {json.loads(m["Body"]).get("job_id") for m in dead_letters(stack)}
        return found if found >= set(doomed) else None

    on_dlq = wait_for(dlq_job_ids, timeout=20, what="exhausted jobs on the dead-letter queue")
    assert set(succeeded) | (set(failed) & on_dlq) == set(doomed) | set(recovering)

    # The DLQ goes back to the queue; the redriven jobs reopen and finish now that providers are up.
    report = redrive(
        stack.client("sqs"), dlq_url=stack.physical["RetryDeadLetterQueue"], queue_url=stack.physical["RetryQueue"]
    )
    assert report.moved >= len(doomed)
    redriven = wait_status(http, key, doomed, "succeeded", timeout=30)
    assert all(v["attempts"] == MAX_RECEIVES + 1 for v in redriven.values())
    assert not {json.loads(m["Body"]).get("job_id") for m in dead_letters(stack)} & set(doomed)

    # Nothing billed twice: one successful provider call and one ledger success per job, costs agree.
    results = {**succeeded, **redriven}
    assert {job_id: provider_successes(simulator, markers[job_id]) for job_id in results} == dict.fromkeys(results, 1)
    ledger = ledger_successes(stack, tenant)
    assert {job_id: len(ledger.get(job_id, [])) for job_id in results} == dict.fromkeys(results, 1)
    for job_id, view in results.items():
        assert ledger[job_id][0] == pytest.approx(view["result"]["cost_usd"])


def test_defer_on_failure_answers_202_instead_of_503(fast, http, tenant_key, simulator):
    _tenant, key = tenant_key
    simulator.add_fault("overloaded")
    plain = http.post("/v1/completions", json=prompt(uuid.uuid4().hex), headers={"x-api-key": key})
    assert plain.status_code == 503 and plain.json()["error"]["code"] == "providers_unavailable"

    deferred = http.post(
        "/v1/completions", json=prompt(uuid.uuid4().hex), headers={"x-api-key": key, "Prefer": "defer-on-failure"}
    )
    assert deferred.status_code == 202, deferred.text
    assert deferred.headers["preference-applied"] == "defer-on-failure"
    body = deferred.json()
    assert body["deferred_because"]["code"] == "providers_unavailable"
    assert get_job(http, key, body["id"])["status"] == "queued"  # waits one backoff step before its first try

    simulator.clear_faults()
    [done] = wait_status(http, key, [body["id"]], "succeeded").values()
    assert done["result"]["content"].startswith("[sim ")

    # A caller mistake is never deferred: waiting would not fix it.
    invalid = http.post(
        "/v1/completions",
        json={**prompt("x"), "model": "no-such-model"},
        headers={"x-api-key": key, "Prefer": "defer-on-failure"},
    )
    assert invalid.status_code == 404


# --------------------------------------------------------------------------- exactly-once effects


def test_duplicate_deliveries_run_a_job_once(fast, http, tenant_key, simulator):
    tenant, key = tenant_key
    stack = fast
    marker = uuid.uuid4().hex
    job_id = submit(http, key, marker)
    [done] = wait_status(http, key, [job_id], "succeeded").values()

    # The same message delivered again, twice, through the queue and the worker's pollers: acknowledged
    # (deleted), nothing runs again.
    sqs, url = stack.client("sqs"), stack.physical["RetryQueue"]
    for _ in range(2):
        sqs.send_message(QueueUrl=url, MessageBody=job_message(job_id, tenant))
    wait_for(lambda: queue_depth(sqs, url) == 0, timeout=20, what="duplicates consumed")
    again = get_job(http, key, job_id)
    assert again["result"] == done["result"] and again["attempts"] == 1
    assert provider_successes(simulator, marker) == 1
    assert len(ledger_successes(stack, tenant)[job_id]) == 1

    # Duplicates before the job ever ran, picked up by two pollers at once: one runs it.
    marker = uuid.uuid4().hex
    store = jobs.store_for(Settings.from_env())
    job = store.create(store.new_job(operation="completion", tenant=tenant, source="api"), prompt(marker))
    simulator.set_latency(500)
    sqs.send_message_batch(
        QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": job_message(job.job_id, tenant)} for i in range(2)]
    )
    [done] = wait_status(http, key, [job.job_id], "succeeded").values()
    wait_for(lambda: queue_depth(sqs, url) == 0, timeout=20, what="both copies consumed")
    simulator.set_latency(0)
    assert done["attempts"] == 1 and get_job(http, key, job.job_id) == done
    assert provider_successes(simulator, marker) == 1
    assert len(ledger_successes(stack, tenant)[job.job_id]) == 1


def test_concurrent_duplicates_run_once_and_the_loser_steps_aside(fast, tenant_key, simulator):
    tenant, _ = tenant_key
    stack = fast
    marker = uuid.uuid4().hex
    store = jobs.store_for(Settings.from_env())
    job = store.create(store.new_job(operation="completion", tenant=tenant, source="api"), prompt(marker))
    body = job_message(job.job_id, tenant)  # not on the queue: only these deliveries exist
    simulator.set_latency(500)
    outcomes: list[Any] = []

    def deliver() -> None:
        try:
            outcomes.append(stack.invoke("RetryWorkerFunction", sqs_event(stack, body)))
        finally:
            close_thread_resources()

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
        time.sleep(0.1)  # the second arrives while the first is calling the provider
    for thread in threads:
        thread.join(timeout=30)
    simulator.set_latency(0)

    # One ran it; the other found it in progress and was dropped: the running delivery owns the job
    # (its own message comes back if it dies), so the duplicate spends no delivery.
    assert outcomes == [{"batchItemFailures": []}] * 2
    assert stack.invoke("RetryWorkerFunction", sqs_event(stack, body)) == {"batchItemFailures": []}
    finished = store.get(job.job_id)
    assert finished is not None and finished.status == "succeeded" and finished.attempts == 1
    assert provider_successes(simulator, marker) == 1
    assert len(ledger_successes(stack, tenant)[job.job_id]) == 1


# --------------------------------------------------------------------------- poison


def test_poison_messages_are_set_aside_without_a_retry_storm(stack, http, tenant_key, simulator):
    tenant, key = tenant_key
    sqs = stack.client("sqs")
    marker = uuid.uuid4().hex
    # Default backoff here (30 s): a retried message could not reach the DLQ within this test's waits.
    sqs.send_message(QueueUrl=stack.physical["RetryQueue"], MessageBody=f"<not json {marker}>")
    store = jobs.store_for(Settings.from_env())
    invalid = store.create(  # a job whose input its operation refuses (submit() would have said 400)
        store.new_job(operation="completion", tenant=tenant, source="api"), {"messages": "hello", "marker": marker}
    )
    store.enqueue(invalid)

    [poison] = wait_for(
        lambda: [m for m in dead_letters(stack) if marker in m["Body"]] or None, timeout=10, what="poison on the DLQ"
    )
    reason = poison["MessageAttributes"]["gateway-poison"]["StringValue"]
    assert reason == "the message body is not JSON"

    [failed] = wait_status(http, key, [invalid.job_id], "failed", timeout=10).values()
    assert failed["attempts"] == 1 and failed["error"]["code"] == "invalid_request"
    assert failed["error"]["retryable"] is False and "messages" in failed["error"]["message"]
    assert provider_successes(simulator, marker) == 0 and not [c for c in simulator.calls() if marker in json.dumps(c)]

    # A message naming another tenant's job is set aside too, and the job is left alone.
    forged = json.dumps({"kind": "job", "job_id": invalid.job_id, "tenant": "someone-else"})
    sqs.send_message(QueueUrl=stack.physical["RetryQueue"], MessageBody=forged)
    [forged_on_dlq] = wait_for(
        lambda: [m for m in dead_letters(stack) if m["Body"] == forged] or None, timeout=10, what="forged on the DLQ"
    )
    assert (
        forged_on_dlq["MessageAttributes"]["gateway-poison"]["StringValue"]
        == "the message's tenant does not own this job"
    )
    assert get_job(http, key, invalid.job_id) == failed

    set_aside = dead_letters(stack, delete=lambda m: marker in m["Body"] or invalid.job_id in m["Body"])
    assert [m for m in set_aside if invalid.job_id in m["Body"]], "the forged message was not set aside"


# --------------------------------------------------------------------------- large results


def test_a_result_larger_than_a_queue_message_is_stored_in_s3(fast, http, tenant_key, simulator):
    tenant, key = tenant_key
    stack = fast
    big = "Lorem ipsum dolor sit amet. " * 11_000  # ~300 KB: over SQS's and Step Functions' 256 KB
    simulator.script("openai", [{"content": big, "finish_reason": "stop"}])
    job_id = submit(http, key, uuid.uuid4().hex, model="gpt-4o-mini", fallback=[], cache={"no_store": True})
    [done] = wait_status(http, key, [job_id], "succeeded").values()
    assert done["result"]["content"] == big

    item = jobs.store_for(Settings.from_env()).get(job_id)
    assert item is not None and item.result is None
    assert item.result_ref == f"jobs/{tenant}/{job_id}/result.json"
    head = stack.client("s3").head_object(Bucket=stack.physical["DocumentsBucket"], Key=item.result_ref)
    assert head["ContentLength"] == item.result_size > 256 * 1024


# --------------------------------------------------------------------------- Step Functions


@pytest.fixture
def executing_state_machines(stack: LocalStack) -> Iterator[None]:
    """moto runs state machines for real only when told to (its default is a stub)."""
    url = f"{stack.moto_url}/moto-api/config"
    before = httpx.get(url, timeout=5).json().get("stepfunctions", {"execute_state_machine": False})
    httpx.post(url, json={"stepfunctions": {"execute_state_machine": True}}, timeout=5).raise_for_status()
    yield
    httpx.post(url, json={"stepfunctions": before}, timeout=5).raise_for_status()


def callback_state_machine(stack: LocalStack) -> str:
    """The template's sample JobCallbackStateMachine, as SAM would deploy it."""
    props = stack.template.properties("JobCallbackStateMachine")
    definition = json.dumps(props["Definition"]).replace("${RetryQueueUrl}", stack.physical["RetryQueue"])
    arn: str = stack.client("stepfunctions").create_state_machine(
        name=unique("job-callback"), definition=definition, roleArn="arn:aws:iam::123456789012:role/local-sfn"
    )["stateMachineArn"]
    return arn


def test_step_functions_task_tokens_succeed_and_fail_by_name(fast, executing_state_machines, simulator):
    stack = fast
    sfn = stack.client("stepfunctions")
    machine = callback_state_machine(stack)
    tenant, marker = unique("sfn"), uuid.uuid4().hex
    # moto's history drops a failure's cause: watch the worker's own SendTaskFailure call on the wire.
    sent: list[dict[str, Any]] = []
    worker_sfn = aws.client("stepfunctions", aws.DURABLE)
    worker_sfn.meta.events.register(
        "provide-client-params.states.SendTaskFailure", lambda params, **_: sent.append(params)
    )
    runs = {
        "ok": {"tenant": tenant, "operation": "completion", "input": prompt(marker)},
        "bad": {"tenant": tenant, "operation": "completion", "input": {"messages": "not a list"}},
    }
    arns = {
        name: sfn.start_execution(stateMachineArn=machine, name=unique(name), input=json.dumps(data))["executionArn"]
        for name, data in runs.items()
    }

    def finished() -> dict[str, dict] | None:
        described = {name: sfn.describe_execution(executionArn=arn) for name, arn in arns.items()}
        return described if all(d["status"] != "RUNNING" for d in described.values()) else None

    described = wait_for(finished, timeout=30, what="both executions finished")
    ok, bad = described["ok"], described["bad"]
    assert ok["status"] == "SUCCEEDED", ok
    output = json.loads(ok["output"])
    assert output["status"] == "succeeded" and output["result"]["content"].startswith("[sim ")
    assert provider_successes(simulator, marker) == 1

    assert bad["status"] == "FAILED", bad
    history = sfn.get_execution_history(executionArn=arns["bad"])["events"]
    [task_failed] = [e for e in history if e["type"] == "TaskFailed"]
    assert task_failed["taskFailedEventDetails"]["error"] == "InvalidRequestError"
    assert bad["error"] == "InvalidRequestError"
    [failure] = sent
    assert failure["error"] == "InvalidRequestError"
    cause = json.loads(failure["cause"])
    assert cause["code"] == "invalid_request" and cause["retryable"] is False and cause["job_id"].startswith("job_")

    store = jobs.store_for(Settings.from_env())
    for job_id, status in ((output["job_id"], "succeeded"), (cause["job_id"], "failed")):
        job = store.get(job_id)
        assert job is not None and job.status == status and job.tenant == tenant
        assert job.source == "stepfunctions" and job.notified_at is not None


# --------------------------------------------------------------------------- make redrive


def test_redrive_cli_moves_messages_back_and_leaves_poison(stack, capsys):
    from local import redrive as redrive_cli

    sqs = stack.client("sqs")  # private queues: the worker must not consume these
    queue = sqs.create_queue(QueueName=unique("redrive-to"))["QueueUrl"]
    dlq = sqs.create_queue(QueueName=unique("redrive-from"))["QueueUrl"]
    kind = {"kind": {"DataType": "String", "StringValue": "usage"}}
    for i in range(12):
        sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps({"kind": "usage", "n": i}), MessageAttributes=kind)
    poison = {"gateway-poison": {"DataType": "String", "StringValue": "the message body is not JSON"}}
    sqs.send_message(QueueUrl=dlq, MessageBody="<garbage>", MessageAttributes=poison)

    args = ["--queue-url", queue, "--dlq-url", dlq, "--endpoint-url", stack.moto_url]
    assert redrive_cli.main([*args, "--dry-run"]) == 0
    assert "13 message(s)" in capsys.readouterr().out
    assert redrive_cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "moved 12 message(s)" in printed and "left 1 poison message(s)" in printed

    moved = []
    while batch := sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, MessageAttributeNames=["All"]).get(
        "Messages", []
    ):
        moved += batch
    assert sorted(json.loads(m["Body"])["n"] for m in moved) == list(range(12))
    assert all(m["MessageAttributes"]["kind"]["StringValue"] == "usage" for m in moved)
    [left] = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, MessageAttributeNames=["All"])["Messages"]
    assert left["Body"] == "<garbage>"
    for url in (queue, dlq):
        sqs.delete_queue(QueueUrl=url)


# --------------------------------------------------------------------------- how jobs end


class FlakyJobStore(JobStore):
    """The deployment's store, except that recording a success fails (DynamoDB throttled, say)."""

    def mark_succeeded(self, job: Job, stored: Any) -> Job:
        raise RuntimeError("ProvisionedThroughputExceededException (simulated)")


def new_job(tenant: str, marker: str) -> Job:
    """A job in the table but not on the queue: only the deliveries a test makes exist."""
    store = jobs.store_for(Settings.from_env())
    return store.create(store.new_job(operation="completion", tenant=tenant, source="api"), prompt(marker))


def delivery(job: Job, receive_count: int) -> Delivery:
    return Delivery(
        message_id=str(uuid.uuid4()),
        body=job_message(job.job_id, job.tenant),
        receipt_handle="not-on-the-queue",
        receive_count=receive_count,
    )


def invocation(seconds: float) -> LambdaContext:
    return LambdaContext(function_name="retry-worker", timeout_s=seconds)


def dead_lettered(stack: LocalStack, job_id: str) -> dict[str, Any]:
    """The DLQ message of this job (deleted from the DLQ: tests leave it clean)."""
    [message] = wait_for(
        lambda: [m for m in dead_letters(stack) if job_id in m["Body"]] or None, timeout=10, what="message on the DLQ"
    )
    dead_letters(stack, delete=lambda m: job_id in m["Body"])
    return message


def test_the_last_delivery_handing_back_fails_the_job_and_a_redrive_bills_nothing_twice(
    fast, http, tenant_key, simulator
):
    tenant, key = tenant_key
    stack = fast
    marker = uuid.uuid4().hex
    job = new_job(tenant, marker)
    # The operation runs and its outcome is kept, but the job cannot be marked succeeded: on its last
    # allowed delivery that hand-back must not leave the job "running" while its message leaves.
    flaky_store = FlakyJobStore(
        table=stack.physical["JobsTable"], queue_url=None, bucket=stack.physical["DocumentsBucket"]
    )
    flaky = Worker(
        wiring.Services(Settings.from_env(), job_store=flaky_store),
        job_persistence=worker_for(wiring.services()).job_persistence,
    )
    assert flaky.handle(delivery(job, MAX_RECEIVES), invocation(60)) == "dead_lettered"
    failed = get_job(http, key, job.job_id)
    assert failed["status"] == "failed" and failed["attempts"] == 1
    assert failed["error"]["code"] == "jobs_unavailable" and failed["error"]["retryable"] is True
    assert failed["error"]["message"].startswith(f"gave up after {MAX_RECEIVES} deliveries; last error: ")
    gave_up = dead_lettered(stack, job.job_id)["MessageAttributes"]["gateway-gave-up"]["StringValue"]
    assert gave_up.startswith(f"gave up after {MAX_RECEIVES} deliveries")
    assert provider_successes(simulator, marker) == 1

    # Redriven (as `make redrive` would), the job records the outcome it already has: no second call.
    stack.client("sqs").send_message(QueueUrl=stack.physical["RetryQueue"], MessageBody=job_message(job.job_id, tenant))
    [done] = wait_status(http, key, [job.job_id], "succeeded").values()
    assert done["result"]["content"].startswith("[sim ") and "error" not in done
    assert provider_successes(simulator, marker) == 1
    assert len(ledger_successes(stack, tenant)[job.job_id]) == 1


def test_a_last_delivery_that_dies_with_its_invocation_still_ends_failed(fast, http, tenant_key, simulator):
    tenant, key = tenant_key
    stack = fast
    job = new_job(tenant, uuid.uuid4().hex)
    store, sqs, url = jobs.store_for(Settings.from_env()), stack.client("sqs"), stack.physical["RetryQueue"]
    lid = stack.function_id("RetryWorkerFunction")
    real_handler = stack._load_handler(lid)
    deaths: list[int] = []

    def times_out_on_this_job(event: dict[str, Any], context: Any) -> Any:
        [record] = event["Records"]
        count = int(record["attributes"]["ApproximateReceiveCount"])
        if job.job_id not in record["body"] or count > MAX_RECEIVES:
            return real_handler(event, context)
        deaths.append(count)
        store.claim(job)  # the attempt started...
        # ...and the invocation timed out: the message reappears once its visibility timeout has passed.
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=record["receiptHandle"], VisibilityTimeout=0)
        raise TimeoutError("Task timed out after 180.00 seconds")

    stack.handler_overrides[lid] = times_out_on_this_job
    store.enqueue(job)
    [failed] = wait_status(http, key, [job.job_id], "failed", timeout=30).values()
    assert deaths == list(range(1, MAX_RECEIVES + 1)) and failed["attempts"] == MAX_RECEIVES
    assert failed["error"]["code"] == "jobs_unavailable" and failed["error"]["retryable"] is True
    assert f"the last allowed delivery ({MAX_RECEIVES}) did not finish" in failed["error"]["message"]
    assert "gateway-gave-up" in dead_lettered(stack, job.job_id)["MessageAttributes"]


def test_an_outcome_stored_before_a_crash_is_recorded_not_run_again(fast, http, tenant_key, simulator):
    tenant, key = tenant_key
    stack = fast
    worker = worker_for(wiring.services())
    for receive_count in (2, MAX_RECEIVES + 1):  # a redelivery, and the settling delivery after the last
        marker = uuid.uuid4().hex
        job = new_job(tenant, marker)
        worker._execute(job, 30.0, invocation(60))  # the attempt ran and its outcome was kept; then a crash
        assert get_job(http, key, job.job_id)["status"] == "running"
        assert worker.handle(delivery(job, receive_count), invocation(60)) == "succeeded"
        done = get_job(http, key, job.job_id)
        assert done["status"] == "succeeded" and done["attempts"] == 1
        assert done["result"]["content"].startswith("[sim ")
        assert provider_successes(simulator, marker) == 1
        assert len(ledger_successes(stack, tenant)[job.job_id]) == 1


def test_a_job_without_time_to_run_is_queued_afresh_not_burnt(fast, http, tenant_key, simulator):
    tenant, key = tenant_key
    worker = worker_for(wiring.services())
    short, late = new_job(tenant, uuid.uuid4().hex), new_job(tenant, uuid.uuid4().hex)
    # 3 s left on the job's last delivery; and a batch's second record with less than JOB_MAX_RUNTIME left.
    assert worker.handle(delivery(short, MAX_RECEIVES), invocation(3)) == "requeued"
    assert worker.handle(delivery(late, 1), invocation(60), first_in_batch=False) == "requeued"
    # The fresh messages reach the pollers and the jobs run once each: the requeue spent no attempt.
    finished = wait_status(http, key, [short.job_id, late.job_id], "succeeded")
    assert all(view["attempts"] == 1 for view in finished.values())


def test_a_long_job_that_moves_forward_goes_on_in_a_fresh_message_without_spending_deliveries(
    fast, http, tenant_key, simulator, monkeypatch
):
    tenant, key = tenant_key
    stack = fast
    for name, value in {
        "GATEWAY_SUMMARY_MAX_CHUNK_TOKENS": "250",
        "GATEWAY_SUMMARY_STUFF_MAX_TOKENS": "1000",
        "GATEWAY_SUMMARY_CONCURRENCY": "1",  # one call at a time: even a slow machine finishes some
        "GATEWAY_CACHE_TIMEOUT": "5",
    }.items():
        monkeypatch.setenv(name, value)
    wiring.reset()
    simulator.set_latency(300)  # 40 map calls one after another: about 12 s, more than one attempt holds
    marker = uuid.uuid4().hex
    paragraphs = [
        f"Part {i} of {marker}: " + "the council reviewed the ferry timetable and budget. " * 16 for i in range(40)
    ]
    store = jobs.store_for(Settings.from_env())
    job = store.create(
        store.new_job(operation="summarization", tenant=tenant, source="api"),
        {"text": "\n\n".join(paragraphs), "strategy": "map_reduce"},
    )
    # Its last allowed delivery, with a few seconds to run: a summary this long cannot finish, but it
    # pays for (and caches) some chunks, so it goes on in a fresh message instead of dying on the DLQ.
    assert worker_for(wiring.services()).handle(delivery(job, MAX_RECEIVES), invocation(10)) == "continued"
    partway = get_job(http, key, job.job_id)
    assert partway["status"] in ("retrying", "running", "succeeded") and partway["attempts"] >= 1
    [done] = wait_status(http, key, [job.job_id], "succeeded", timeout=60).values()
    assert done["result"]["chunks"] > 1 and done["result"]["strategy"] == "map_reduce"
    assert not [m for m in dead_letters(stack) if job.job_id in m["Body"]]  # nothing was given up on


@pytest.mark.parametrize(
    ("operation", "key", "payload"),
    [
        ("summarization", "incoming/summarize/outage/{doc}.md", {}),
        ("extraction", "incoming/extract/invoice/{doc}.txt", {"schema": "invoice"}),
    ],
)
def test_an_upload_job_given_up_on_leaves_an_error_object_next_to_the_document(
    fast, simulator, operation, key, payload
):
    stack = fast
    bucket, s3 = stack.physical["DocumentsBucket"], stack.client("s3")
    key = key.format(doc=uuid.uuid4().hex)
    notified = threading.Event()  # the upload's own S3 notification is not this test's: swallow it
    function = "SummarizationFunction" if operation == "summarization" else "ExtractionFunction"
    stack.handler_overrides[function] = lambda event, context: notified.set()
    s3.put_object(Bucket=bucket, Key=key, Body=b"Invoice 7 from ACME, due 2026-12-01, total 120 EUR.")
    assert notified.wait(20), "no S3 notification"
    store = jobs.store_for(Settings.from_env())
    job = store.create(
        store.new_job(operation=operation, tenant="documents", source="s3"), {"s3": {"key": key}, **payload}
    )
    simulator.add_fault("overloaded")  # every provider, every call: retryable, so the job is retried...
    # ...until its last allowed delivery, which gives up on it.
    assert worker_for(wiring.services()).handle(delivery(job, MAX_RECEIVES), invocation(60)) == "dead_lettered"
    assert store.get(job.job_id).status == "failed"
    error_key = key.replace("incoming/", "errors/", 1) + ".json"
    record = json.loads(s3.get_object(Bucket=bucket, Key=error_key)["Body"].read())
    assert record["source_key"] == key and record["job_id"] == job.job_id
    assert record["error"]["retryable"] is True and "gave up after" in record["error"]["message"]
    s3.head_object(Bucket=bucket, Key=key)  # the document is still there
    dead_lettered(stack, job.job_id)


# --------------------------------------------------------------------------- what the API answers


def test_extraction_jobs_are_validated_when_submitted(stack, http, tenant_key):
    _tenant, key = tenant_key

    def post(job_input: dict[str, Any]) -> httpx.Response:
        return http.post("/v1/jobs", json={"operation": "extraction", "input": job_input}, headers={"x-api-key": key})

    refused = {
        "no such schema": ({"text": "Invoice 7", "schema": "no-such-schema"}, "schema_not_found"),
        "unusable inline schema": ({"text": "Invoice 7", "schema": {"type": "array"}}, "invalid_schema"),
        "no document": ({"schema": "invoice"}, "invalid_request"),
        "two documents": ({"text": "x", "s3": {"key": "incoming/x.txt"}, "schema": "invoice"}, "invalid_request"),
    }
    for what, (job_input, code) in refused.items():
        response = post(job_input)
        assert 400 <= response.status_code < 500, (what, response.text)
        assert response.json()["error"]["code"] == code, what
    accepted = post({"text": "Invoice 7, total 42 USD", "schema": "invoice"})
    assert accepted.status_code == 202, accepted.text
    wait_status(http, key, [accepted.json()["id"]], "succeeded")


def succeeded_job(tenant: str, result: Any) -> Job:
    store = jobs.store_for(Settings.from_env())
    running = store.claim(store.create(store.new_job(operation="completion", tenant=tenant, source="api"), prompt("x")))
    return store.mark_succeeded(running, store.store_result(running, result))


def test_a_result_too_large_for_a_lambda_answer_is_given_as_a_download_url(stack, http, tenant_key):
    tenant, key = tenant_key
    # Both about 3 MB as UTF-8 and kept in S3. Escaped in Lambda's JSON answer, the Chinese one would be
    # twice that (over the 6 MB limit): it gets a presigned URL; the ASCII one is still inlined.
    ascii_result = {"content": "plain text. " * 250_000}
    cjk_result = {"content": "长文本摘要。" * 170_000}
    ascii_job, cjk_job = succeeded_job(tenant, ascii_result), succeeded_job(tenant, cjk_result)
    assert ascii_job.result_ref and cjk_job.result_ref

    inline = http.get(f"/v1/jobs/{ascii_job.job_id}", headers={"x-api-key": key})
    assert inline.status_code == 200 and inline.json()["result"] == ascii_result
    assert "result_url" not in inline.json()

    linked = http.get(f"/v1/jobs/{cjk_job.job_id}", headers={"x-api-key": key})
    assert linked.status_code == 200
    body = linked.json()
    assert "result" not in body and body["result_size"] == cjk_job.result_size
    assert len(linked.content) < 10_000 and body["result_url_expires_in"] > 0
    download = httpx.get(body["result_url"], timeout=30)
    assert download.status_code == 200 and download.json() == cjk_result


def test_job_payloads_never_reach_the_logs(fast, http, tenant_key, simulator, caplog):
    _tenant, key = tenant_key
    caplog.set_level(logging.INFO)  # the deployment's LOG_LEVEL; the gateway's own loggers at their most verbose
    for name in ("llm_gateway", "llm-gateway"):
        caplog.set_level(logging.DEBUG, logger=name)
    marker = f"PAYLOAD-{uuid.uuid4().hex}"
    job_id = submit(http, key, marker)  # submission
    wait_status(http, key, [job_id], "succeeded")  # the worker, and GET (polled until done)
    # One that fails too: errors are logged, their inputs are not.
    refused = http.post(
        "/v1/jobs", json={"operation": "completion", "input": {"messages": marker}}, headers={"x-api-key": key}
    )
    assert refused.status_code == 400

    def text(record: logging.LogRecord) -> str:
        return record.getMessage() + json.dumps({k: str(v) for k, v in vars(record).items()})

    messages = {record.getMessage() for record in caplog.records}
    assert {"job accepted", "job attempt", "job succeeded"} <= messages  # the logs were captured
    assert [record.name for record in caplog.records if marker in text(record)] == []


# --------------------------------------------------------------------------- Step Functions: bad input


def test_a_malformed_step_functions_message_fails_its_task_at_once(fast, executing_state_machines):
    stack = fast
    sfn = stack.client("stepfunctions")
    machine = callback_state_machine(stack)
    sent: list[dict[str, Any]] = []
    events = aws.client("stepfunctions", aws.DURABLE).meta.events
    events.register(
        "provide-client-params.states.SendTaskFailure", lambda params, **_: sent.append(params), unique_id="malformed"
    )
    try:
        # The state sends {"kind": "job", ..., "input": "not an object", "task_token": ...}: unusable.
        execution = sfn.start_execution(
            stateMachineArn=machine,
            name=unique("malformed"),
            input=json.dumps({"tenant": unique("sfn"), "operation": "completion", "input": "not an object"}),
        )["executionArn"]

        def finished() -> dict[str, Any] | None:
            described = sfn.describe_execution(executionArn=execution)
            return described if described["status"] != "RUNNING" else None

        described = wait_for(finished, timeout=30, what="the execution ended")
    finally:
        events.unregister("provide-client-params.states.SendTaskFailure", unique_id="malformed")
    assert described["status"] == "FAILED" and described["error"] == "InvalidRequestError"
    [failure] = [params for params in sent if "input" in params["cause"]]
    cause = json.loads(failure["cause"])
    assert cause["code"] == "invalid_request" and cause["retryable"] is False
    assert cause["message"].startswith("invalid job message: input:")
    poison = dead_lettered(stack, failure["taskToken"][:40])
    assert poison["MessageAttributes"]["gateway-poison"]["StringValue"] == cause["message"]


def test_a_step_functions_job_whose_deliveries_all_died_fails_its_task(fast, executing_state_machines, simulator):
    stack = fast
    sfn, sqs, url = stack.client("stepfunctions"), stack.client("sqs"), stack.physical["RetryQueue"]
    tenant = unique("sfn-dies")
    lid = stack.function_id("RetryWorkerFunction")
    real_handler = stack._load_handler(lid)
    deaths: list[int] = []

    def dies_on_this_tenant(event: dict[str, Any], context: Any) -> Any:
        [record] = event["Records"]
        count = int(record["attributes"]["ApproximateReceiveCount"])
        if tenant not in record["body"] or count > MAX_RECEIVES:
            return real_handler(event, context)
        deaths.append(count)  # the invocation dies (out of memory, say) before the job is even created
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=record["receiptHandle"], VisibilityTimeout=0)
        raise MemoryError("Runtime exited with error: signal: killed")

    stack.handler_overrides[lid] = dies_on_this_tenant
    execution = sfn.start_execution(
        stateMachineArn=callback_state_machine(stack),
        name=unique("dies"),
        input=json.dumps({"tenant": tenant, "operation": "completion", "input": prompt(uuid.uuid4().hex)}),
    )["executionArn"]

    def finished() -> dict[str, Any] | None:
        described = sfn.describe_execution(executionArn=execution)
        return described if described["status"] != "RUNNING" else None

    described = wait_for(finished, timeout=30, what="the execution ended")
    assert deaths == list(range(1, MAX_RECEIVES + 1))
    assert described["status"] == "FAILED" and described["error"] == "JobsUnavailableError"
    [message] = [m for m in dead_letters(stack) if tenant in m["Body"]]
    job = jobs.store_for(Settings.from_env()).get(derived_job_id(json.loads(message["Body"])["task_token"]))
    assert job is not None and job.status == "failed" and job.exhausted and job.notified_at is not None
    assert job.attempts == 0 and "did not finish" in (job.error or {})["message"]
    dead_letters(stack, delete=lambda m: tenant in m["Body"])
