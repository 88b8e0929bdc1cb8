"""The job state machine on the real jobs table and bucket (moto server): every transition is conditional."""

from __future__ import annotations

import time

import pytest

from llm_gateway.errors import JobNotFoundError, PayloadTooLargeError
from llm_gateway.jobs.model import ITEM_BUDGET_BYTES, item_bytes
from llm_gateway.jobs.store import JobConflictError, JobStore
from local.stack import LocalStack
from tests.support.accounting import unique

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_real_aws")]

PAYLOAD = {"messages": [{"role": "user", "content": "hello"}]}
OUTAGE = {"code": "providers_unavailable", "message": "all down", "retryable": True}


@pytest.fixture
def store(local_stack: LocalStack) -> JobStore:
    # No queue: these tests move jobs by hand. A small inline limit to exercise the S3 path cheaply.
    return JobStore(
        table=local_stack.physical["JobsTable"],
        queue_url=None,
        bucket=local_stack.physical["DocumentsBucket"],
        inline_max_bytes=2_048,
    )


def create(store: JobStore, tenant: str = "", payload: dict | None = None):
    job = store.new_job(operation="completion", tenant=tenant or unique("store"), source="api")
    return store.create(job, payload or PAYLOAD)


def test_a_job_goes_queued_running_retrying_running_succeeded(store):
    job = create(store)
    assert (job.status, job.attempts) == ("queued", 0)
    running = store.claim(job)
    assert (running.status, running.attempts) == ("running", 1)
    retrying = store.mark_retrying(running, OUTAGE, time.time() + 30)
    assert retrying.status == "retrying" and retrying.last_error == OUTAGE and retrying.next_attempt_at
    again = store.claim(retrying)
    assert (again.status, again.attempts, again.next_attempt_at) == ("running", 2, None)
    done = store.mark_succeeded(again, store.store_result(again, {"content": "hi"}))
    assert done.status == "succeeded" and done.last_error is None and done.finished_at
    assert store.load_result(done) == {"content": "hi"} and store.load_payload(done) == PAYLOAD
    assert store.get(job.job_id) == done

    # Finished is final: no delivery can restart, fail or re-finish it.
    for move in (
        store.claim,
        lambda j: store.mark_failed(j, OUTAGE, exhausted=True),
        lambda j: store.mark_succeeded(j, {"result": "{}"}),
        lambda j: store.mark_retrying(j, OUTAGE, 0),
    ):
        with pytest.raises(JobConflictError):
            move(done)
    assert store.get(job.job_id) == done


def test_only_a_running_job_can_succeed_or_retry(store):
    job = create(store)
    with pytest.raises(JobConflictError):
        store.mark_succeeded(job, {"result": "{}"})
    with pytest.raises(JobConflictError):
        store.mark_retrying(job, OUTAGE, 0)


def test_a_final_failure_stays_failed_but_an_exhausted_one_can_be_reopened(store):
    final = store.mark_failed(
        store.claim(create(store)), {"code": "invalid_request", "retryable": False}, exhausted=False
    )
    assert final.status == "failed" and not final.reopenable
    with pytest.raises(JobConflictError):
        store.claim(final)

    exhausted = store.mark_failed(store.claim(create(store)), OUTAGE, exhausted=True)
    assert exhausted.reopenable
    reopened = store.claim(exhausted)  # a redriven message
    assert (reopened.status, reopened.attempts, reopened.error, reopened.exhausted) == ("running", 2, None, False)


def test_an_outcome_that_exists_after_all_overrides_only_an_exhausted_failure(store):
    running = store.claim(create(store))
    stored = store.store_result(running, {"content": "late"})
    store.mark_failed(running, OUTAGE, exhausted=True)  # the last delivery gave up while this one ran
    done = store.mark_succeeded(running, stored)
    assert (done.status, done.error, done.exhausted) == ("succeeded", None, False)
    assert store.load_result(done) == {"content": "late"}

    final = store.claim(create(store))
    store.mark_failed(final, {"code": "invalid_request", "retryable": False}, exhausted=False)
    with pytest.raises(JobConflictError):
        store.mark_succeeded(final, stored)


def test_a_crashed_attempt_can_be_claimed_again(store):
    running = store.claim(create(store))
    assert store.claim(running).attempts == 2  # its message came back after the visibility timeout


def test_transitions_check_the_tenant_and_ids_are_unique(store):
    job = create(store)
    with pytest.raises(JobConflictError):
        store.claim(job.model_copy(update={"tenant": "someone-else"}))
    with pytest.raises(JobConflictError):
        store.create(job, PAYLOAD)
    assert store.get(job.job_id) == job


