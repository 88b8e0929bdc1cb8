"""Async jobs: the job record, its state machine, and where it lives.

A job is one DynamoDB item (``JOBS_TABLE``, key ``job_id``, TTL ``expires_at``) plus, for inputs or
results too large for an item or a queue message, one S3 object under ``jobs/<tenant>/<job_id>/``. The
item is budgeted as a whole (input + result + errors + the rest <= ``ITEM_BUDGET_BYTES``, well under
DynamoDB's 400 KB): an input that would leave no room for the errors goes to S3 when it is submitted, a
result that does not fit next to the input goes to S3 when it is stored.
Submitting puts the item (status ``queued``) and sends ``{"kind": "job", "job_id", "tenant",
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

import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from llm_gateway import after_response, aws
from llm_gateway.config import Settings, settings
from llm_gateway.errors import (
    GatewayError,
    JobNotFoundError,
    JobsUnavailableError,
    NotConfiguredError,
    PayloadTooLargeError,
)
from llm_gateway.operations import registry as operations

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

log = logging.getLogger("llm_gateway.jobs.store")

JobStatus = Literal["queued", "running", "retrying", "succeeded", "failed"]
JobSource = Literal["api", "async", "deferred", "stepfunctions", "sqs", "s3"]  # s3: an upload handed over
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed"})
# DynamoDB refuses items over 400 KB: the whole item (not each body) stays under this, with room to spare.
ITEM_BUDGET_BYTES = 350_000
MAX_ERROR_BYTES = 4_096  # an error record kept in the item (error, last_error): details dropped beyond this
ERROR_ROOM_BYTES = 2 * MAX_ERROR_BYTES + 1_024  # kept free by the input for the errors a job may collect
# A GET answers the result inline up to this many bytes of response body as Lambda sends it (its limit is
# 6 MB for the whole proxy response); larger results are answered with a presigned S3 URL instead.
MAX_RESPONSE_BODY_BYTES = 4_000_000
PRESIGNED_URL_TTL_S = 900
MAX_SQS_DELAY_S = 900

# Fields kept as JSON text in the item (no float/Decimal conversions, one attribute each).
_JSON_FIELDS = ("error", "last_error")


class JobConflictError(Exception):
    """A conditional transition lost a race (the job moved on, e.g. another delivery finished it)."""


class Job(BaseModel):
    job_id: str
    tenant: str
    operation: str
    status: JobStatus
    source: JobSource = "api"
    request_id: str = ""
    attempts: int = 0
    created_at: float
    updated_at: float
    expires_at: int
    started_at: float | None = None
    finished_at: float | None = None
    next_attempt_at: float | None = None
    payload: str | None = None  # JSON text, or payload_ref (S3 key) when large
    payload_ref: str | None = None
    result: str | None = None  # JSON text, or result_ref (S3 key) when large
    result_ref: str | None = None
    result_size: int | None = None
    error: dict[str, Any] | None = None  # final error (status failed)
    last_error: dict[str, Any] | None = None  # error of the last attempt (status retrying)
    exhausted: bool = False  # failed because receives ran out: a redrive may reopen it
    task_token: str | None = None
    notified_at: float | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def reopenable(self) -> bool:
        return self.status == "failed" and self.exhausted


def error_record(err: GatewayError) -> dict[str, Any]:
    """What a job keeps of an error: the public body plus whether retrying may help."""
    record = err.to_dict()
    record["retryable"] = err.retryable
    retry_after = getattr(getattr(err, "last_error", err), "retry_after", None)
    if retry_after:
        record["retry_after"] = retry_after
    return record


def bounded_error(error: Mapping[str, Any]) -> dict[str, Any]:
    """An error record small enough for the job item: its details dropped and message cut when too large."""
    record = dict(error)
    if _size(record) <= MAX_ERROR_BYTES:
        return record
    record.pop("details", None)
    if isinstance(record.get("message"), str):
        record["message"] = record["message"][:1_000]
    if _size(record) <= MAX_ERROR_BYTES:
        return record
    return {k: str(v)[:200] if isinstance(v, str) else v for k, v in record.items() if k in _ERROR_ESSENTIALS}


_ERROR_ESSENTIALS = ("code", "message", "retryable", "retry_after")


def new_job_id() -> str:
    return "job_" + secrets.token_hex(16)


def derived_job_id(seed: str) -> str:
    """A stable id for a job submitted straight to the queue (seeded by its task token or message id),
    so that duplicate deliveries of the submission land on the same job."""
    return "job_" + hashlib.sha256(seed.encode("utf-8")).hexdigest()[:32]


def object_prefix(tenant: str, job_id: str) -> str:
    safe_tenant = re.sub(r"[^A-Za-z0-9_.-]", "_", tenant)[:128] or "_"
    return f"jobs/{safe_tenant}/{job_id}/"


# --------------------------------------------------------------------------- item encoding


def _to_item(job: Job) -> dict[str, AttributeValueTypeDef]:
    item: dict[str, AttributeValueTypeDef] = {}
    for name, value in job.model_dump().items():
        if value is None:
            continue
        item[name] = _attr(value)
    return item


def _attr(value: Any) -> AttributeValueTypeDef:
    if isinstance(value, dict | list):
        return {"S": json.dumps(value, separators=(",", ":"))}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int | float):
        return {"N": repr(value)}
    return {"S": str(value)}


def item_bytes(job: Job) -> int:
    """The job's item size as DynamoDB counts it (names and UTF-8 values; numbers at their maximum)."""
    total = 0
    for name, attr in _to_item(job).items():
        total += len(name)
        if "S" in attr:
            total += len(str(attr["S"]).encode("utf-8"))
        elif "N" in attr:
            total += 21
        else:
            total += 1
    return total


