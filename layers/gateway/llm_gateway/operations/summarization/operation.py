"""The ``summarization`` operation: its entry point, the document it loads, and the upload it continues."""

from __future__ import annotations

from typing import Any

from llm_gateway import aws
from llm_gateway.config import Settings
from llm_gateway.documents.html_text import html_to_text
from llm_gateway.documents.loading import read_s3_document
from llm_gateway.errors import GatewayError
from llm_gateway.http import framing as api
from llm_gateway.interfaces import RequestContext
from llm_gateway.operations import summary_uploads as uploads
from llm_gateway.operations.extraction import JOB_SOURCE_TAG, document_location, widen_scope_for_trusted_job
from llm_gateway.operations.summarization.request import SummaryRequest
from llm_gateway.operations.summarization.summarizer import Summarizer
from llm_gateway.wiring import Services


async def run_summary(
    payload: dict[str, Any], ctx: RequestContext, services: Services, *, plan_ahead: bool = False
) -> dict[str, Any]:
    """The ``summarization`` operation: a JSON-ready :class:`SummaryResult`.

    Resumable unless ``plan_ahead`` (see the module docstring). Run as a job that continues an upload
    (job source ``s3``), it also writes the upload's result objects, or its error object on a failure
    that retrying cannot fix (retryable ones are the job's to retry, ending on the dead-letter queue).
    """
    request = api.validate(SummaryRequest, payload)
    config = services.settings
    upload = _continued_upload(request, ctx, config)
    started = uploads.now_iso()
    try:
        text, source = await load_document(request, ctx, config)
        summarizer = Summarizer(
            services.gateway(),
            max_chunk_tokens=config.summary_max_chunk_tokens,
            stuff_max_tokens=config.summary_stuff_max_tokens,
            concurrency=config.summary_concurrency,
            prompt_version=config.summary_prompt_version,
        )
        result = await summarizer.summarize(text, request, ctx, plan_ahead=plan_ahead)
    except GatewayError as err:
        if upload is not None and not err.retryable:
            await aws.in_thread(uploads.write_error, upload, err, started=started, job_id=ctx.tags.get("job_id"))
        raise
    result.source = source
    output = result.model_dump(mode="json")
    if upload is not None:
        await aws.in_thread(uploads.write_result, upload, output, started=started, job_id=ctx.tags.get("job_id"))
    return output


def _continued_upload(request: SummaryRequest, ctx: RequestContext, config: Settings) -> uploads.Upload | None:
    """The upload this job finishes, if it is one. Jobs that trusted entry points handed over (an
    upload, a direct invocation, a message an IAM principal queued) keep their bucket-wide read access;
    jobs submitted over HTTP stay within their tenant's prefix. The source is set by the submitter's
    code, never taken from the payload, so a caller cannot claim it."""
    if not widen_scope_for_trusted_job(ctx):
        return None
    if (
        ctx.tags.get(JOB_SOURCE_TAG) != uploads.UPLOAD_JOB_SOURCE
        or request.s3 is None
        or not uploads.is_upload_key(request.s3.key)
    ):
        return None
    return uploads.Upload(bucket=document_location(request.s3, ctx, config).bucket, key=request.s3.key)


async def load_document(request: SummaryRequest, ctx: RequestContext, config: Settings) -> tuple[str, dict[str, Any]]:
    """The text to summarize and a description of where it came from."""
    if request.s3 is not None:
        obj = document_location(request.s3, ctx, config)
        document = await read_s3_document(obj, max_bytes=config.summary_max_document_bytes)
        return document.text, {"bucket": obj.bucket, "key": obj.key, "kind": document.kind, "pages": document.pages}
    assert request.text is not None
    if request.content_type == "html":
        return html_to_text(request.text), {"kind": "html"}
    return request.text, {"kind": request.content_type}
