"""Documents uploaded to be extracted: where their results and errors go, and retrying them later.

``incoming/extract/<schema>/<path>`` in the documents bucket gives ``results/extract/<schema>/<path>.json``
(the result with its source key, schema, model and cost) or ``errors/extract/<schema>/<path>.json``; the
uploaded document is never moved or deleted.

A failure that waiting may fix (rate limits, provider outages, timeouts: ``retryable``) is not final:
the extraction function hands the upload to the job queue (an ``extraction`` job with source ``s3``) and
writes an error object that says so::

    {"status": "retrying", "job_id": "job_...", "attempt": 0, "max_attempts": 5, "error": {...}, ...}

Each job attempt that fails again rewrites it (``attempt`` counts them). The attempt that succeeds writes
the result object and marks the error object ``"status": "resolved"`` (with the result key: the bucket
keeps no stale failure, and no delete permission is needed). The last allowed attempt, or a failure
that retrying cannot fix, leaves ``"status": "failed"``; so does any failure when this deployment has no
job queue or the job could not be queued. If even the error object cannot be written, the invocation
fails: Lambda retries the S3 event, then sends it to the function's on-failure destination
(``ExtractionFailuresQueue`` in template.yaml), so no upload is dropped silently.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from llm_gateway.errors import GatewayError, InvalidRequestError
from llm_gateway.interfaces import RequestContext
from llm_gateway.jobs.model import Job
from llm_gateway.jobs.store import MAX_SQS_DELAY_S
from llm_gateway.jobs.submit import submit
from llm_gateway.operations.upload_outputs import (
    UPLOAD_JOB_SOURCE as UPLOAD_JOB_SOURCE,  # re-exported: callers name it here
)
from llm_gateway.operations.upload_outputs import UPLOAD_TENANT as UPLOAD_TENANT
from llm_gateway.operations.upload_outputs import UploadedDocument, error_record, gave_up_upload, put_json
from llm_gateway.operations.upload_outputs import now_iso as now_iso

if TYPE_CHECKING:
    from llm_gateway.wiring import Services

log = logging.getLogger("llm_gateway.operations.extraction_uploads")

INPUT_PREFIX = "incoming/extract/"
RESULTS_PREFIX = "results/extract/"
ERRORS_PREFIX = "errors/extract/"
OPERATION = "extraction"

ErrorStatus = Literal["retrying", "failed"]


@dataclass(frozen=True)
class Upload(UploadedDocument):
    @property
    def result_key(self) -> str:
        return output_keys(self.key)[0]

    @property
    def error_key(self) -> str:
        return output_keys(self.key)[1]


def is_upload_key(key: str) -> bool:
    return key.startswith(INPUT_PREFIX) and not key.endswith("/")  # a "folder" placeholder is no document


def output_keys(source_key: str) -> tuple[str, str]:
    """(result key, error key) for an uploaded document's key."""
    relative = source_key.removeprefix(INPUT_PREFIX)
    return f"{RESULTS_PREFIX}{relative}.json", f"{ERRORS_PREFIX}{relative}.json"


def schema_from_key(key: str) -> str:
    """``incoming/extract/<schema>/<name...>`` -> ``<schema>``."""
    schema, _, rest = key.removeprefix(INPUT_PREFIX).partition("/")
    if not key.startswith(INPUT_PREFIX) or not schema or not rest:
        raise InvalidRequestError(
            f"uploads must be named {INPUT_PREFIX}<schema>/<document>; got '{key}'", details={"key": key}
        )
    return schema


# --------------------------------------------------------------------------- outcomes


def write_result(upload: Upload, result: dict[str, Any], *, started: str, job_id: str | None = None) -> None:
    """The result object; after a retry, the error object written meanwhile is marked resolved."""
    body = {
        **upload.describe(),
        "schema": result["schema"],
        "result": result["data"],
        "provider": result["provider"],
        "model": result["model"],
        "cost_usd": result["cost_usd"],
        "usage": result["usage"],
        "asks": result["asks"],
        "attempts": result["attempts"],
        "source": result["source"],
        "extracted_at": started,
    }
    if job_id:
        body["job_id"] = job_id
    put_json(upload.bucket, upload.result_key, body)
    if job_id:
        resolved = {**upload.describe(), "status": "resolved", "job_id": job_id, "result_key": upload.result_key}
        put_json(upload.bucket, upload.error_key, {**resolved, "resolved_at": now_iso()})


