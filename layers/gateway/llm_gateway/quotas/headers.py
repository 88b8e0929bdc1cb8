"""What a provider's answer says about its quota, read from its headers (and Gemini's 429 body).

Each adapter names the dialect it speaks (``Provider.rate_limit_dialect``):

- ``openai``: ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``; resets are durations such
  as ``1s``, ``6ms``, ``6m0s`` or ``1h2m3.5s``.
- ``anthropic``: ``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}``;
  resets are RFC 3339 times. The tightest token family counts.
- ``azure``: OpenAI's names, of which Azure sends mostly ``remaining``; a reset may be bare seconds, and
  older answers spell it ``x-rate-limit-reset-tokens``. ``-1`` means "not known".
- ``gemini``: no quota headers; a 429 says when to retry in its body (``RetryInfo.retryDelay``, "30s").

On an error, ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date) say when to call again.
Every time is returned as epoch seconds; a value that cannot be read counts as not said.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from llm_gateway.quotas.model import RateLimitSnapshot

MAX_RETRY_AFTER_S = 3600.0
MAX_RESET_S = 86_400.0  # a reset further away than a day (a daily quota) is read as a day
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|us|µs|ns|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_ANTHROPIC_TOKEN_FAMILIES = ("tokens", "input-tokens", "output-tokens")

Headers = Mapping[str, str]  # case-insensitive lookups (httpx.Headers); tests may pass lower-case dicts


def parse_duration(text: str | None) -> float | None:
    """Seconds in a Go-style duration (``1m0s``, ``6ms``, ``1h2m3.5s``); a bare number is seconds."""
    if text is None:
        return None
    text = text.strip()
    if not text:
        return None
    try:
        return min(_non_negative(float(text)), MAX_RESET_S)
    except ValueError:
        pass
    total, end = 0.0, 0
    for match in _DURATION.finditer(text):
        if match.start() != end:
            return None
        total += float(match.group(1)) * _UNIT_S[match.group(2)]
        end = match.end()
    return min(total, MAX_RESET_S) if end == len(text) and end > 0 else None


def parse_rfc3339(text: str | None) -> float | None:
    """Epoch seconds of an RFC 3339 time (``2025-08-21T12:40:59Z``, fractions and offsets allowed)."""
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        return None
    return when.timestamp() if when.tzinfo is not None else None


def retry_after_seconds(headers: Headers, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date), capped."""
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return min(_non_negative(float(ms) / 1000.0), MAX_RETRY_AFTER_S)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        return min(_non_negative(float(raw)), MAX_RETRY_AFTER_S)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    now = time.time() if now is None else now
    return min(_non_negative(when.timestamp() - now), MAX_RETRY_AFTER_S)


def gemini_retry_delay(body: Any) -> float | None:
    """``RetryInfo.retryDelay`` of a Gemini error body (``{"error": {"details": [...]}}``, or a list of them)."""
    if isinstance(body, list) and body:
        body = body[0]
    error = body.get("error") if isinstance(body, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    for detail in details if isinstance(details, list) else []:
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            delay = parse_duration(str(detail.get("retryDelay", "")))
            return min(delay, MAX_RETRY_AFTER_S) if delay is not None else None
    return None


def rate_limits(
    dialect: str, headers: Headers, *, status: int, body: Any = None, now: float | None = None
) -> RateLimitSnapshot | None:
    """The snapshot one answer gives (None when it says nothing). ``now``: when it was received."""
    now = time.time() if now is None else now
    if dialect == "openai":
        fields = _openai(headers, now)
    elif dialect == "azure":
        fields = _azure(headers, now)
    elif dialect == "anthropic":
        fields = _anthropic(headers, now)
    else:
        fields = {}
    if status >= 400:
        wait = retry_after_seconds(headers, now)
        if wait is None and dialect == "gemini" and status == 429:
            wait = gemini_retry_delay(body)
        if wait is not None:
            fields["retry_after_at"] = now + wait
    said = {k: v for k, v in fields.items() if v is not None}
    return RateLimitSnapshot(**said) if said else None


# --- dialects -------------------------------------------------------------------------------------


def _openai(headers: Headers, now: float) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for unit in ("requests", "tokens"):
        fields[f"limit_{unit}"] = _count(headers.get(f"x-ratelimit-limit-{unit}"))
        fields[f"remaining_{unit}"] = _count(headers.get(f"x-ratelimit-remaining-{unit}"))
        fields[f"{unit}_reset_at"] = _after(now, parse_duration(headers.get(f"x-ratelimit-reset-{unit}")))
    return fields


def _azure(headers: Headers, now: float) -> dict[str, Any]:
    fields = _openai(headers, now)
    if fields["tokens_reset_at"] is None:  # older Azure answers: x-rate-limit-reset-tokens, in seconds
        fields["tokens_reset_at"] = _after(now, parse_duration(headers.get("x-rate-limit-reset-tokens")))
    return fields


def _anthropic(headers: Headers, now: float) -> dict[str, Any]:
    prefix = "anthropic-ratelimit-"
    fields: dict[str, Any] = {
        "limit_requests": _count(headers.get(f"{prefix}requests-limit")),
        "remaining_requests": _count(headers.get(f"{prefix}requests-remaining")),
        "requests_reset_at": _until(now, parse_rfc3339(headers.get(f"{prefix}requests-reset"))),
    }
    # tokens-* is the most restrictive limit in effect; input- and output-tokens are read as well, so that
    # an exhausted one counts even when tokens-* is missing or lags. Exhausted first (the later reset),
    # then tokens-*, then the family with the smallest share left.
    families: dict[str, tuple[int, int | None, float | None]] = {}
    for family in _ANTHROPIC_TOKEN_FAMILIES:
        remaining = _count(headers.get(f"{prefix}{family}-remaining"))
        if remaining is not None:
            limit = _count(headers.get(f"{prefix}{family}-limit"))
            families[family] = (remaining, limit, _until(now, parse_rfc3339(headers.get(f"{prefix}{family}-reset"))))
    exhausted = [f for f in families.values() if f[0] == 0]
    if exhausted:
        chosen: tuple[int, int | None, float | None] | None = max(exhausted, key=lambda f: f[2] or 0.0)
    else:
        chosen = families.get("tokens") or min(families.values(), key=_share_left, default=None)
    if chosen is not None:
        fields.update(remaining_tokens=chosen[0], limit_tokens=chosen[1], tokens_reset_at=chosen[2])
    return fields


def _share_left(family: tuple[int, int | None, float | None]) -> float:
    remaining, limit, _ = family
    return remaining / limit if limit else float(remaining)


def _count(text: str | None) -> int | None:
    """A non-negative whole count; ``-1`` (Azure: not known) and anything unreadable are None."""
    if text is None:
        return None
    try:
        value = int(float(text.strip()))
    except (ValueError, OverflowError):
        return None
    return value if value >= 0 else None


def _until(now: float, when: float | None) -> float | None:
    """An absolute reset, no further away than a day (as durations are read)."""
    return None if when is None else min(when, now + MAX_RESET_S)


def _after(now: float, seconds: float | None) -> float | None:
    return None if seconds is None else now + seconds


def _non_negative(value: float) -> float:
    if value != value:  # NaN
        raise ValueError("not a number")
    return max(value, 0.0)
