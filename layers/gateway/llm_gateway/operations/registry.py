"""The gateway's operations by name, so that every entry point (HTTP, S3, Step Functions, the job worker)
can run any of them from a plain JSON payload, and a job's input is refused when it is submitted rather
than failing later in the worker.

Each operation is an async function ``(payload, ctx, services) -> dict``. Plain imports: the registry
sits above the operations, and nothing below it imports it (the job worker and the edge do).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from llm_gateway.after_response import RUN_NOW, Deferral
from llm_gateway.errors import InvalidRequestError
from llm_gateway.http import framing as api
from llm_gateway.interfaces import RequestContext
from llm_gateway.jobs.model import Job, JobSource
from llm_gateway.jobs.submit import submit
from llm_gateway.models import CompletionRequest
from llm_gateway.operations import extraction_uploads, summary_uploads
from llm_gateway.operations.completion import run_completion
from llm_gateway.operations.extraction import (
    TRUSTED_JOB_SOURCES,
    ExtractionRequest,
    check_document_scope,
    resolve_schema,
    run_extraction,
)
from llm_gateway.operations.summarization.operation import run_summary
from llm_gateway.operations.summarization.request import SummaryRequest
from llm_gateway.wiring import Services

Operation = Callable[[dict[str, Any], RequestContext, Services], Awaitable[dict[str, Any]]]
GaveUp = Callable[[Job, dict[str, Any], dict[str, Any], Services], None]


@dataclass(frozen=True)
class OperationSpec:
    run: Operation
    request_model: type[BaseModel]  # what the operation validates its payload with
    # A check beyond the model: (validated request, tenant, job source); tenant None skips the scope check.
    check: Callable[[Any, str | None, str | None], None] | None = None
    gave_up: GaveUp | None = None  # told when the worker gives up on a job (its deliveries ran out)


def _document_in_scope(request: Any, tenant: str | None, source: str | None) -> None:
    """An ``s3`` reference the job could read when it runs: the tenant's own prefix unless a trusted
    entry point submitted it (the synchronous route's check, see extraction.document_location)."""
    ref = getattr(request, "s3", None)
    if ref is None or tenant is None:
        return
    check_document_scope(ref, tenant=tenant, bucket_wide=source in TRUSTED_JOB_SOURCES)


def _extraction_usable(request: Any, tenant: str | None, source: str | None) -> None:
    """The schema named exists, or the inline one is a usable JSON Schema (the extraction's own check)."""
    resolve_schema(request.json_schema)
    _document_in_scope(request, tenant, source)


OPERATIONS: Mapping[str, OperationSpec] = {
    "completion": OperationSpec(run_completion, CompletionRequest),
    "extraction": OperationSpec(
        run_extraction, ExtractionRequest, check=_extraction_usable, gave_up=extraction_uploads.job_gave_up
    ),
    "summarization": OperationSpec(
        run_summary, SummaryRequest, check=_document_in_scope, gave_up=summary_uploads.job_gave_up
    ),
}


def names() -> list[str]:
    return sorted(OPERATIONS)


def spec(name: str, *, param: str = "operation") -> OperationSpec:
    try:
        return OPERATIONS[name]
    except KeyError:
        raise InvalidRequestError(
            f"unknown operation '{name}'", details={"param": param, "operations": names()}
        ) from None


def check(name: str, payload: dict[str, Any], *, tenant: str | None = None, source: str | None = None) -> None:
    """Raise InvalidRequestError (or a subclass: ``schema_not_found``, ``document_forbidden``...) for an
    unknown operation or a payload its operation would refuse, so that a job's input is refused when it is
    submitted. With ``tenant`` (and the job's ``source``), S3 references are held to the tenant's scope."""
    operation = spec(name)
    request = api.validate(operation.request_model, payload)
    if operation.check is not None:
        operation.check(request, tenant, source)


def accept_job(
    services: Services,
    name: str,
    payload: dict[str, Any],
    *,
    tenant: str,
    source: JobSource,
    request_id: str = "",
    task_token: str | None = None,
    delay_s: int = 0,
    defer: Deferral = RUN_NOW,
    key_tags: Mapping[str, str] | None = None,
) -> Job:
    """A caller's job: checked as the synchronous route would check it, then stored and queued
    (``key_tags``: the gateway key's context tags, carried by the job to the worker)."""
    check(name, payload, tenant=tenant, source=source)
    return submit(
        name,
        payload,
        tenant=tenant,
        source=source,
        request_id=request_id,
        task_token=task_token,
        delay_s=delay_s,
        store=services.job_store(),
        defer=defer,
        key_tags=key_tags,
    )


def gave_up(job: Job, payload: dict[str, Any], error: dict[str, Any], services: Services) -> None:
    """Tell the job's operation that the worker gave up on it (best effort is the caller's to handle)."""
    operation = OPERATIONS.get(job.operation)
    if operation is not None and operation.gave_up is not None:
        operation.gave_up(job, payload, error, services)


async def run(name: str, payload: dict[str, Any], ctx: RequestContext, services: Services) -> dict[str, Any]:
    return await spec(name).run(payload, ctx, services)
