"""Per-deployment quotas: RPM/TPM over a window of configurable length, refused past the quota with a 429
and answered with each provider's rate-limit headers, as the real APIs do.

A *deployment* is what a provider counts a quota against: the API key presented (OpenAI, compat,
Anthropic, Gemini; two keys are two deployments), or for Azure OpenAI the deployment named in the URL
(``azure/<name>``). Every request is counted per deployment (``stats``), with or without a quota; a
deployment without a quota is unlimited and its answers carry no rate-limit headers of their own. Stats
and the call log name a deployment as its quota was set; a key without a quota by a fingerprint
(``key-<sha256 prefix>``), so that keys are not recorded in clear.

Counting: fixed windows of ``window_s`` seconds from when the quota was set (a "minute" of 5 s lets a
test see a reset without waiting a real minute). A request costs one request and its input tokens plus
its ``max_tokens`` (OpenAI's estimate, counted when the request arrives); it is refused when no request
is left or its tokens do not fit in what is left.

Headers: OpenAI ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` with resets as durations
(``4.2s``, ``120ms``, ``1m0s``); Anthropic ``anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}``
with resets as RFC 3339 times and ``retry-after`` on a 429; Azure ``x-ratelimit-remaining-{requests,tokens}``
and on a 429 ``retry-after`` and ``retry-after-ms``; Gemini no headers, a 429 body with ``RetryInfo``.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from local.simulator.wire import Json, Response, _json_response

AZURE_PREFIX = "azure/"


@dataclass
class Quota:
    rpm: int | None
    tpm: int | None
    window_s: float
    started: float  # windows are counted from here
    window: int = -1  # index of the window the counts below belong to
    requests: int = 0
    tokens: int = 0


@dataclass
class Counts:
    requests: int = 0  # every request that reached the deployment
    refused: int = 0  # refused with a 429 for its quota
    rate_limited: int = 0  # every 429 answered (quota or an injected rate_limit fault)
    tokens: int = 0  # tokens counted against the quota (input + max_tokens of the admitted requests)


@dataclass(frozen=True)
class Standing:
    """Where a deployment stands after a request: what its headers say."""

    rpm: int | None
    tpm: int | None
    remaining_requests: int
    remaining_tokens: int
    reset_in_s: float  # until the window ends
    reset_at: float
    refused_for: str | None = None  # "requests" or "tokens" when the request was refused
    requested_tokens: int = 0
    used: Json = field(default_factory=dict)


class Quotas:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._quotas: dict[str, Quota] = {}
        self._counts: dict[str, Counts] = {}

    def set(self, deployment: str, rpm: int | None = None, tpm: int | None = None, window_s: float = 60.0) -> None:
        for name, value in (("rpm", rpm), ("tpm", tpm)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None")
        if rpm is None and tpm is None:
            raise ValueError("a quota needs rpm, tpm or both")
        if not isinstance(window_s, int | float) or not 0.05 <= float(window_s) <= 3600:
            raise ValueError("window_s must be between 0.05 and 3600 seconds")
        if not isinstance(deployment, str) or not deployment:
            raise ValueError("deployment must be a non-empty string (an API key, or azure/<deployment name>)")
        with self._lock:
            self._quotas[deployment] = Quota(rpm, tpm, float(window_s), time.time())

    def label(self, deployment: str) -> str:
        """How a deployment is named in stats and the call log: as its quota was set, or for a key without
        a quota a fingerprint (keys are never recorded in clear)."""
        if deployment.startswith(AZURE_PREFIX):
            return deployment
        with self._lock:
            if deployment in self._quotas:
                return deployment
        return "key-" + hashlib.sha256(deployment.encode()).hexdigest()[:10]

    def clear(self) -> None:
        with self._lock:
            self._quotas.clear()
            self._counts.clear()

    def stats(self) -> dict[str, Json]:
        with self._lock:
            return {name: vars(counts).copy() for name, counts in self._counts.items()}

    def admit(self, deployment: str, tokens: int, now: float | None = None) -> Standing | None:
        """Count one request of ``tokens`` estimated tokens; None when the deployment has no quota."""
        now = time.time() if now is None else now
        with self._lock:
            counts = self._counts.setdefault(deployment, Counts())
            counts.requests += 1
            quota = self._quotas.get(deployment)
            if quota is None:
                return None
            window = int((now - quota.started) // quota.window_s)
            if window != quota.window:
                quota.window, quota.requests, quota.tokens = window, 0, 0
            reset_at = quota.started + (window + 1) * quota.window_s
            refused_for = None
            if quota.rpm is not None and quota.requests >= quota.rpm:
                refused_for = "requests"
            elif quota.tpm is not None and quota.tokens + tokens > quota.tpm:
                refused_for = "tokens"
            if refused_for is None:
                quota.requests += 1
                quota.tokens += tokens
                counts.tokens += tokens
            else:
                counts.refused += 1
            return Standing(
                rpm=quota.rpm,
                tpm=quota.tpm,
                remaining_requests=max((quota.rpm or 0) - quota.requests, 0),
                remaining_tokens=max((quota.tpm or 0) - quota.tokens, 0),
                reset_in_s=max(reset_at - now, 0.0),
                reset_at=reset_at,
                refused_for=refused_for,
                requested_tokens=tokens,
                used={"requests": quota.requests, "tokens": quota.tokens},
            )

    def answered(self, deployment: str, status: int) -> None:
        if status == 429:
            with self._lock:
                self._counts.setdefault(deployment, Counts()).rate_limited += 1


# --------------------------------------------------------------------------- headers and refusals


def go_duration(seconds: float) -> str:
    """A duration as OpenAI writes its resets: ``120ms``, ``4.2s``, ``1m0s``."""
    if seconds < 1:
        return f"{max(math.ceil(seconds * 1000), 1)}ms"
    minutes, rest = divmod(seconds, 60)
    text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{text}" if minutes else text


def rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def headers_for(dialect: str, standing: Standing) -> dict[str, str]:
    """The rate-limit headers the provider of ``dialect`` sends with every answer."""
    s = standing
    out: dict[str, str] = {}
    if dialect in ("openai", "compat"):
        for unit, limit, remaining in (
            ("requests", s.rpm, s.remaining_requests),
            ("tokens", s.tpm, s.remaining_tokens),
        ):
            if limit is not None:
                out[f"x-ratelimit-limit-{unit}"] = str(limit)
                out[f"x-ratelimit-remaining-{unit}"] = str(remaining)
                out[f"x-ratelimit-reset-{unit}"] = go_duration(s.reset_in_s)
    elif dialect == "anthropic":
        for unit, limit, remaining in (
            ("requests", s.rpm, s.remaining_requests),
            ("tokens", s.tpm, s.remaining_tokens),
        ):
            if limit is not None:
                out[f"anthropic-ratelimit-{unit}-limit"] = str(limit)
                out[f"anthropic-ratelimit-{unit}-remaining"] = str(remaining)
                out[f"anthropic-ratelimit-{unit}-reset"] = rfc3339(s.reset_at)
    elif dialect == "azure":
        if s.rpm is not None:
            out["x-ratelimit-remaining-requests"] = str(s.remaining_requests)
        if s.tpm is not None:
            out["x-ratelimit-remaining-tokens"] = str(s.remaining_tokens)
    if s.refused_for is not None and dialect != "gemini":
        wait = max(s.reset_in_s, 0.001)
        out["retry-after"] = str(max(math.ceil(wait), 1))
        if dialect == "azure":
            out["retry-after-ms"] = str(math.ceil(wait * 1000))
    return out


def refusal(dialect: str, standing: Standing, model: str) -> Response:
    """The provider's 429 for a request past its deployment's quota."""
    s = standing
    unit = s.refused_for or "requests"
    per_min = "requests per min (RPM)" if unit == "requests" else "tokens per min (TPM)"
    limit = s.rpm if unit == "requests" else s.tpm
    used = s.used.get(unit, 0)
    wait = max(math.ceil(s.reset_in_s), 1)
    headers = headers_for(dialect, s)
    if dialect == "anthropic":
        body: Any = {
            "type": "error",
            "error": {
                "type": "rate_limit_error",
                "message": f"This request would exceed the rate limit for your organization of {limit} "
                f"{'requests' if unit == 'requests' else 'tokens'} per minute.",
            },
        }
        return _json_response(429, body, {**headers, "x-should-retry": "true"})
    if dialect == "azure":
        message = (
            "Requests to the ChatCompletions_Create Operation have exceeded "
            f"{'call' if unit == 'requests' else 'token'} rate limit of your current OpenAI S0 pricing tier. "
            f"Please retry after {wait} seconds."
        )
        return _json_response(429, {"error": {"code": "429", "message": message}}, headers)
    if dialect == "gemini":
        error = {
            "code": 429,
            "message": "You exceeded your current quota, please check your plan and billing details.",
            "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{wait}s"}],
        }
        return _json_response(429, {"error": error}, headers)
    message = (
        f"Rate limit reached for {model} in organization org-sim on {per_min}: Limit {limit}, Used {used}, "
        f"Requested {1 if unit == 'requests' else s.requested_tokens}. Please try again in {go_duration(s.reset_in_s)}."
    )
    body = {"error": {"message": message, "type": unit, "param": None, "code": "rate_limit_exceeded"}}
    return _json_response(429, body, headers)


def deployment_of(provider: str, headers: dict[str, str], query: dict[str, str], path_model: str | None) -> str | None:
    """What the provider counts this request's quota against; None for Bedrock (signed, no key)."""
    if provider == "azure":
        return f"{AZURE_PREFIX}{path_model}" if path_model else None
    auth = headers.get("authorization", "")
    bearer = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
    if provider in ("openai", "compat"):
        return bearer or None
    if provider == "anthropic":
        return headers.get("x-api-key") or bearer or None
    if provider == "gemini":
        return headers.get("x-goog-api-key") or query.get("key") or None
    return None


def with_quota_headers(provider: str, headers: dict[str, str], standing: Standing) -> dict[str, str]:
    """``headers`` with the deployment's own rate-limit headers instead of any fixed ones a dialect sends."""
    kept = {k: v for k, v in headers.items() if not k.lower().startswith(_RATE_LIMIT_PREFIXES)}
    return {**kept, **headers_for(provider, standing)}


_RATE_LIMIT_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-")
