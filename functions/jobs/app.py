"""Jobs function: the async job API, and job submission by direct invocation.

* ``POST /v1/jobs`` ``{"operation": "completion" | "extraction" | ..., "input": {...}}``: ``202`` with the
  job id and ``Location: /v1/jobs/{id}``. The input is validated now, not when the job runs.
* ``GET /v1/jobs/{job_id}``: the caller's own job (another tenant's answers 404, like a missing one).
* Direct invocation (Step Functions ``lambda:invoke.waitForTaskToken``, or any IAM caller):
  ``{"operation", "input", "tenant"?, "task_token"?}`` returns ``{"id", "status", ...}``; the worker
  completes the task when the job ends. Task tokens are accepted here only, never over HTTP: a tenant
  must not make this stack complete someone else's task.

Its own function so that reading job status costs no provider setup and needs no provider keys.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from llm_gateway.errors import GatewayError, InvalidRequestError
from llm_gateway.http import framing as api
from llm_gateway.http import prefer as job_http
from llm_gateway.jobs.views import encode_body, view
from llm_gateway.operations import registry
from llm_gateway.wiring import services

logger = Logger()
app = APIGatewayRestResolver()

DIRECT_TENANT = "stepfunctions"  # IAM callers that do not name a tenant


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    operation: str = Field(min_length=1, max_length=64)
    input: dict[str, Any]


class DirectJobRequest(JobRequest):
    tenant: str = Field(default=DIRECT_TENANT, min_length=1, max_length=256)
    task_token: str | None = Field(default=None, min_length=1, max_length=2048)


@app.post("/v1/jobs")
def create_job() -> Response[str]:
    event = app.current_event
    tenant = api.tenant_from_request_context(event.raw_event.get("requestContext"))
    data = api.parse_json_body(api.read_body(event.raw_event), max_bytes=services().settings.max_body_bytes)
    request = api.validate(JobRequest, data)
    job = registry.accept_job(
        services(), request.operation, request.input, tenant=tenant, source="api", request_id=_request_id()
    )
    status, body, headers = job_http.accepted(event.raw_event, job)
    return _json(status, body, headers)


@app.get("/v1/jobs/<job_id>")
def get_job(job_id: str) -> Response[str]:
    tenant = api.tenant_from_request_context(app.current_event.raw_event.get("requestContext"))
    store = services().job_store()
    job = store.get_for_tenant(job_id, tenant)
    return _json(
        200, view(job, store, max_attempts=services().settings.job_max_receives), {"cache-control": "no-store"}
    )


@app.exception_handler(GatewayError)
def gateway_error(err: GatewayError) -> Response[str]:
    if err.http_status >= 500:
        logger.warning("job request failed", code=err.code, error=err.message)
    return _json(err.http_status, api.error_body(err), {})


@app.exception_handler(Exception)
def unexpected_error(err: Exception) -> Response[str]:
    api.log_unexpected(logger, err, log_prompts=services().settings.log_prompts)
    return _json(500, {"error": {"code": "internal_error", "message": "internal error"}}, {})


@app.not_found
def not_found(_: Exception) -> Response[str]:
    return _json(404, {"error": {"code": "not_found", "message": f"no route for {app.current_event.path}"}}, {})


def _json(status: int, body: dict[str, Any], headers: dict[str, str]) -> Response[str]:
    return Response(
        status_code=status,
        content_type="application/json",
        body=encode_body(body),  # what view measured against Lambda's response limit
        headers={**headers, "x-request-id": _request_id()},
    )


def _request_id() -> str:
    return str(app.current_event.request_context.request_id or "")


def _direct_invocation(event: dict[str, Any], context: LambdaContext | None) -> dict[str, Any]:
    try:
        request = api.validate(DirectJobRequest, event)
        job = registry.accept_job(
            services(),
            request.operation,
            request.input,
            tenant=request.tenant,
            source="stepfunctions" if request.task_token else "api",
            request_id=getattr(context, "aws_request_id", "") or "",
            task_token=request.task_token,
        )
        return {"id": job.job_id, "object": "job", "status": job.status, "operation": job.operation}
    except GatewayError as err:
        raise api.named_error(err) from None


def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if not isinstance(event, dict):
        raise api.named_error(InvalidRequestError("the event must be a JSON object"))
    if "httpMethod" in event and "requestContext" in event:
        return app.resolve(event, context)
    return _direct_invocation(event, context)
