"""Documents uploaded to be summarized: where their results and errors go, and writing them.

``incoming/summarize/<path>`` in the documents bucket gives ``results/summarize/<path>.json`` (the
result with its metadata), ``results/summarize/<path>.txt`` (the summary alone), or on failure
``errors/summarize/<path>.json``; the uploaded document is never moved or deleted. The summarization
function writes them when it finishes in the invocation the upload triggered; a document too long for
that invocation is handed to a job (source ``s3``), and the job writes them when it ends.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import aws
from .config import settings
from .errors import GatewayError

INPUT_PREFIX = "incoming/summarize/"
RESULTS_PREFIX = "results/summarize/"
ERRORS_PREFIX = "errors/summarize/"
UPLOAD_TENANT = "documents"  # usage (and cached calls) of uploads are this tenant's
UPLOAD_JOB_SOURCE = "s3"  # the job source of an upload handed over to the job queue


@dataclass(frozen=True)
class Upload:
    bucket: str
    key: str

    @property
    def result_key(self) -> str:
        return output_keys(self.key)[0]

    @property
    def text_key(self) -> str:
        return output_keys(self.key)[1]

    @property
    def error_key(self) -> str:
        return output_keys(self.key)[2]

    def describe(self) -> dict[str, str]:
        return {"source_bucket": self.bucket, "source_key": self.key}


def is_upload_key(key: str) -> bool:
    return key.startswith(INPUT_PREFIX) and not key.endswith("/")  # a "folder" placeholder is no document


def output_keys(source_key: str) -> tuple[str, str, str]:
    """(result JSON key, summary text key, error key) for an uploaded document's key."""
    relative = source_key.removeprefix(INPUT_PREFIX)
    return f"{RESULTS_PREFIX}{relative}.json", f"{RESULTS_PREFIX}{relative}.txt", f"{ERRORS_PREFIX}{relative}.json"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_result(upload: Upload, result: dict[str, Any], *, started: str, **extra: Any) -> None:
    """The summary text, then the JSON: whoever waits for the JSON finds the text already there."""
    _put(upload.bucket, upload.text_key, str(result["summary"]).encode("utf-8"), "text/plain; charset=utf-8")
    _put_json(upload.bucket, upload.result_key, {**upload.describe(), **result, **extra, "summarized_at": started})


def write_error(upload: Upload, err: GatewayError, *, started: str, **extra: Any) -> None:
    _put_json(
        upload.bucket, upload.error_key, {**upload.describe(), **error_record(err), **extra, "failed_at": started}
    )


def write_crash(upload: Upload, exc: BaseException, *, started: str) -> None:
    """A bug or an AWS failure: still leave a trace next to the document (never the exception's text)."""
    error = {"code": "internal_error", "message": f"internal error: {type(exc).__name__}", "retryable": True}
    _put_json(upload.bucket, upload.error_key, {**upload.describe(), "error": error, "failed_at": started})


def error_record(err: GatewayError) -> dict[str, Any]:
    return {
        "error": {**err.to_dict(), "retryable": err.retryable},
        "attempts": [a.model_dump(mode="json") for a in err.attempts],
        "cost_usd": round(sum(a.cost_usd for a in err.attempts), 10),
    }


def _put_json(bucket: str, key: str, body: dict[str, Any]) -> None:
    _put(bucket, key, json.dumps(body, ensure_ascii=False, indent=2).encode("utf-8"), "application/json")


def _put(bucket: str, key: str, body: bytes, content_type: str) -> None:
    aws.s3().put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)


def job_gave_up(job: Any, payload: dict[str, Any], error: dict[str, Any]) -> None:
    """The worker gave up on an upload's job (its deliveries ran out): the error object says so."""
    key = (payload.get("s3") or {}).get("key") if isinstance(payload.get("s3"), dict) else None
    bucket = settings().documents_bucket
    if job.source != UPLOAD_JOB_SOURCE or job.tenant != UPLOAD_TENANT or not bucket or not isinstance(key, str):
        return
    if not is_upload_key(key):
        return
    upload = Upload(bucket=bucket, key=key)
    _put_json(
        bucket, upload.error_key, {**upload.describe(), "error": error, "job_id": job.job_id, "failed_at": now_iso()}
    )
