"""Summarization function: POST /v1/summaries, S3 uploads under incoming/summarize/, direct invocation.

Thin: the edge (``llm_gateway.http``) reads, validates and answers; the ``summarization`` operation does
the work. Over HTTP a document that cannot be summarized before API Gateway's 29 s is planned ahead and
becomes a job (202); uploads and direct invocations work until their time is up, then hand over to a job
that continues from the cached calls (a direct invocation then answers ``{"object": "job", "id", ...}``).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.data_classes.s3_event import S3EventRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from llm_gateway.errors import DeadlineExceededError
from llm_gateway.http import events, key_checks, observe, upload_events
from llm_gateway.http.edge import HttpEdge
from llm_gateway.interfaces import RequestContext
from llm_gateway.operations.summarization.operation import run_summary
from llm_gateway.operations.summarization.request import SummaryRequest
from llm_gateway.runtime import run_sync
from llm_gateway.wiring import services

edge = HttpEdge(document_paths=["/v1/summaries"])
app, logger, metrics = edge.app, edge.logger, edge.metrics


def summarize(payload: dict[str, Any], ctx: RequestContext, *, plan_ahead: bool = False) -> dict[str, Any]:
    if ctx.log_prompts:
        logger.info("summarization input", payload=payload)
    result = run_sync(run_summary(payload, ctx, services(), plan_ahead=plan_ahead))
    observe.summary(logger, metrics, result, tenant=ctx.tenant, ctx=ctx)
    return result


@edge.post("/v1/summaries", summary="Summary of a document of any length", tags=["documents"])
def summaries(body: SummaryRequest) -> Response[str]:
    payload = edge.body()  # as sent: the operation (or a job) validates its own input
    config = services().settings
    return edge.serve(
        "summarization",
        job_input=lambda: payload,
        run=lambda ctx: summarize(payload, ctx, plan_ahead=True),
        answer=lambda result: (result, observe.result_headers(result)),
        limits=(
            key_checks.requested_names(payload, config.default_tier),
            key_checks.document_tokens(payload, config.default_max_tokens),
        ),
        spent=key_checks.result_tokens,
        deadline_to_job=True,
    )


def direct(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Step Functions (or any IAM caller) sends the ``/v1/summaries`` body as the event."""
    payload = dict(event)
    tenant = events.direct_tenant(payload)
    ctx = events.direct_context("summarization", tenant, context, tags=upload_events.TRUSTED)
    try:
        return summarize(payload, ctx)
    except DeadlineExceededError as err:
        if not services().jobs_configured:
            raise
        return events.hand_over(logger, metrics, "summarization", payload, ctx, err)


def on_upload(record: S3EventRecord, context: LambdaContext) -> str:
    return upload_events.summarize_upload(record, context, summarize, logger, metrics)


lambda_handler = events.lambda_handler(edge, direct=direct, uploads=on_upload)
