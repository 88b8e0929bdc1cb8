"""Documents uploaded to be summarized: where their results and errors go, and writing them.

``incoming/summarize/<path>`` in the documents bucket gives ``results/summarize/<path>.json`` (the
result with its metadata), ``results/summarize/<path>.txt`` (the summary alone), or on failure
``errors/summarize/<path>.json``; the uploaded document is never moved or deleted. The summarization
function writes them when it finishes in the invocation the upload triggered; a document too long for
that invocation is handed to a job (source ``s3``), and the job writes them when it ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llm_gateway.errors import GatewayError
from llm_gateway.operations.upload_outputs import (
    UPLOAD_JOB_SOURCE as UPLOAD_JOB_SOURCE,  # re-exported: callers name it here
)
from llm_gateway.operations.upload_outputs import UPLOAD_TENANT as UPLOAD_TENANT
from llm_gateway.operations.upload_outputs import UploadedDocument, error_record, gave_up_upload, put, put_json
from llm_gateway.operations.upload_outputs import now_iso as now_iso

if TYPE_CHECKING:
    from llm_gateway.wiring import Services

INPUT_PREFIX = "incoming/summarize/"
RESULTS_PREFIX = "results/summarize/"
ERRORS_PREFIX = "errors/summarize/"


@dataclass(frozen=True)
class Upload(UploadedDocument):
    @property
    def result_key(self) -> str:
        return output_keys(self.key)[0]

    @property
    def text_key(self) -> str:
        return output_keys(self.key)[1]

    @property
    def error_key(self) -> str:
        return output_keys(self.key)[2]


def is_upload_key(key: str) -> bool:
    return key.startswith(INPUT_PREFIX) and not key.endswith("/")  # a "folder" placeholder is no document


def output_keys(source_key: str) -> tuple[str, str, str]:
    """(result JSON key, summary text key, error key) for an uploaded document's key."""
    relative = source_key.removeprefix(INPUT_PREFIX)
    return f"{RESULTS_PREFIX}{relative}.json", f"{RESULTS_PREFIX}{relative}.txt", f"{ERRORS_PREFIX}{relative}.json"


def write_result(upload: Upload, result: dict[str, Any], *, started: str, **extra: Any) -> None:
    """The summary text, then the JSON: whoever waits for the JSON finds the text already there."""
    put(upload.bucket, upload.text_key, str(result["summary"]).encode("utf-8"), "text/plain; charset=utf-8")
    put_json(upload.bucket, upload.result_key, {**upload.describe(), **result, **extra, "summarized_at": started})


def write_error(upload: Upload, err: GatewayError, *, started: str, **extra: Any) -> None:
    put_json(upload.bucket, upload.error_key, {**upload.describe(), **error_record(err), **extra, "failed_at": started})


def write_crash(upload: Upload, exc: BaseException, *, started: str) -> None:
    """A bug or an AWS failure: still leave a trace next to the document (never the exception's text)."""
    error = {"code": "internal_error", "message": f"internal error: {type(exc).__name__}", "retryable": True}
    put_json(upload.bucket, upload.error_key, {**upload.describe(), "error": error, "failed_at": started})


def job_gave_up(job: Any, payload: dict[str, Any], error: dict[str, Any], services: Services) -> None:
    """The worker gave up on an upload's job (its deliveries ran out): the error object says so."""
    if (found := gave_up_upload(job, payload, is_upload_key, services.settings.documents_bucket)) is None:
        return
    upload = Upload(*found)
    body = {**upload.describe(), "error": error, "job_id": job.job_id, "failed_at": now_iso()}
    put_json(upload.bucket, upload.error_key, body)
