"""Async jobs: where a job lives (DynamoDB item, S3 bodies, the retry queue), and its state machine.

A job is one DynamoDB item (``JOBS_TABLE``, key ``job_id``, TTL ``expires_at``) plus, for inputs or
results too large for an item or a queue message, one S3 object under ``jobs/<tenant>/<job_id>/``. The
item is budgeted as a whole (input + result + errors + the rest <= ``ITEM_BUDGET_BYTES``, well under
DynamoDB's 400 KB): an input that would leave no room for the errors goes to S3 when it is submitted, a
result that does not fit next to the input goes to S3 when it is stored.
Submitting (``submit.py``) puts the item (status ``queued``) and sends ``{"kind": "job", "job_id", "tenant",
"operation"}`` to the retry queue; the retry worker (``worker.py``) moves it on:

    queued -> running -> succeeded
                      -> retrying -> running ...     (retryable error, SQS backoff)
                      -> failed                      (non-retryable error, or receives exhausted)
    failed (exhausted) -> running                    (its message was redriven from the DLQ)
    failed (exhausted) -> succeeded                  (an outcome that exists after all: a delivery still
                                                      running, or stored before a crash, then redriven)

Every transition is a conditional write, so a stale or duplicated message cannot move a job backwards.
Payloads and results are never logged.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from llm_gateway import aws
from llm_gateway.config import Settings
from llm_gateway.errors import JobNotFoundError, NotConfiguredError, PayloadTooLargeError
from llm_gateway.jobs.model import (
    ERROR_ROOM_BYTES,
    ITEM_BUDGET_BYTES,
    Job,
    JobSource,
    bounded_error,
    compact_json,
    from_item,
    item_bytes,
    new_job_id,
    object_prefix,
    to_attribute,
    to_item,
)

PRESIGNED_URL_TTL_S = 900
MAX_SQS_DELAY_S = 900


class JobConflictError(Exception):
    """A conditional transition lost a race (the job moved on, e.g. another delivery finished it)."""


# --------------------------------------------------------------------------- the store


class JobStore:
    """Job items in DynamoDB, large bodies in S3, job messages on the retry queue."""

    def __init__(
        self,
        *,
        table: str,
        queue_url: str | None,
        bucket: str | None,
        inline_max_bytes: int = 250_000,
        ttl_s: int = 14 * 86_400,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.table = table
        self.queue_url = queue_url
        self.bucket = bucket
        self.inline_max_bytes = inline_max_bytes
        self.ttl_s = ttl_s
        self.clock = clock

    # ---- create and read

    def new_job(
        self,
        *,
        operation: str,
        tenant: str,
        source: JobSource,
        request_id: str = "",
        task_token: str | None = None,
        job_id: str | None = None,
        key_tags: Mapping[str, str] | None = None,
    ) -> Job:
        now = self._now()
        tags = key_tags or {}
        return Job(
            job_id=job_id or new_job_id(),
            tenant=tenant,
            operation=operation,
            status="queued",
            source=source,
            request_id=request_id,
            created_at=now,
            updated_at=now,
            expires_at=int(now) + self.ttl_s,
            task_token=task_token,
            key_id=tags.get("key_id"),
            key_budget=tags.get("key_budget"),
            guardrails=tags.get("guardrails"),
        )

    def create(self, job: Job, payload: Mapping[str, Any]) -> Job:
        """Store a new job with its input; raises JobConflictError if the id is taken. The input stays in
        the item only if it leaves room in the item's budget for the errors the job may collect."""
        text = compact_json(payload)
        room = ITEM_BUDGET_BYTES - ERROR_ROOM_BYTES - item_bytes(job) - len("payload")
        if len(text.encode("utf-8")) > min(self.inline_max_bytes, room):
            job = job.model_copy(update={"payload_ref": self._put_object(job, "input.json", text)})
        else:
            job = job.model_copy(update={"payload": text})
        try:
            with aws.unavailable_as_503("DynamoDB", "PutItem"):
                aws.dynamodb(aws.DURABLE).put_item(
                    TableName=self.table,
                    Item=to_item(job),
                    ConditionExpression="attribute_not_exists(job_id)",
                )
        except Exception as exc:
            if aws.error_code(exc) == "ConditionalCheckFailedException":
                raise JobConflictError(f"job {job.job_id} already exists") from None
            raise
        return job

    def get(self, job_id: str) -> Job | None:
        """The job, or None when unknown or past its TTL (DynamoDB deletes expired items lazily)."""
        with aws.unavailable_as_503("DynamoDB", "GetItem"):
            response = aws.dynamodb().get_item(TableName=self.table, Key={"job_id": {"S": job_id}}, ConsistentRead=True)
        item = response.get("Item")
        if not item:
            return None
        job = from_item(item)
        return None if job.expires_at <= self._now() else job

    def get_for_tenant(self, job_id: str, tenant: str) -> Job:
        """The caller's job; any other tenant's job is indistinguishable from a missing one."""
        job = self.get(job_id) if re.fullmatch(r"job_[0-9a-f]{32}", job_id) else None
        if job is None or job.tenant != tenant:
            raise JobNotFoundError(f"no job '{job_id[:64]}'", details={"param": "job_id"})
        return job

    def load_payload(self, job: Job) -> dict[str, Any]:
        text = self._get_object(job.payload_ref) if job.payload_ref else job.payload
        data = json.loads(text or "null")
        if not isinstance(data, dict):
            raise ValueError(f"job {job.job_id} has no input object")
        return data

    def load_result(self, job: Job) -> Any:
        if job.result_ref:
            return json.loads(self._get_object(job.result_ref))
        return json.loads(job.result) if job.result is not None else None

    def result_url(self, job: Job) -> str | None:
        if not job.result_ref or not self.bucket:
            return None
        url: str = aws.s3().generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": job.result_ref}, ExpiresIn=PRESIGNED_URL_TTL_S
        )
        return url

    # ---- the queue

    def enqueue(self, job: Job, *, delay_s: int = 0, continuation: int = 0, quota_waits: int = 0) -> None:
        if not self.queue_url:
            raise NotConfiguredError("async jobs need RETRY_QUEUE_URL")
        body: dict[str, Any] = {"kind": "job", "job_id": job.job_id, "tenant": job.tenant, "operation": job.operation}
        if continuation:
            body["continuation"] = continuation
        if quota_waits:
            body["quota_waits"] = quota_waits
        aws.sqs(aws.DURABLE).send_message(
            QueueUrl=self.queue_url,
            MessageBody=compact_json(body),
            DelaySeconds=max(0, min(int(delay_s), MAX_SQS_DELAY_S)),
        )

    # ---- transitions (each a conditional update returning the new job)

    def claim(self, job: Job) -> Job:
        """Start an attempt: running, attempts + 1. Allowed from queued/retrying, from running (a crashed
        attempt whose message came back) and from an exhausted failure (a redrive)."""
        return self._update(
            job,
            "SET #status = :running, #attempts = if_not_exists(#attempts, :zero) + :one, #started_at = :now, "
            "#updated_at = :now REMOVE #next_attempt_at, #error, #exhausted, #finished_at",
            "#status IN (:queued, :retrying, :running) OR (#status = :failed AND #exhausted = :true)",
            {
                ":running": "running",
                ":queued": "queued",
                ":retrying": "retrying",
                ":failed": "failed",
                ":true": True,
                ":zero": 0,
                ":one": 1,
            },
        )

    def store_result(self, job: Job, output: Any) -> dict[str, Any]:
        """Put a result where it fits: inline when it fits in what is left of the item's budget next to
        the input (``job`` is the running job, as it is stored), else S3. Returns the fields to record."""
        text = compact_json(output)
        size = len(text.encode("utf-8"))
        room = ITEM_BUDGET_BYTES - item_bytes(job) - len("result") - len("result_size") - 21
        if size > min(self.inline_max_bytes, room):
            return {"result_ref": self._put_object(job, "result.json", text), "result_size": size}
        return {"result": text, "result_size": size}

    def mark_succeeded(self, job: Job, stored: Mapping[str, Any]) -> Job:
        """Record the result. Also over an exhausted failure: a delivery may still have been running when
        the last one gave up on the job, and a result that exists is the truth."""
        sets = ", ".join(f"#{name} = :{name}" for name in stored)
        return self._update(
            job,
            f"SET #status = :succeeded, {sets}, #finished_at = :now, #updated_at = :now "
            "REMOVE #last_error, #next_attempt_at, #error, #exhausted",
            "#status = :running OR (#status = :failed AND #exhausted = :true)",
            {
                ":succeeded": "succeeded",
                ":running": "running",
                ":failed": "failed",
                ":true": True,
                **{f":{k}": v for k, v in stored.items()},
            },
        )

    def mark_retrying(self, job: Job, error: dict[str, Any], next_attempt_at: float) -> Job:
        return self._update(
            job,
            "SET #status = :retrying, #last_error = :err, #next_attempt_at = :next, #updated_at = :now",
            "#status = :running",
            {
                ":retrying": "retrying",
                ":running": "running",
                ":err": bounded_error(error),
                ":next": round(next_attempt_at, 3),
            },
        )

    def mark_failed(self, job: Job, error: dict[str, Any], *, exhausted: bool) -> Job:
        return self._update(
            job,
            "SET #status = :failed, #error = :err, #exhausted = :exhausted, #finished_at = :now, #updated_at = :now "
            "REMOVE #next_attempt_at",
            "#status IN (:queued, :running, :retrying)",
            {
                ":failed": "failed",
                ":queued": "queued",
                ":running": "running",
                ":retrying": "retrying",
                ":err": bounded_error(error),
                ":exhausted": exhausted,
            },
        )

    def mark_notified(self, job: Job) -> Job:
        return self._update(job, "SET #notified_at = :now", "attribute_not_exists(#notified_at)", {})

    def _update(self, job: Job, update: str, condition: str, values: Mapping[str, Any]) -> Job:
        condition = f"attribute_exists(#job_id) AND #tenant = :tenant AND ({condition})"
        # Every attribute goes through a #placeholder: status, error, result... are DynamoDB reserved words.
        names = {f"#{name}": name for name in re.findall(r"#(\w+)", f"{update} {condition}")}
        attr_values = {name: to_attribute(value) for name, value in values.items()}
        attr_values[":now"] = {"N": repr(round(self._now(), 3))}
        attr_values[":tenant"] = {"S": job.tenant}
        try:
            response = aws.dynamodb(aws.DURABLE).update_item(
                TableName=self.table,
                Key={"job_id": {"S": job.job_id}},
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=attr_values,
                ReturnValues="ALL_NEW",
            )
        except Exception as exc:
            if aws.error_code(exc) == "ConditionalCheckFailedException":
                raise JobConflictError(f"job {job.job_id} is no longer in a state that allows this") from None
            raise
        return from_item(response["Attributes"])

    # ---- S3 bodies

    def _put_object(self, job: Job, name: str, text: str) -> str:
        if not self.bucket:
            raise PayloadTooLargeError(
                f"this job body is larger than {self.inline_max_bytes} bytes and no DOCUMENTS_BUCKET is configured",
                details={"limit": self.inline_max_bytes},
            )
        key = object_prefix(job.tenant, job.job_id) + name
        with aws.unavailable_as_503("S3", "PutObject"):
            aws.s3(aws.DURABLE).put_object(
                Bucket=self.bucket, Key=key, Body=text.encode("utf-8"), ContentType="application/json"
            )
        return key

    def _get_object(self, key: str) -> str:
        if not self.bucket:
            raise NotConfiguredError("this job's body is in S3 but no DOCUMENTS_BUCKET is configured")
        with aws.unavailable_as_503("S3", "GetObject"):
            body = aws.s3().get_object(Bucket=self.bucket, Key=key)["Body"]
            try:
                return body.read().decode("utf-8")
            finally:
                body.close()

    def _now(self) -> float:
        return self.clock()


# --------------------------------------------------------------------------- composition


def store_for(config: Settings) -> JobStore:
    """The store these settings describe; NotConfiguredError when they have no jobs table or queue."""
    if not config.jobs_table or not config.retry_queue_url:
        raise NotConfiguredError("async jobs are not configured here (JOBS_TABLE and RETRY_QUEUE_URL)")
    return JobStore(
        table=config.jobs_table,
        queue_url=config.retry_queue_url,
        bucket=config.documents_bucket,
        inline_max_bytes=config.job_inline_max_bytes,
        ttl_s=config.job_ttl_s,
    )


def configured(config: Settings) -> bool:
    return bool(config.jobs_table and config.retry_queue_url)
