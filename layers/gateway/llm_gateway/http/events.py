"""A function's Lambda entry point: API Gateway requests to the edge, S3 notifications to the upload
pipeline, anything else as a direct invocation (Step Functions or any IAM caller).

Every invocation gets the request id and Lambda context on every log line, its metrics flushed, and its
after-response work handed over. A direct invocation's failure is raised as an exception named after
its code (``rate_limited`` -> ``RateLimitedError``), which Step Functions' ``Retry``/``Catch`` match.
Direct and event invocations have the Lambda's own remaining time (HTTP requests have API Gateway's).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from llm_gateway import after_response
from llm_gateway.errors import GatewayError, InvalidRequestError
from llm_gateway.http import answers, framing
from llm_gateway.http.answers import DEFERRED_METRICS
from llm_gateway.interfaces import RequestContext
from llm_gateway.observability.tracing import trace_handler
from llm_gateway.wiring import services

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.s3_event import S3EventRecord

    from llm_gateway.http.edge import HttpEdge
    from llm_gateway.jobs.model import JobSource

DIRECT_TENANT = "stepfunctions"  # IAM callers that do not name a tenant
DIRECT_JOB_SOURCE: JobSource = "stepfunctions"  # a job a direct invocation handed over keeps that caller's trust
MAX_TENANT_CHARS = 256

Handler = Callable[[dict[str, Any], LambdaContext], Any]
DirectInvocation = Callable[[dict[str, Any], LambdaContext], dict[str, Any]]
UploadHandler = Callable[["S3EventRecord", LambdaContext], str]  # one record -> its outcome ("extracted"...)


def lambda_handler(
    edge: HttpEdge,
    *,
    direct: DirectInvocation | None = None,
    uploads: UploadHandler | None = None,
    defer_after_response: bool = True,
) -> Handler:
    def handle(event: dict[str, Any], context: LambdaContext) -> Any:
        if not isinstance(event, dict):
            raise framing.named_error(InvalidRequestError("the event must be a JSON object"))
        if "httpMethod" in event and "requestContext" in event:
            return edge.resolve(event, context)
        if uploads is not None and is_s3_event(event):
            return on_s3_event(event, context, uploads)
        if direct is None:
            raise framing.named_error(InvalidRequestError("this function takes API Gateway requests only"))
        try:
            return direct(event, context)
        except GatewayError as err:
            raise framing.named_error(err) from None

    # The event itself is never logged: it holds the prompt.
    inject = edge.logger.inject_lambda_context(
        log_event=False, correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True
    )
    wrapped: Handler = trace_handler(edge.metrics.log_metrics(inject(handle)))  # X-Ray when Tracing is on
    return after_response.handler(wrapped) if defer_after_response else wrapped


# --------------------------------------------------------------------------- direct invocation


def direct_tenant(payload: dict[str, Any]) -> str:
    """Take the tenant an IAM-authorised caller names (usage and budgets are kept per tenant) out of the
    payload; 400 naming ``tenant`` when it is not a short printable string."""
    value = payload.pop("tenant", None)
    if value is None:
        return DIRECT_TENANT
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_TENANT_CHARS or not value.isprintable():
        raise framing.invalid(
            "tenant", f"must be a non-empty string of printable characters, at most {MAX_TENANT_CHARS}"
        )
    return value


def direct_context(
    operation: str, tenant: str, context: LambdaContext | None, *, tags: Mapping[str, str] | None = None
) -> RequestContext:
    """The context of a direct or event invocation: the Lambda's own remaining time."""
    remaining = context.get_remaining_time_in_millis() if context is not None else None
    return answers.request_context(
        operation,
        tenant=tenant,
        request_id=getattr(context, "aws_request_id", "") or "",
        remaining_ms=remaining,
        tags=tags,
    )


def hand_over(
    logger: Logger, metrics: Metrics, operation: str, payload: dict[str, Any], ctx: RequestContext, err: GatewayError
) -> dict[str, Any]:
    """Queue a direct invocation's work that ran out of time as a job (it keeps the caller's trust and
    continues from the cached calls); the answer is a job reference instead of a result."""
    from llm_gateway.jobs.submit import submit  # only the functions that hand work over pay for it

    job = submit(
        operation,
        payload,
        tenant=ctx.tenant,
        source=DIRECT_JOB_SOURCE,
        request_id=ctx.request_id,
        store=services().job_store(),
        defer=ctx.defer,
    )
    logger.info(f"{operation} handed to a job", tenant=ctx.tenant, job_id=job.job_id, progress=err.details)
    metrics.add_metric(name=DEFERRED_METRICS.get(operation, "DeferredRequests"), unit=MetricUnit.Count, value=1)
    return {
        "id": job.job_id,
        "object": "job",
        "status": job.status,
        "operation": job.operation,
        "deferred_because": err.to_dict(),
    }


# --------------------------------------------------------------------------- S3 notifications


def is_s3_event(event: Mapping[str, Any]) -> bool:
    records = event.get("Records")
    return (
        isinstance(records, list)
        and bool(records)
        and all(isinstance(r, dict) and r.get("eventSource") == "aws:s3" for r in records)
    )


def on_s3_event(event: dict[str, Any], context: LambdaContext, handle: UploadHandler) -> dict[str, int]:
    """Each created object through ``handle`` (Powertools' S3 event data classes); the count of each outcome."""
    from aws_lambda_powertools.utilities.data_classes.s3_event import S3Event  # only S3-triggered functions

    outcomes: dict[str, int] = {}
    for record in S3Event(event).records:
        if not record.event_name.startswith("ObjectCreated"):
            continue
        outcome = handle(record, context)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes
