"""Rate-limit headers of each provider, read from header sets as the providers send them.

The header sets are real answers' shapes: OpenAI's from its rate-limit guide and a captured Chat
Completions answer (community.openai.com, 2025), Anthropic's from a recorded Messages answer (tidyllm's
test fixture, 2025-08-21), Azure OpenAI's from captured answers (a 200 with only ``remaining``, a 429
spelling ``x-rate-limit-reset-tokens``, the ``-1`` values of late 2025), Gemini's from a captured 429 body.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from llm_gateway import errors
from llm_gateway.models import Message, ProviderRequest
from llm_gateway.providers import adapter_class
from llm_gateway.quotas.headers import (
    gemini_retry_delay,
    parse_duration,
    parse_rfc3339,
    rate_limits,
    retry_after_seconds,
)
from llm_gateway.quotas.model import RateLimitSnapshot

NOW = 1_755_780_059.0  # 2025-08-21T12:40:59Z, when the Anthropic answer below was received

OPENAI_GUIDE = {
    "x-ratelimit-limit-requests": "60",
    "x-ratelimit-limit-tokens": "150000",
    "x-ratelimit-remaining-requests": "59",
    "x-ratelimit-remaining-tokens": "149984",
    "x-ratelimit-reset-requests": "1s",
    "x-ratelimit-reset-tokens": "6m0s",
}
OPENAI_CAPTURED = {
    "date": "Mon, 26 May 2025 05:00:04 GMT",
    "content-type": "application/json",
    "x-ratelimit-limit-requests": "5000",
    "x-ratelimit-limit-tokens": "160000",
    "x-ratelimit-limit-tokens_usage_based": "160000",
    "x-ratelimit-remaining-requests": "4999",
    "x-ratelimit-remaining-tokens": "159976",
    "x-ratelimit-remaining-tokens_usage_based": "159976",
    "x-ratelimit-reset-requests": "12ms",
    "x-ratelimit-reset-tokens": "9ms",
    "x-ratelimit-reset-tokens_usage_based": "9ms",
}
ANTHROPIC_CAPTURED = {
    "date": "Thu, 21 Aug 2025 12:41:00 GMT",
    "content-type": "application/json",
    "anthropic-ratelimit-input-tokens-limit": "80000",
    "anthropic-ratelimit-input-tokens-remaining": "80000",
    "anthropic-ratelimit-input-tokens-reset": "2025-08-21T12:40:59Z",
    "anthropic-ratelimit-output-tokens-limit": "16000",
    "anthropic-ratelimit-output-tokens-remaining": "16000",
    "anthropic-ratelimit-output-tokens-reset": "2025-08-21T12:41:00Z",
    "anthropic-ratelimit-requests-limit": "1000",
    "anthropic-ratelimit-requests-remaining": "999",
    "anthropic-ratelimit-requests-reset": "2025-08-21T12:40:59Z",
    "anthropic-ratelimit-tokens-limit": "96000",
    "anthropic-ratelimit-tokens-remaining": "96000",
    "anthropic-ratelimit-tokens-reset": "2025-08-21T12:40:59Z",
    "request-id": "req_011CSLsW7mFqvHHnzrKdKjAE",
}
AZURE_200 = {
    "content-type": "application/json",
    "apim-request-id": "bb943c68-99ed-46ab-bda9-a5efbdf5897a",
    "x-ms-region": "North Central US",
    "x-ratelimit-remaining-requests": "79",
    "x-ratelimit-remaining-tokens": "61353",
    "x-request-id": "3a8b1a44-a02c-4a07-b51d-1c88acec4c4f",
}
AZURE_429_2023 = {
    "content-type": "application/json",
    "x-rate-limit-reset-tokens": "55",
    "policy-id": "DeploymentRatelimit-Token",
    "x-ms-region": "West US",
    "x-ratelimit-remaining-requests": "119",
    "x-ratelimit-remaining-tokens": "0",
}
GEMINI_429 = {
    "error": {
        "code": 429,
        "message": "You exceeded your current quota, please check your plan and billing details.",
        "status": "RESOURCE_EXHAUSTED",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [
                    {
                        "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                        "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                        "quotaDimensions": {"location": "global", "model": "gemini-2.0-flash"},
                    }
                ],
            },
            {"@type": "type.googleapis.com/google.rpc.Help", "links": [{"url": "https://ai.google.dev"}]},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "47s"},
        ],
    }
}


def at(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1m0s", 60.0),
        ("6m0s", 360.0),
        ("6ms", 0.006),
        ("20ms", 0.02),
        ("1s", 1.0),
        ("0s", 0.0),
        ("17.28s", 17.28),
        ("1h2m3.5s", 3723.5),
        ("2m59.56s", 179.56),
        ("150us", 0.00015),
        ("55", 55.0),  # Azure: bare seconds
        ("0", 0.0),
        ("48h", 86_400.0),  # a daily quota's reset is read as at most a day
    ],
)
def test_durations_as_openai_writes_them(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", " ", "soon", "1x", "m", "1m1", "s1", "-1s", "1s 2m", "nan", None])
def test_an_unreadable_duration_is_not_said(text: str | None) -> None:
    assert parse_duration(text) is None


def test_rfc3339_times() -> None:
    assert parse_rfc3339("2025-08-21T12:40:59Z") == NOW
    assert parse_rfc3339("2025-08-21T12:40:59.250Z") == NOW + 0.25
    assert parse_rfc3339("2025-08-21T14:40:59+02:00") == NOW
    assert parse_rfc3339("2025-08-21T12:40:59") is None  # no zone: not RFC 3339
    assert parse_rfc3339("yesterday") is None


def test_openai_headers_from_its_guide() -> None:
    snapshot = rate_limits("openai", httpx.Headers(OPENAI_GUIDE), status=200, now=NOW)
    assert snapshot == RateLimitSnapshot(
        limit_requests=60,
        remaining_requests=59,
        requests_reset_at=NOW + 1,
        limit_tokens=150000,
        remaining_tokens=149984,
        tokens_reset_at=NOW + 360,
    )
    assert snapshot.exhausted_until() is None


def test_openai_headers_captured_from_an_answer() -> None:
    snapshot = rate_limits("openai", httpx.Headers(OPENAI_CAPTURED), status=200, now=NOW)
    assert snapshot is not None
    assert (snapshot.limit_requests, snapshot.remaining_requests) == (5000, 4999)
    assert (snapshot.limit_tokens, snapshot.remaining_tokens) == (160000, 159976)
    assert snapshot.requests_reset_at == pytest.approx(NOW + 0.012)
    assert snapshot.tokens_reset_at == pytest.approx(NOW + 0.009)


def test_openai_says_no_request_is_left_until_the_reset() -> None:
    headers = httpx.Headers(
        {**OPENAI_GUIDE, "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1m0s"}
    )
    snapshot = rate_limits("openai", headers, status=200, now=NOW)
    assert snapshot is not None and snapshot.exhausted_until() == NOW + 60


def test_openai_429_with_retry_after() -> None:
    headers = httpx.Headers({**OPENAI_GUIDE, "x-ratelimit-remaining-tokens": "0", "retry-after": "20"})
    snapshot = rate_limits("openai", headers, status=429, now=NOW)
    assert snapshot is not None and snapshot.retry_after_at == NOW + 20
    assert snapshot.exhausted_until() == NOW + 360  # the tokens' reset is later than the retry-after


def test_a_retry_after_on_a_success_is_not_a_wait() -> None:
    snapshot = rate_limits("openai", httpx.Headers({"retry-after": "20"}), status=200, now=NOW)
    assert snapshot is None


def test_anthropic_headers_captured_from_an_answer() -> None:
    snapshot = rate_limits("anthropic", httpx.Headers(ANTHROPIC_CAPTURED), status=200, now=NOW + 1)
    assert snapshot == RateLimitSnapshot(
        limit_requests=1000,
        remaining_requests=999,
        requests_reset_at=NOW,
        limit_tokens=96000,
        remaining_tokens=96000,
        tokens_reset_at=NOW,
    )


def test_anthropic_an_exhausted_output_token_family_counts_even_without_the_combined_one() -> None:
    headers = {k: v for k, v in ANTHROPIC_CAPTURED.items() if not k.startswith("anthropic-ratelimit-tokens-")}
    headers["anthropic-ratelimit-output-tokens-remaining"] = "0"
    headers["anthropic-ratelimit-output-tokens-reset"] = "2025-08-21T12:41:30Z"
    snapshot = rate_limits("anthropic", httpx.Headers(headers), status=200, now=NOW)
    assert snapshot is not None
    assert (snapshot.limit_tokens, snapshot.remaining_tokens) == (16000, 0)
    assert snapshot.exhausted_until() == at("2025-08-21T12:41:30+00:00")


def test_anthropic_429_says_when_to_retry_in_seconds() -> None:
    headers = {
        **ANTHROPIC_CAPTURED,
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": "2025-08-21T12:41:20Z",
        "retry-after": "21",
    }
    snapshot = rate_limits("anthropic", httpx.Headers(headers), status=429, now=NOW)
    assert snapshot is not None and snapshot.retry_after_at == NOW + 21
    assert snapshot.exhausted_until() == NOW + 21


def test_azure_200_says_only_what_remains() -> None:
    snapshot = rate_limits("azure", httpx.Headers(AZURE_200), status=200, now=NOW)
    assert snapshot == RateLimitSnapshot(remaining_requests=79, remaining_tokens=61353)


def test_azure_429_with_the_older_reset_header_in_seconds() -> None:
    snapshot = rate_limits("azure", httpx.Headers(AZURE_429_2023), status=429, now=NOW)
    assert snapshot == RateLimitSnapshot(remaining_requests=119, remaining_tokens=0, tokens_reset_at=NOW + 55)
    assert snapshot.exhausted_until() == NOW + 55


def test_azure_429_with_retry_after_ms_before_retry_after() -> None:
    headers = httpx.Headers({"retry-after": "2", "retry-after-ms": "1500", "x-ratelimit-remaining-requests": "0"})
    snapshot = rate_limits("azure", headers, status=429, now=NOW)
    assert snapshot == RateLimitSnapshot(remaining_requests=0, retry_after_at=NOW + 1.5)


def test_azure_minus_one_means_not_known() -> None:
    headers = {"x-ratelimit-limit-tokens": "-1", "x-ratelimit-remaining-tokens": "-1", "x-ratelimit-reset-tokens": "0"}
    snapshot = rate_limits("azure", httpx.Headers(headers), status=200, now=NOW)
    assert snapshot == RateLimitSnapshot(tokens_reset_at=NOW)
    assert snapshot.exhausted_until() is None


def test_gemini_429_body_says_when_to_retry() -> None:
    assert gemini_retry_delay(GEMINI_429) == 47.0
    assert gemini_retry_delay([GEMINI_429]) == 47.0  # streamGenerateContent without alt=sse: a JSON array
    assert gemini_retry_delay({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED"}}) is None
    assert gemini_retry_delay("not json") is None
    snapshot = rate_limits("gemini", httpx.Headers({}), status=429, body=GEMINI_429, now=NOW)
    assert snapshot == RateLimitSnapshot(retry_after_at=NOW + 47)


def test_retry_after_as_an_http_date() -> None:
    headers = httpx.Headers({"retry-after": "Thu, 21 Aug 2025 12:41:29 GMT"})
    assert retry_after_seconds(headers, NOW) == 30.0
    assert rate_limits("anthropic", headers, status=503, now=NOW) == RateLimitSnapshot(retry_after_at=NOW + 30)
    assert retry_after_seconds(httpx.Headers({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}), NOW) == 0.0
    assert retry_after_seconds(httpx.Headers({"retry-after": "soon"}), NOW) is None


def test_garbage_values_count_as_not_said() -> None:
    headers = {
        "x-ratelimit-limit-requests": "lots",
        "x-ratelimit-remaining-requests": "1e400",
        "x-ratelimit-reset-requests": "whenever",
        "x-ratelimit-remaining-tokens": "12.0",
    }
    assert rate_limits("openai", httpx.Headers(headers), status=200, now=NOW) == RateLimitSnapshot(remaining_tokens=12)
    assert rate_limits("bedrock-has-none", httpx.Headers(OPENAI_GUIDE), status=200, now=NOW) is None


# --- through the adapters: every answer carries its snapshot ----------------------------------------


def call(provider_name: str, status: int, body: Any, headers: dict[str, str], **extra: Any) -> Any:
    provider = adapter_class(provider_name)(base_url="http://test", api_key="k", **extra)
    request = ProviderRequest(model="gpt-4o-mini", messages=[Message(role="user", content="hi")], max_tokens=10)

    def handler(_: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=json.dumps(body).encode(), headers=headers)

    async def go() -> Any:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await provider.complete(request, client=client, timeout_s=1.0)

    return asyncio.run(go())


OPENAI_OK = {
    "id": "chatcmpl-1",
    "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1},
}


def test_a_successful_answer_carries_the_snapshot() -> None:
    response = call("openai", 200, OPENAI_OK, OPENAI_GUIDE)
    assert response.content == "hi"
    assert response.rate_limits is not None and response.rate_limits.remaining_tokens == 149984
    assert "rate_limits" not in response.model_dump()  # internal: never serialized with the answer


def test_an_azure_answer_is_read_in_azure_s_dialect() -> None:
    response = call("azure_openai", 200, OPENAI_OK, AZURE_200, api_version="2024-10-21")
    assert response.rate_limits == RateLimitSnapshot(remaining_requests=79, remaining_tokens=61353)


def test_an_error_carries_the_snapshot_and_its_retry_after() -> None:
    body = {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}
    headers = {**OPENAI_GUIDE, "x-ratelimit-remaining-requests": "0", "retry-after-ms": "2500"}
    with pytest.raises(errors.RateLimitedError) as raised:
        call("openai", 429, body, headers)
    assert raised.value.retry_after == 2.5
    snapshot = raised.value.rate_limits
    assert snapshot is not None and snapshot.remaining_requests == 0 and snapshot.retry_after_at is not None


def test_a_gemini_429_waits_as_long_as_its_body_says() -> None:
    with pytest.raises(errors.RateLimitedError) as raised:
        call("gemini", 429, GEMINI_429, {})
    assert raised.value.retry_after == 47.0
    assert raised.value.rate_limits is not None and raised.value.rate_limits.retry_after_at is not None


def test_an_answer_without_quota_headers_has_no_snapshot() -> None:
    assert call("openai", 200, OPENAI_OK, {}).rate_limits is None
    with pytest.raises(errors.ProviderBadRequestError) as raised:
        call("openai", 400, {"error": {"message": "bad", "type": "invalid_request_error"}}, {})
    assert raised.value.rate_limits is None


def test_utc_is_used_for_dates() -> None:
    assert datetime.fromtimestamp(NOW, UTC).isoformat() == "2025-08-21T12:40:59+00:00"


def test_anthropic_without_the_combined_family_the_smallest_share_left_counts() -> None:
    headers = {k: v for k, v in ANTHROPIC_CAPTURED.items() if not k.startswith("anthropic-ratelimit-tokens-")}
    headers["anthropic-ratelimit-output-tokens-remaining"] = "1000"  # 1/16 left, against all of the input's
    snapshot = rate_limits("anthropic", httpx.Headers(headers), status=200, now=NOW)
    assert snapshot is not None
    assert (snapshot.limit_tokens, snapshot.remaining_tokens) == (16000, 1000)
    assert snapshot.tokens_reset_at == at("2025-08-21T12:41:00+00:00")


def test_a_streamed_answer_ends_with_the_snapshot_of_its_response_headers() -> None:
    from llm_gateway.streaming.events import StreamEnd, TextDelta

    chunks = [
        {"id": "c1", "model": "gpt-4o-mini", "choices": [{"index": 0, "delta": {"content": "hi"}}]},
        {"id": "c1", "model": "gpt-4o-mini", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ]
    sse = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"

    def handler(_: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=sse.encode(), headers={**AZURE_200, "content-type": "text/event-stream"})

    provider = adapter_class("azure_openai")(base_url="http://test", api_key="k", api_version="2024-10-21")
    request = ProviderRequest(model="gpt-4o-mini", messages=[Message(role="user", content="hi")], max_tokens=10)

    async def go() -> list[Any]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            stream = provider.stream(request, client=client, timeout_s=2, first_byte_timeout_s=2, idle_timeout_s=2)
            return [event async for event in stream]

    *deltas, end = asyncio.run(go())
    assert deltas == [TextDelta("hi")]
    assert isinstance(end, StreamEnd) and end.finish_reason == "stop"
    assert end.rate_limits == RateLimitSnapshot(remaining_requests=79, remaining_tokens=61353)


def test_a_reset_time_years_away_is_read_as_a_day() -> None:
    headers = {
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": "2099-01-01T00:00:00Z",
    }
    snapshot = rate_limits("anthropic", httpx.Headers(headers), status=200, now=NOW)
    assert snapshot is not None and snapshot.exhausted_until() == NOW + 86_400
