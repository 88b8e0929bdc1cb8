"""The gateway's operations by name, so that every entry point (HTTP, S3, Step Functions, the job worker)
can run any of them from a plain JSON payload.

Each operation is an async function ``(payload, ctx) -> dict`` living in its own module, imported on
first use so that a function only pays for what it runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from typing import Any

from llm_gateway.errors import InvalidRequestError
from llm_gateway.interfaces import RequestContext

Operation = Callable[[dict[str, Any], RequestContext], Awaitable[dict[str, Any]]]

# name -> "module:function", relative to this package
_OPERATIONS: dict[str, str] = {
    "completion": "operations.completion:run_completion",
    "extraction": "operations.extraction:run_extraction",
    "summarization": "operations.summarization:run_summary",
}

# name -> "module:Model": the pydantic model an operation validates its payload with, so that a job's
# input is refused when it is submitted rather than failing later in the worker.
_REQUEST_MODELS: dict[str, str] = {
    "completion": "models:CompletionRequest",
    "extraction": "operations.extraction:ExtractionRequest",
    "summarization": "operations.summarization:SummaryRequest",
}


def _document_in_scope(request: Any, tenant: str | None, source: str | None) -> None:
    """An ``s3`` reference the job could read when it runs: the tenant's own prefix unless a trusted
    entry point submitted it (the synchronous route's check, see extraction.document_location)."""
    from llm_gateway.operations.extraction import TRUSTED_JOB_SOURCES, check_document_scope

    ref = getattr(request, "s3", None)
    if ref is None or tenant is None:
        return
    check_document_scope(ref, tenant=tenant, bucket_wide=source in TRUSTED_JOB_SOURCES)


def _extraction_usable(request: Any, tenant: str | None, source: str | None) -> None:
    """The schema named exists, or the inline one is a usable JSON Schema (the extraction's own check)."""
    from llm_gateway.operations.extraction import resolve_schema

    resolve_schema(request.json_schema)
    _document_in_scope(request, tenant, source)


# name -> check beyond the request model, called with the validated request, the tenant and the job source.
_REQUEST_CHECKS: dict[str, Callable[[Any, str | None, str | None], None]] = {
    "extraction": _extraction_usable,
    "summarization": _document_in_scope,
}


# name -> "module:function" called when the worker gives up on a job of that operation (its deliveries ran
# out): ``(job, payload, error)``, e.g. to leave an error object next to an uploaded document.
_GAVE_UP_HOOKS: dict[str, str] = {
    "extraction": "operations.extraction_uploads:job_gave_up",
    "summarization": "operations.summary_uploads:job_gave_up",
}


def gave_up(job: Any, payload: dict[str, Any], error: dict[str, Any]) -> None:
    """Tell the job's operation that the worker gave up on it (best effort is the caller's to handle)."""
    if target := _GAVE_UP_HOOKS.get(job.operation):
        _attribute(target)(job, payload, error)


def register(name: str, target: str, *, request_model: str | None = None) -> None:
    """Add an operation (``"module:function"`` inside llm_gateway); modules call this for their own."""
    _OPERATIONS[name] = target
    if request_model is not None:
        _REQUEST_MODELS[name] = request_model


def names() -> list[str]:
    return sorted(_OPERATIONS)


def resolve(name: str) -> Operation:
    try:
        module_name, func_name = _OPERATIONS[name].split(":")
    except KeyError:
        raise InvalidRequestError(f"unknown operation '{name}'", details={"operations": names()}) from None
    module = importlib.import_module(f"llm_gateway.{module_name}")
    operation: Operation = getattr(module, func_name)
    return operation


def check(name: str, payload: dict[str, Any], *, tenant: str | None = None, source: str | None = None) -> None:
    """Raise InvalidRequestError (or a subclass: ``schema_not_found``, ``document_forbidden``...) for an
    unknown operation or a payload its operation would refuse, so that a job's input is refused when it is
    submitted. With ``tenant`` (and the job's ``source``), S3 references are held to the tenant's scope."""
    if name not in _OPERATIONS:
        raise InvalidRequestError(f"unknown operation '{name}'", details={"param": "operation", "operations": names()})
    if target := _REQUEST_MODELS.get(name):
        from llm_gateway.http import (
            framing as api,  # api imports nothing from here; local import keeps this module light
        )

        request = api.validate(_attribute(target), payload)
        if extra_check := _REQUEST_CHECKS.get(name):
            extra_check(request, tenant, source)


def _attribute(target: str) -> Any:
    module_name, attribute = target.split(":")
    return getattr(importlib.import_module(f"llm_gateway.{module_name}"), attribute)


async def run(name: str, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
    return await resolve(name)(payload, ctx)
