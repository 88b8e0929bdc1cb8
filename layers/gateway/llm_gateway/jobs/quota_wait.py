"""A job whose every deployment is out of quota waits on the retry queue until the earliest reset.

Such a failure made no provider call (``QuotaExhaustedError``, possibly behind the "every candidate
failed" error): it is not a failed attempt but a known wait. The job is queued afresh with that delay
(SQS ``DelaySeconds``, at most 15 minutes), so it spends none of its ``JOB_MAX_RECEIVES`` deliveries;
``MAX_QUOTA_WAITS`` such waits in a row (an hour at 60-second windows) and it takes the ordinary retry
path, which ends it after its deliveries as for any other failure.
"""

from __future__ import annotations

import logging
import math
import random
from typing import TYPE_CHECKING, Any

from llm_gateway.errors import AllProvidersFailedError, GatewayError, QuotaExhaustedError
from llm_gateway.jobs.endings import log_fields

if TYPE_CHECKING:
    from llm_gateway.jobs.model import Job
    from llm_gateway.jobs.store import JobStore

log = logging.getLogger("llm_gateway.jobs.worker")

MAX_QUOTA_WAITS = 60
SPREAD_S = 1.0  # jobs waiting on the same reset do not all arrive in its first second


def quota_wait_s(err: GatewayError, now: float) -> float | None:
    """How long to wait before the job can run, when ``err`` says every deployment was out of quota."""
    last = err.last_error if isinstance(err, AllProvidersFailedError) else err
    if not isinstance(last, QuotaExhaustedError):
        return None
    if err.retry_after:
        return float(err.retry_after)
    return max(0.0, last.resets_at - now) if last.resets_at else None


def delay_for_wait(wait_s: float) -> int:
    """Whole seconds for SQS, never before the reset, spread over up to ``SPREAD_S`` after it."""
    return math.ceil(wait_s + random.uniform(0.0, SPREAD_S))


def wait_for_quota(
    store: JobStore, job: Job, record: dict[str, Any], wait_s: float, *, now: float, continuation: int, quota_waits: int
) -> bool:
    """Queue the job afresh to run when quota is back; False if it could not be queued (the ordinary
    retry path takes over)."""
    delay = delay_for_wait(wait_s)
    retrying = store.mark_retrying(job, record, now + delay)
    try:
        store.enqueue(retrying, delay_s=delay, continuation=continuation, quota_waits=quota_waits)
    except Exception as exc:
        log.warning("could not queue the job's quota wait", extra={"job_id": job.job_id, "error": type(exc).__name__})
        return False
    log.info("job waits for provider quota", extra=log_fields(retrying, delay_s=delay, quota_waits=quota_waits))
    return True
