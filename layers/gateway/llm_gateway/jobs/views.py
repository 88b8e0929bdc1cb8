"""The caller's view of a job (``GET /v1/jobs/{id}``), and how large its answer is once encoded."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from llm_gateway.jobs.model import Job, compact_json
from llm_gateway.jobs.store import PRESIGNED_URL_TTL_S, JobStore

# A GET answers the result inline up to this many bytes of response body as Lambda sends it (its limit is
# 6 MB for the whole proxy response); larger results are answered with a presigned S3 URL instead.
MAX_RESPONSE_BODY_BYTES = 4_000_000


def encode_body(body: Mapping[str, Any]) -> str:
    """A JSON answer as the jobs function sends it (UTF-8, not \\u-escaped: CJK text stays 3 bytes a char)."""
    return compact_json(body)


def response_body_bytes(body: Mapping[str, Any]) -> int:
    """What ``body`` weighs in Lambda's response: the text of ``encode_body`` inside the proxy response's
    JSON, quotes and backslashes escaped, and counted as if every non-ASCII character were escaped too
    (the worst case of the runtime's serialiser)."""
    return len(json.dumps(encode_body(body)))


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
