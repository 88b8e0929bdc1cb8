"""Extraction function: POST /v1/extractions, S3 uploads under incoming/extract/<schema>/, direct invocation.

Thin: the edge (``llm_gateway.http``) reads, validates and answers; the ``extraction`` operation does the
work. Uploads give ``results/extract/<schema>/<path>.json`` or ``errors/extract/<schema>/<path>.json``
(retried as a job when the failure may pass, see ``extraction_uploads``).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.data_classes.s3_event import S3EventRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from llm_gateway.http import events, key_checks, observe, upload_events
from llm_gateway.http.edge import HttpEdge
from llm_gateway.interfaces import RequestContext
from llm_gateway.operations.extraction import ExtractionRequest, run_extraction
from llm_gateway.runtime import run_sync
from llm_gateway.wiring import services

edge = HttpEdge(document_paths=["/v1/extractions"], failure_metric="ExtractionFailures")
app, logger, metrics = edge.app, edge.logger, edge.metrics


def extract(payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
    if ctx.log_prompts:
        logger.info("extraction input", payload=payload)
    result = run_sync(run_extraction(payload, ctx, services()))
    observe.extraction(logger, metrics, result, tenant=ctx.tenant, ctx=ctx)
    return result


@edge.post("/v1/extractions", summary="Structured extraction: a JSON object valid against a schema", tags=["documents"])
def extractions(body: ExtractionRequest) -> Response[str]:
    payload = edge.body()  # as sent: the operation (or a job) validates its own input
    config = services().settings
    return edge.serve(
        "extraction",
        job_input=lambda: payload,
        run=lambda ctx: extract(payload, ctx),
        answer=lambda result: (result, observe.result_headers(result)),
        limits=(
            key_checks.requested_names(payload, config.default_tier),
            key_checks.document_tokens(payload, config.default_max_tokens),
        ),
        spent=key_checks.result_tokens,
    )


def direct(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Step Functions (or any IAM caller) sends the ``/v1/extractions`` body as the event."""
    payload = dict(event)
    tenant = events.direct_tenant(payload)
    return extract(payload, events.direct_context("extraction", tenant, context, tags=upload_events.TRUSTED))


def on_upload(record: S3EventRecord, context: LambdaContext) -> str:
    return upload_events.extract_upload(record, context, extract, logger, metrics)


lambda_handler = events.lambda_handler(edge, direct=direct, uploads=on_upload)
