"""The one place that retries provider calls: tenacity with full-jitter exponential backoff.

Waits honour ``Retry-After``, never retry errors that cannot succeed (auth, bad request), and never
extend past the invocation's deadline: when the next wait would not leave room for another call, the
policy stops so that the caller can fall back to another model instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception
from tenacity.wait import wait_base, wait_exponential, wait_random_exponential

from llm_gateway.errors import ProviderError, ProviderUnavailableError, RateLimitedError
from llm_gateway.routing.deadline import Deadline

T = TypeVar("T")

MIN_CALL_TIME_S = 0.5  # no point retrying if less than this would remain for the call itself


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, ProviderError) and exc.retryable


def retry_after_of(exc: BaseException | None) -> float | None:
    if isinstance(exc, RateLimitedError | ProviderUnavailableError):
        return exc.retry_after
    return None


def full_jitter(base_s: float, cap_s: float) -> wait_base:
    """Uniform in [0, min(cap, base * 2^(n-1))]: uncoordinated callers spread out (tenacity's own)."""
    return wait_random_exponential(multiplier=base_s, max=cap_s)


def equal_jitter(base_s: float, cap_s: float) -> wait_base:
    """Half of min(cap, base * 2^(n-1)) fixed, half random: never much shorter than the step, for
    waits where retrying early is pointless (a job whose providers are down)."""
    return wait_exponential(multiplier=base_s / 2, max=cap_s / 2) + wait_random_exponential(
        multiplier=base_s / 2, max=cap_s / 2
    )


def delay_for(wait: wait_base, attempt_number: int) -> float:
    """The wait before retry number ``attempt_number`` (1 = after the first failure), outside a tenacity loop."""
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = attempt_number
    return float(wait(state))


@dataclass
class RetryPolicy:
    max_attempts: int = 3  # per model, counting the first call
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0
    max_retry_after_s: float = 20.0  # a longer Retry-After means: fall back now, don't wait
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def backoff(self, attempt_number: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2^(n-1))]."""
        return delay_for(full_jitter(self.base_delay_s, self.max_delay_s), attempt_number)

    def next_wait(self, exc: BaseException | None, attempt_number: int) -> float:
        jittered = self.backoff(attempt_number)
        hinted = retry_after_of(exc)
        return max(jittered, hinted) if hinted is not None else jittered

    def should_stop(self, exc: BaseException | None, attempt_number: int, wait_s: float, deadline: Deadline) -> bool:
        if attempt_number >= self.max_attempts:
            return True
        hinted = retry_after_of(exc)
        if hinted is not None and hinted > self.max_retry_after_s:
            return True
        return wait_s + MIN_CALL_TIME_S > deadline.remaining()

    async def call(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        deadline: Deadline,
    ) -> T:
        """Call ``fn`` until it succeeds or the policy gives up; the last error is re-raised."""

        def wait(state: RetryCallState) -> float:
            return self.next_wait(_exception(state), state.attempt_number)

        def stop(state: RetryCallState) -> bool:
            return self.should_stop(_exception(state), state.attempt_number, state.upcoming_sleep, deadline)

        retrying = AsyncRetrying(
            retry=retry_if_exception(is_retryable),
            wait=wait,
            stop=stop,
            sleep=self.sleep,
            reraise=True,
        )
        return await retrying(fn)


def _exception(state: RetryCallState) -> BaseException | None:
    return state.outcome.exception() if state.outcome is not None and state.outcome.failed else None