def test_reads_are_tenant_scoped(store):
    job = create(store)
    assert store.get_for_tenant(job.job_id, job.tenant) == job
    for job_id, tenant in ((job.job_id, "someone-else"), ("job_" + "f" * 32, job.tenant), ("bogus", job.tenant)):
        with pytest.raises(JobNotFoundError):
            store.get_for_tenant(job_id, tenant)


def test_large_inputs_and_results_live_in_s3(store, local_stack):
    tenant = unique("big")
    payload = {"messages": [{"role": "user", "content": "x" * 5_000}]}
    job = create(store, tenant, payload)
    assert job.payload is None and job.payload_ref == f"jobs/{tenant}/{job.job_id}/input.json"
    assert store.load_payload(store.get(job.job_id)) == payload
    running = store.claim(job)
    stored = store.store_result(running, {"content": "y" * 5_000})
    done = store.mark_succeeded(running, stored)
    assert done.result is None and done.result_ref == f"jobs/{tenant}/{job.job_id}/result.json"
    assert store.load_result(done) == {"content": "y" * 5_000}
    s3 = local_stack.client("s3")
    assert s3.head_object(Bucket=store.bucket, Key=done.result_ref)["ContentLength"] == done.result_size


def test_large_inputs_need_a_bucket(local_stack):
    store = JobStore(table=local_stack.physical["JobsTable"], queue_url=None, bucket=None, inline_max_bytes=1_024)
    with pytest.raises(PayloadTooLargeError):
        create(store, payload={"messages": [{"role": "user", "content": "x" * 2_000}]})


def test_an_expired_job_is_gone_even_before_dynamodb_deletes_it(local_stack):
    table = local_stack.physical["JobsTable"]
    old = JobStore(table=table, queue_url=None, bucket=None, ttl_s=60, clock=lambda: time.time() - 3_600)
    job = create(old)
    assert JobStore(table=table, queue_url=None, bucket=None).get(job.job_id) is None


def test_a_task_is_notified_once(store):
    job = store.mark_failed(store.claim(create(store)), OUTAGE, exhausted=True)
    assert store.mark_notified(job).notified_at is not None
    with pytest.raises(JobConflictError):
        store.mark_notified(job)


# --------------------------------------------------------------------------- the item's 400 KB


@pytest.fixture
def roomy_store(local_stack: LocalStack) -> JobStore:
    """The deployment's limits: bodies up to 250 KB each may stay in the item, if the item has room."""
    return JobStore(
        table=local_stack.physical["JobsTable"], queue_url=None, bucket=local_stack.physical["DocumentsBucket"]
    )


def test_input_and_result_share_one_item_budget(roomy_store):
    store = roomy_store
    # Each fits the per-body limit; together they would be ~480 KB, over DynamoDB's 400 KB item limit.
    payload = {"messages": [{"role": "user", "content": "x" * 240_000}]}
    job = create(store, payload=payload)
    assert job.payload is not None and job.payload_ref is None  # the input fits: it stays in the item
    running = store.claim(job)
    stored = store.store_result(running, {"content": "y" * 240_000})
    assert "result" not in stored and stored["result_ref"].endswith("/result.json")  # no room left: S3
    done = store.mark_succeeded(running, stored)  # real DynamoDB refused the ~480 KB item here
    assert done.status == "succeeded" and store.load_result(done) == {"content": "y" * 240_000}
    assert item_bytes(store.get(job.job_id)) <= ITEM_BUDGET_BYTES

    # A small result next to the same input still stays in the item.
    running = store.claim(create(store, payload=payload))
    assert "result" in store.store_result(running, {"content": "short"})


def test_an_input_that_leaves_no_room_for_errors_goes_to_s3_at_submit(local_stack):
    store = JobStore(  # a per-body limit above the item's budget: only the budget decides
        table=local_stack.physical["JobsTable"],
        queue_url=None,
        bucket=local_stack.physical["DocumentsBucket"],
        inline_max_bytes=1_000_000,
    )
    near_budget = {"messages": [{"role": "user", "content": "x" * (ITEM_BUDGET_BYTES - 4_000)}]}
    job = create(store, payload=near_budget)
    assert job.payload is None and job.payload_ref is not None
    # Errors are kept small whatever they carry, so the budget holds through retries and failure.
    huge_details = {**OUTAGE, "details": {"attempts": ["z" * 1_000] * 300}, "message": "m" * 50_000}
    running = store.claim(create(store, payload={"messages": [{"role": "user", "content": "x" * 300_000}]}))
    retrying = store.mark_retrying(running, huge_details, time.time() + 30)
    failed = store.mark_failed(store.claim(retrying), huge_details, exhausted=True)
    assert "details" not in failed.error and len(failed.error["message"]) <= 1_000
    assert failed.error["code"] == "providers_unavailable" and failed.error["retryable"] is True
    assert item_bytes(failed) <= ITEM_BUDGET_BYTES
