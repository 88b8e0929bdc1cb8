"""A job whose every deployment is out of quota waits on the retry queue until the earliest reset.

Such a failure made no provider call (``QuotaExhaustedError``, possibly behind the "every candidate
failed" error): it is not a failed attempt but a known wait. The job is queued afresh with that delay
(SQS ``DelaySeconds``, at most 15 minutes), so it spends none of its ``JOB_MAX_RECEIVES`` deliveries;
``MAX_QUOTA_WAITS`` such waits in a row (an hour at 60-second windows) and it takes the ordinary retry
path, which ends it after its deliveries as for any other failure.
"""

from __future__ import annotations

import math
import random

from llm_gateway.errors import AllProvidersFailedError, GatewayError, QuotaExhaustedError

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