def _from_item(item: Mapping[str, Any]) -> Job:
    data: dict[str, Any] = {}
    for name, attr in item.items():
        if "S" in attr:
            data[name] = json.loads(attr["S"]) if name in _JSON_FIELDS else attr["S"]
        elif "N" in attr:
            data[name] = float(attr["N"]) if "." in attr["N"] or "e" in attr["N"].lower() else int(attr["N"])
        elif "BOOL" in attr:
            data[name] = attr["BOOL"]
    return Job.model_validate(data)


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
    ) -> Job:
        now = self._now()
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
        )

    def create(self, job: Job, payload: Mapping[str, Any]) -> Job:
        """Store a new job with its input; raises JobConflictError if the id is taken. The input stays in
        the item only if it leaves room in the item's budget for the errors the job may collect."""
        text = _dumps(payload)
        room = ITEM_BUDGET_BYTES - ERROR_ROOM_BYTES - item_bytes(job) - len("payload")
        if len(text.encode("utf-8")) > min(self.inline_max_bytes, room):
            job = job.model_copy(update={"payload_ref": self._put_object(job, "input.json", text)})
        else:
            job = job.model_copy(update={"payload": text})
        try:
            with aws.unavailable_as_503("DynamoDB", "PutItem"):
                aws.dynamodb(aws.DURABLE).put_item(
                    TableName=self.table,
                    Item=_to_item(job),
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
        job = _from_item(item)
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

    def enqueue(self, job: Job, *, delay_s: int = 0, continuation: int = 0) -> None:
        if not self.queue_url:
            raise NotConfiguredError("async jobs need RETRY_QUEUE_URL")
        body: dict[str, Any] = {"kind": "job", "job_id": job.job_id, "tenant": job.tenant, "operation": job.operation}
        if continuation:
            body["continuation"] = continuation
        aws.sqs(aws.DURABLE).send_message(
            QueueUrl=self.queue_url,
            MessageBody=_dumps(body),
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
        text = _dumps(output)
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
        attr_values = {name: _attr(value) for name, value in values.items()}
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
        return _from_item(response["Attributes"])

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


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _size(value: Any) -> int:
    return len(_dumps(value).encode("utf-8"))


def encode_body(body: Mapping[str, Any]) -> str:
    """A JSON answer as the jobs function sends it (UTF-8, not \\u-escaped: CJK text stays 3 bytes a char)."""
    return _dumps(body)


def response_body_bytes(body: Mapping[str, Any]) -> int:
    """What ``body`` weighs in Lambda's response: the text of ``encode_body`` inside the proxy response's
    JSON, quotes and backslashes escaped, and counted as if every non-ASCII character were escaped too
    (the worst case of the runtime's serialiser)."""
    return len(json.dumps(encode_body(body)))


# --------------------------------------------------------------------------- composition


def default_store(config: Settings | None = None) -> JobStore:
    """The store for this deployment; NotConfiguredError when it has no jobs table or queue."""
    config = config or settings()
    if not config.jobs_table or not config.retry_queue_url:
        raise NotConfiguredError("async jobs are not configured here (JOBS_TABLE and RETRY_QUEUE_URL)")
    return _store(
        config.jobs_table,
        config.retry_queue_url,
        config.documents_bucket,
        config.job_inline_max_bytes,
        config.job_ttl_s,
    )


@cache
def _store(table: str, queue_url: str, bucket: str | None, inline_max: int, ttl_s: int) -> JobStore:
    return JobStore(table=table, queue_url=queue_url, bucket=bucket, inline_max_bytes=inline_max, ttl_s=ttl_s)


def configured(config: Settings | None = None) -> bool:
    config = config or settings()
    return bool(config.jobs_table and config.retry_queue_url)


def submit(
    operation: str,
    payload: Mapping[str, Any],
    *,
    tenant: str,
    source: JobSource,
    request_id: str = "",
    task_token: str | None = None,
    delay_s: int = 0,
    store: JobStore | None = None,
) -> Job:
    """Accept a job: validate it, store it (queued), queue it. Nothing is half-accepted: when queueing
    fails the job is marked failed and JobsUnavailableError (503, retryable) is raised."""
    operations.check(operation, dict(payload), tenant=tenant, source=source)
    after_response.flush()  # the job may start at once: what this invocation owes the cache lands first
    store = store or default_store()
    job = store.create(
        store.new_job(operation=operation, tenant=tenant, source=source, request_id=request_id, task_token=task_token),
        payload,
    )
    try:
        store.enqueue(job, delay_s=delay_s)
    except Exception as exc:
        log.error("could not queue job", extra={"job_id": job.job_id, "error": type(exc).__name__})
        unavailable = JobsUnavailableError("the job could not be queued; nothing was accepted, retry later")
        try:
            store.mark_failed(job, error_record(unavailable), exhausted=False)
        except Exception:
            log.exception("could not mark the unqueued job failed", extra={"job_id": job.job_id})
        raise unavailable from None
    log.info("job accepted", extra={"job_id": job.job_id, "tenant": tenant, "operation": operation, "source": source})
    return job


def view(job: Job, store: JobStore, *, max_attempts: int) -> dict[str, Any]:
    """The caller's view of a job (``GET /v1/jobs/{id}``)."""
    body: dict[str, Any] = {
        "id": job.job_id,
        "object": "job",
        "operation": job.operation,
        "status": job.status,
        "attempts": job.attempts,
        "max_attempts": max_attempts,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "expires_at": job.expires_at,
    }
    if job.status == "retrying":
        body["next_attempt_at"] = job.next_attempt_at
        body["last_error"] = job.last_error
    if job.status == "succeeded":
        body["finished_at"] = job.finished_at
        # Inline unless the answer would be too large for Lambda (judged on the encoded answer: escapes
        # can make it several times the result's own size); then a presigned URL to the S3 object.
        if not (job.result_ref and (job.result_size or 0) > MAX_RESPONSE_BODY_BYTES):
            body["result"] = store.load_result(job)
        if job.result_ref and ("result" not in body or response_body_bytes(body) > MAX_RESPONSE_BODY_BYTES):
            body.pop("result", None)
            body["result_url"] = store.result_url(job)
            body["result_url_expires_in"] = PRESIGNED_URL_TTL_S
            body["result_size"] = job.result_size
    if job.status == "failed":
        body["finished_at"] = job.finished_at
        body["error"] = job.error
    return body
