"""What the two upload pipelines (``summary_uploads``, ``extraction_uploads``) share: whose uploads they
are, how a job names its source, and writing JSON objects next to an uploaded document."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from llm_gateway import aws
from llm_gateway.errors import GatewayError

UPLOAD_TENANT = "documents"  # usage (and cached answers) of uploads are this tenant's
UPLOAD_JOB_SOURCE: Final = "s3"  # the job source of an upload handed over to the job queue


@dataclass(frozen=True)
class UploadedDocument:
    """An uploaded document; each pipeline's subclass names the objects it writes next to it."""

    bucket: str
    key: str

    def describe(self) -> dict[str, str]:
        return {"source_bucket": self.bucket, "source_key": self.key}


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def error_record(err: GatewayError) -> dict[str, Any]:
    return {
        "error": {**err.to_dict(), "retryable": err.retryable},
        "attempts": [a.model_dump(mode="json") for a in err.attempts],
        "cost_usd": round(sum(a.cost_usd for a in err.attempts), 10),
    }


def put_json(bucket: str, key: str, body: dict[str, Any]) -> None:
    put(bucket, key, json.dumps(body, ensure_ascii=False, indent=2).encode("utf-8"), "application/json")


def put(bucket: str, key: str, body: bytes, content_type: str) -> None:
    aws.s3().put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)


def gave_up_upload(
    job: Any, payload: Mapping[str, Any], is_upload_key: Callable[[str], bool], bucket: str | None
) -> tuple[str, str] | None:
    """(bucket, key) of the uploaded document a job the worker gave up on was working on; None when the
    job is not an upload's (only our own code submits source ``s3`` jobs for the uploads tenant)."""
    s3 = payload.get("s3")
    key = s3.get("key") if isinstance(s3, dict) else None
    if job.source != UPLOAD_JOB_SOURCE or job.tenant != UPLOAD_TENANT or not bucket or not isinstance(key, str):
        return None
    return (bucket, key) if is_upload_key(key) else None
