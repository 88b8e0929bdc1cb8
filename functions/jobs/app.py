"""Jobs function: the async job API, job submission by direct invocation, and the API's OpenAPI document.

* ``POST /v1/jobs`` ``{"operation", "input"}``: ``202`` with the job id and ``Location: /v1/jobs/{id}``;
  the input is validated now, not when the job runs.
* ``GET /v1/jobs/{job_id}``: the caller's own job (another tenant's answers 404, like a missing one).
* ``GET /v1/openapi.json``: every route of every function, generated from the request models.
* Direct invocation (Step Functions ``lambda:invoke.waitForTaskToken``, or any IAM caller):
  ``{"operation", "input", "tenant"?, "task_token"?}`` returns ``{"id", "status", ...}``. Task tokens are
  accepted here only, never over HTTP.

Its own function so that reading job status costs no provider setup and needs no provider keys.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from llm_gateway.http import events, framing, key_checks, prefer
from llm_gateway.http.edge import OPENAPI_PATH, HttpEdge
from llm_gateway.jobs.requests import DirectJobRequest, JobRequest
from llm_gateway.jobs.views import view
from llm_gateway.wiring import services

edge = HttpEdge(document_paths=["/v1/jobs"])
app, logger = edge.app, edge.logger


@edge.post("/v1/jobs", summary="Run any operation as a durable job", tags=["jobs"])
def create_job(body: JobRequest) -> Response[str]:
    from llm_gateway.operations import registry  # every operation's models: only submissions pay for them

    tenant, request_id, current = edge.tenant(), edge.request_id(), services()
    registry.check(body.operation, body.input, tenant=tenant, source="api")  # a bad input costs no request
    edge.admit(*key_checks.job_limits(body.operation, body.input, current))  # the job spends the reservation
    job = registry.accept_job(
        current,
        body.operation,
        body.input,
        tenant=tenant,
        source="api",
        request_id=request_id,
        key_tags=edge.job_tags(),
    )
    return edge.json(*prefer.accepted(edge.event, job))


@edge.get("/v1/jobs/<job_id>", summary="A job's status and result (the caller's own jobs only)", tags=["jobs"])
def get_job(job_id: str) -> Response[str]:
    store = services().job_store()
    job = store.get_for_tenant(job_id, edge.tenant())
    body = view(job, store, max_attempts=services().settings.job_max_receives)
    return edge.json(200, body, {"cache-control": "no-store"})


@edge.get(OPENAPI_PATH, summary="This API's OpenAPI document", tags=["meta"])
def openapi_document() -> Response[str]:
    from llm_gateway.http import openapi  # built on the first request for it, never at cold start

    return edge.json(200, openapi.document(), {"cache-control": "public, max-age=300"})


def direct(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    from llm_gateway.operations import registry

    request = framing.validate(DirectJobRequest, event)
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


lambda_handler = events.lambda_handler(edge, direct=direct, defer_after_response=False)
