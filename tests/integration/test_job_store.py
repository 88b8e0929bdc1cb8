"""The job state machine on the real jobs table and bucket (moto server): every transition is conditional."""

from __future__ import annotations

import time

import pytest

from llm_gateway.errors import JobNotFoundError, PayloadTooLargeError
from llm_gateway.jobs import JobConflictError, JobStore
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
