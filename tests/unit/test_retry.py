import asyncio

import pytest

from llm_gateway.errors import ProviderAuthError, ProviderBadRequestError, ProviderUnavailableError, RateLimitedError
from llm_gateway.routing.deadline import Deadline
from llm_gateway.routing.retry import RetryPolicy


class Flaky:
    def __init__(self, failures):
        self.failures = list(failures)
        self.calls = 0

    async def __call__(self):
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


def policy(**kw):
    slept = []

    async def sleep(seconds):
        slept.append(seconds)

    return RetryPolicy(sleep=sleep, **kw), slept


def run(policy, fn, seconds=60.0):
    return asyncio.run(policy.call(fn, deadline=Deadline(seconds)))


def test_retries_transient_errors_then_succeeds():
    retry, slept = policy(max_attempts=3)
    fn = Flaky([ProviderUnavailableError("503"), ProviderUnavailableError("503")])
    assert run(retry, fn) == "ok"
    assert fn.calls == 3
    assert len(slept) == 2


@pytest.mark.parametrize("error", [ProviderAuthError("401"), ProviderBadRequestError("400")])
def test_never_retries_auth_or_bad_request(error):
    retry, slept = policy(max_attempts=5)
    fn = Flaky([error])
    with pytest.raises(type(error)):
        run(retry, fn)
    assert fn.calls == 1
    assert slept == []


def test_gives_up_after_max_attempts_with_last_error():
    retry, _ = policy(max_attempts=2)
    fn = Flaky([ProviderUnavailableError("a"), ProviderUnavailableError("b"), ProviderUnavailableError("c")])
    with pytest.raises(ProviderUnavailableError, match="b"):
        run(retry, fn)
    assert fn.calls == 2


def test_honours_retry_after():
    retry, slept = policy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.01)
    fn = Flaky([RateLimitedError("429", retry_after=2.5)])
    assert run(retry, fn) == "ok"
    assert slept == [2.5]


def test_long_retry_after_means_fall_back_now():
    retry, slept = policy(max_attempts=3, max_retry_after_s=10)
    fn = Flaky([RateLimitedError("429", retry_after=60)])
    with pytest.raises(RateLimitedError):
        run(retry, fn)
    assert fn.calls == 1 and slept == []


def test_never_waits_past_the_deadline():
    retry, slept = policy(max_attempts=5)
    fn = Flaky([RateLimitedError("429", retry_after=3.0)])
    with pytest.raises(RateLimitedError):
        run(retry, fn, seconds=2.0)  # a 3 s wait would overrun a 2 s budget
    assert fn.calls == 1 and slept == []


def test_backoff_is_jittered_exponential_and_capped():
    retry = RetryPolicy(base_delay_s=0.5, max_delay_s=4.0)
    samples = {n: [retry.backoff(n) for _ in range(300)] for n in (1, 2, 3, 6)}
    assert max(samples[1]) <= 0.5 and max(samples[2]) <= 1.0 and max(samples[3]) <= 2.0
    assert max(samples[6]) <= 4.0 and max(samples[6]) > 3.0  # capped, and the cap is reached
    assert len(set(samples[2])) > 100  # jittered, not fixed
