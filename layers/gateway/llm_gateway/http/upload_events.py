"""S3 uploads as entry points: one ``ObjectCreated`` record of the documents bucket, run through its
operation, with the outcome written next to the document (see ``operations.extraction_uploads`` and
``operations.summary_uploads`` for the objects and their states).

Writing the outcome may raise: the invocation then fails and Lambda retries the event, then sends it to
the on-failure destination (template.yaml), so an upload is never dropped silently.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes.s3_event import S3EventRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from llm_gateway.errors import DeadlineExceededError, GatewayError
from llm_gateway.http import framing
from llm_gateway.http.events import direct_context
from llm_gateway.interfaces import RequestContext
from llm_gateway.operations.extraction import DOCUMENT_SCOPE_TAG
from llm_gateway.wiring import services

Run = Callable[[dict[str, Any], RequestContext], dict[str, Any]]
TRUSTED = {DOCUMENT_SCOPE_TAG: "bucket"}  # IAM-authorised entry points may read any document in the bucket


def object_of(record: S3EventRecord) -> tuple[str, str]:
    """(bucket, key) of a notification; keys arrive URL-encoded."""
    return record.s3.bucket.name, unquote_plus(record.s3.get_object.key)


def extract_upload(record: S3EventRecord, context: LambdaContext, run: Run, logger: Logger, metrics: Metrics) -> str:
    bucket, key = object_of(record)
    if key.endswith("/"):
        return "skipped"  # a "folder" placeholder, not a document
    from llm_gateway.operations import extraction_uploads as uploads  # each function imports its own

    upload = uploads.Upload(bucket=bucket, key=key)
    started = uploads.now_iso()
    request_id = getattr(context, "aws_request_id", "") or ""
    schema: str | None = None
    try:
        schema = uploads.schema_from_key(key)
        ctx = direct_context("extraction", uploads.UPLOAD_TENANT, context, tags=TRUSTED)
        result = run({"s3": {"bucket": bucket, "key": key}, "schema": schema}, ctx)
    except GatewayError as err:
        current = services()
        job = uploads.hand_over(upload, schema, err, request_id=request_id, services=current) if schema else None
        status: uploads.ErrorStatus = "retrying" if job is not None else "failed"
        job_id = job.job_id if job is not None else None
        max_attempts = current.settings.job_max_receives
        uploads.write_error(
            upload, err, started=started, status=status, schema=schema, job_id=job_id,
            attempt=0 if job else None, max_attempts=max_attempts,
        )  # fmt: skip
        logger.warning(
            "document extraction failed",
            key=key,
            code=err.code,
            attempts=len(err.attempts),
            status=status,
            job_id=job_id,
        )
        metric = "ExtractionFailures" if job is None else "ExtractionRetries"
        metrics.add_metric(name=metric, unit=MetricUnit.Count, value=1)
        return status
    except Exception as exc:  # a bug or an AWS failure: still leave a trace next to the document
        logger.error("document extraction crashed", key=key)
        # Type and place only: the message may quote the document.
        framing.log_unexpected(logger, exc, log_prompts=services().settings.log_prompts)
        uploads.write_crash(upload, exc, started=started, schema=schema)
        metrics.add_metric(name="ExtractionFailures", unit=MetricUnit.Count, value=1)
        return "failed"
    uploads.write_result(upload, result, started=started)
    return "extracted"


def summarize_upload(record: S3EventRecord, context: LambdaContext, run: Run, logger: Logger, metrics: Metrics) -> str:
    from llm_gateway.jobs.submit import submit
    from llm_gateway.operations import summary_uploads as uploads  # each function imports its own

    bucket, key = object_of(record)
    if not uploads.is_upload_key(key):
        return "skipped"  # a "folder" placeholder, or not ours
    upload = uploads.Upload(bucket=bucket, key=key)
    started = uploads.now_iso()
    payload = {"s3": {"bucket": bucket, "key": key}}
    try:
        ctx = direct_context("summarization", uploads.UPLOAD_TENANT, context, tags=TRUSTED)
        try:
            result = run(payload, ctx)
        except DeadlineExceededError as err:
            if not services().jobs_configured:
                raise
            # The job continues from the cached calls and writes the result objects when it ends.
            job = submit(
                "summarization", payload, tenant=uploads.UPLOAD_TENANT, source=uploads.UPLOAD_JOB_SOURCE,
                request_id=ctx.request_id, store=services().job_store(), defer=ctx.defer,
            )  # fmt: skip
            logger.info("document summary handed to a job", key=key, job_id=job.job_id, progress=err.details)
            metrics.add_metric(name="DeferredSummaries", unit=MetricUnit.Count, value=1)
            return "deferred"
    except GatewayError as err:
        uploads.write_error(upload, err, started=started)
        logger.warning("document summary failed", key=key, code=err.code, attempts=len(err.attempts))
        return "failed"
    except Exception as exc:  # a bug or an AWS failure: still leave a trace next to the document
        logger.error("document summary crashed", key=key)
        framing.log_unexpected(logger, exc, log_prompts=services().settings.log_prompts)
        uploads.write_crash(upload, exc, started=started)
        return "failed"
    uploads.write_result(upload, result, started=started)
    return "degraded" if result["degraded"] else "summarized"
