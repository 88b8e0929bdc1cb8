"""Accepting a job: validated, stored (queued) and queued, or not accepted at all."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from llm_gateway.after_response import RUN_NOW, Deferral
from llm_gateway.errors import JobsUnavailableError
from llm_gateway.jobs.model import Job, JobSource, error_record
from llm_gateway.jobs.store import JobStore

log = logging.getLogger("llm_gateway.jobs.store")  # the logger submissions always used


def submit(
    operation: str,
    payload: Mapping[str, Any],
    *,
    tenant: str,
    source: JobSource,
    request_id: str = "",
    task_token: str | None = None,
    delay_s: int = 0,
    store: JobStore,
    defer: Deferral = RUN_NOW,
    key_tags: Mapping[str, str] | None = None,
) -> Job:
    """Accept a job: store it (queued), queue it. Nothing is half-accepted: when queueing fails the job
    is marked failed and JobsUnavailableError (503, retryable) is raised. The payload is the caller's to
    validate first (``operations.registry.accept_job`` does, for payloads that come from a caller)."""
    defer.flush()  # the job may start at once: what this invocation owes the cache lands first
    job = store.create(
        store.new_job(
            operation=operation,
            tenant=tenant,
            source=source,
            request_id=request_id,
            task_token=task_token,
            key_tags=key_tags,
        ),
        payload,
    )
    try:
        store.enqueue(job, delay_s=delay_s)
    except Exception as exc:
        log.error("could not queue job", extra={"job_id": job.job_id, "error": type(exc).__name__})
        unavailable = JobsUnavailableError("the job could not be queued; nothing was accepted, retry later")
        try:
            store.mark_failed(job, error_record(unavailable), exhausted=False)
        except Exception:
            log.exception("could not mark the unqueued job failed", extra={"job_id": job.job_id})
        raise unavailable from None
    log.info("job accepted", extra={"job_id": job.job_id, "tenant": tenant, "operation": operation, "source": source})
    return job
