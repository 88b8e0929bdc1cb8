"""When a job waits for provider quota instead of backing off (jobs/quota_wait.py)."""

from __future__ import annotations

from llm_gateway.errors import AllProvidersFailedError, ProviderUnavailableError, QuotaExhaustedError, RateLimitedError
from llm_gateway.jobs.quota_wait import delay_for_wait, quota_wait_s


def exhausted(retry_after: float, resets_at: float) -> QuotaExhaustedError:
    error = QuotaExhaustedError("out of quota", retry_after=retry_after)
    error.resets_at = resets_at
    return error


def test_only_a_quota_exhaustion_is_a_known_wait() -> None:
    assert quota_wait_s(exhausted(7, 1007.0), now=1000.0) == 7
    chain = AllProvidersFailedError.after(2, attempts=[], last_error=exhausted(9, 1009.0))
    chain.retry_after = 4  # the earliest over the chain, as the gateway sets it
    assert quota_wait_s(chain, now=1000.0) == 4
    assert quota_wait_s(RateLimitedError("a provider's own 429", retry_after=3), now=1000.0) is None
    outage = AllProvidersFailedError.after(1, attempts=[], last_error=ProviderUnavailableError("503"))
    assert quota_wait_s(outage, now=1000.0) is None


def test_the_delay_is_never_before_the_reset_and_spread_over_a_second() -> None:
    delays = {delay_for_wait(2.2) for _ in range(200)}
    assert delays <= {3, 4} and min(delays) >= 3