def write_error(
    upload: Upload,
    err: GatewayError,
    *,
    started: str,
    status: ErrorStatus,
    schema: str | None = None,
    job_id: str | None = None,
    attempt: int | None = None,
    max_attempts: int | None = None,
) -> None:
    body: dict[str, Any] = {**upload.describe(), "status": status}
    if schema is not None:
        body["schema"] = schema
    if job_id is not None:
        body["job_id"] = job_id
    if attempt is not None:
        body.update(attempt=attempt, max_attempts=max_attempts)
    body.update(error_record(err))
    put_json(upload.bucket, upload.error_key, {**body, "failed_at": started})


def write_crash(upload: Upload, exc: BaseException, *, started: str, schema: str | None = None) -> None:
    """A bug or an AWS failure: still leave a trace next to the document (never the exception's text)."""
    error = {"code": "internal_error", "message": f"internal error: {type(exc).__name__}", "retryable": True}
    body: dict[str, Any] = {**upload.describe(), "status": "failed"}
    if schema is not None:
        body["schema"] = schema
    put_json(upload.bucket, upload.error_key, {**body, "error": error, "failed_at": started})


# --------------------------------------------------------------------------- retrying as a job


def hand_over(upload: Upload, schema: str, err: GatewayError, *, request_id: str, services: Services) -> Job | None:
    """Queue a job that retries the upload, when ``err`` may pass and this deployment has a job queue.
    None when it will not be retried (the caller records a final failure)."""
    if not err.retryable or not services.jobs_configured:
        return None
    payload = {"s3": {"bucket": upload.bucket, "key": upload.key}, "schema": schema}
    try:
        return submit(
            OPERATION,
            payload,
            tenant=UPLOAD_TENANT,
            source=UPLOAD_JOB_SOURCE,
            request_id=request_id,
            delay_s=min(services.settings.job_backoff_base_s, MAX_SQS_DELAY_S),  # the providers just failed
            store=services.job_store(),
        )
    except Exception as exc:  # the job store or queue is down: a final error object beats none at all
        log.warning(
            "could not hand the upload to the job queue", extra={"key": upload.key, "error": type(exc).__name__}
        )
        return None


def continued_upload(ctx: RequestContext, s3_key: str | None, bucket: str | None) -> Upload | None:
    """The upload a job is retrying, when ``ctx`` is such a job's (source ``s3``, set by the submitter's
    code and never taken from the payload, so a caller cannot claim it)."""
    if ctx.tags.get("job_source") != UPLOAD_JOB_SOURCE or ctx.tenant != UPLOAD_TENANT:
        return None
    if s3_key is None or bucket is None or not is_upload_key(s3_key):
        return None
    return Upload(bucket=bucket, key=s3_key)


def job_attempt(ctx: RequestContext) -> int:
    """This job attempt's number: the worker names its requests ``<job_id>#<attempt>``."""
    _, _, number = ctx.request_id.rpartition("#")
    return int(number) if number.isdigit() else 1


def job_gave_up(job: Any, payload: dict[str, Any], error: dict[str, Any], services: Services) -> None:
    """The worker gave up on an upload's job (its deliveries ran out): the error object says so."""
    if (found := gave_up_upload(job, payload, is_upload_key, services.settings.documents_bucket)) is None:
        return
    upload = Upload(*found)
    schema = payload.get("schema") if isinstance(payload.get("schema"), str) else None
    body: dict[str, Any] = {**upload.describe(), "status": "failed", "job_id": job.job_id, "error": error}
    if schema is not None:
        body["schema"] = schema
    put_json(upload.bucket, upload.error_key, {**body, "failed_at": now_iso()})
