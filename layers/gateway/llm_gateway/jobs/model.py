"""The job record: its statuses, error records, ids, and its encoding as a DynamoDB item.

The item is budgeted as a whole (input + result + errors + the rest <= ``ITEM_BUDGET_BYTES``, well under
DynamoDB's 400 KB); see ``store.py`` for where each part goes.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from llm_gateway.errors import GatewayError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

JobStatus = Literal["queued", "running", "retrying", "succeeded", "failed"]
JobSource = Literal["api", "async", "deferred", "stepfunctions", "sqs", "s3"]  # s3: an upload handed over
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed"})
# DynamoDB refuses items over 400 KB: the whole item (not each body) stays under this, with room to spare.
ITEM_BUDGET_BYTES = 350_000
MAX_ERROR_BYTES = 4_096  # an error record kept in the item (error, last_error): details dropped beyond this
ERROR_ROOM_BYTES = 2 * MAX_ERROR_BYTES + 1_024  # kept free by the input for the errors a job may collect

# Fields kept as JSON text in the item (no float/Decimal conversions, one attribute each).
_JSON_FIELDS = ("error", "last_error")


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
    # The gateway key the job was submitted with (and its budget subject), for the worker's context:
    # usage by key and the key's budget hold for async work too.
    key_id: str | None = None
    key_budget: str | None = None
    # The guardrail policy the edge resolved for the submitted request (guardrails/policy.py grammar).
    guardrails: str | None = None

    def key_tags(self) -> dict[str, str]:
        tags = {"key_id": self.key_id} if self.key_id else {}
        if self.key_budget:
            tags["key_budget"] = self.key_budget
        if self.guardrails is not None:
            tags["guardrails"] = self.guardrails
        return tags

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
    if json_size(record) <= MAX_ERROR_BYTES:
        return record
    record.pop("details", None)
    if isinstance(record.get("message"), str):
        record["message"] = record["message"][:1_000]
    if json_size(record) <= MAX_ERROR_BYTES:
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


def to_item(job: Job) -> dict[str, AttributeValueTypeDef]:
    item: dict[str, AttributeValueTypeDef] = {}
    for name, value in job.model_dump().items():
        if value is None:
            continue
        item[name] = to_attribute(value)
    return item


def to_attribute(value: Any) -> AttributeValueTypeDef:
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
    for name, attr in to_item(job).items():
        total += len(name)
        if "S" in attr:
            total += len(str(attr["S"]).encode("utf-8"))
        elif "N" in attr:
            total += 21
        else:
            total += 1
    return total


def from_item(item: Mapping[str, Any]) -> Job:
    data: dict[str, Any] = {}
    for name, attr in item.items():
        if "S" in attr:
            data[name] = json.loads(attr["S"]) if name in _JSON_FIELDS else attr["S"]
        elif "N" in attr:
            data[name] = float(attr["N"]) if "." in attr["N"] or "e" in attr["N"].lower() else int(attr["N"])
        elif "BOOL" in attr:
            data[name] = attr["BOOL"]
    return Job.model_validate(data)


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def json_size(value: Any) -> int:
    return len(compact_json(value).encode("utf-8"))
