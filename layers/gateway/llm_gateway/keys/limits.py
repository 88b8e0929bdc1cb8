"""Requests-per-minute and tokens-per-minute limits per key, exact across every Lambda instance.

One DynamoDB item per key and fixed minute (``RATE#<key_id>#<minute start>`` in the keys table) holds
``requests`` and ``tokens``. Admitting a request is one conditional UpdateItem that adds 1 request and
the request's estimated tokens only if, before it, ``requests < rpm`` and ``tokens <= tpm - estimate``.
DynamoDB applies conditional updates to an item one at a time, so however many instances race, exactly
``rpm`` requests are admitted per minute, and reserved tokens never exceed ``tpm``. A refused request
writes nothing. After the call, :meth:`RateLimiter.settle` adds ``actual - estimate`` (unconditionally:
the tokens were spent), so the minute's tokens end within one request's estimation error of ``tpm``
and a short estimate is still counted against later requests of that minute.

Why not a token bucket or a sliding window: both need a read-modify-write (a conditional update
against the previous value, retried on conflict); a fixed window is one write that cannot conflict.
The price is a burst of up to 2 x rpm across a minute boundary, which per-minute limits accept.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llm_gateway import aws
from llm_gateway.errors import KeyRateLimitedError, KeyStoreUnavailableError
from llm_gateway.keys.policy import VerifiedKey
from llm_gateway.keys.store import KeyStore

log = logging.getLogger("llm_gateway.keys")

WINDOW_S = 60
COUNTER_RETENTION_S = 2 * 3600  # DynamoDB TTL removes old windows (TTL is lazy: nothing reads them)


@dataclass(frozen=True)
class Admission:
    """What admitting a request reserved: settle it with the actual tokens once they are known."""

    key_id: str
    window: int = 0  # start of the minute (epoch seconds); 0: nothing was counted (no limits)
    reserved_tokens: int = 0

    @property
    def counted(self) -> bool:
        return self.window > 0


class RateLimiter:
    def __init__(self, store: KeyStore, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._clock = clock

    def admit(self, key: VerifiedKey, estimated_tokens: int) -> Admission:
        rpm, tpm = key.policy.requests_per_minute, key.policy.tokens_per_minute
        if rpm is None and tpm is None:
            return Admission(key.key_id)
        estimate = max(0, int(estimated_tokens)) if tpm is not None else 0
        if tpm is not None and estimate > tpm:
            raise KeyRateLimitedError(
                f"this request needs about {estimate} tokens; the key allows {tpm} tokens per minute",
                details={"limit": "tokens_per_minute", "limit_value": tpm, "requested": estimate},
            )
        now = self._clock()
        window = int(now // WINDOW_S) * WINDOW_S
        conditions, values = [], {":one": {"N": "1"}, ":est": {"N": str(estimate)}}
        if rpm is not None:
            conditions.append("(attribute_not_exists(requests) OR requests < :rpm)")
            values[":rpm"] = {"N": str(rpm)}
        if tpm is not None:
            conditions.append("(attribute_not_exists(tokens) OR tokens <= :room)")
            values[":room"] = {"N": str(tpm - estimate)}
        values[":keep"] = {"N": str(window + COUNTER_RETENTION_S)}
        try:
            self.store.client().update_item(
                TableName=self.store.table,
                Key=_window_key(key.key_id, window),
                UpdateExpression="ADD requests :one, tokens :est SET expires_at = if_not_exists(expires_at, :keep)",
                ConditionExpression=" AND ".join(conditions),
                ExpressionAttributeValues=values,
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except Exception as exc:
            if aws.error_code(exc) == "ConditionalCheckFailedException":
                raise self._limited(key, exc, window, now) from None
            log.warning("rate counter update failed", extra={"error_type": type(exc).__name__})
            raise KeyStoreUnavailableError("the key's rate limits could not be checked; retry shortly") from None
        return Admission(key.key_id, window, estimate)

    def settle(self, admission: Admission, actual_tokens: int) -> None:
        """Correct the reserved estimate to the actual tokens (failures are logged: the request is done)."""
        delta = max(0, int(actual_tokens)) - admission.reserved_tokens
        if not admission.counted or delta == 0:
            return
        try:
            self.store.client().update_item(
                TableName=self.store.table,
                Key=_window_key(admission.key_id, admission.window),
                UpdateExpression="ADD tokens :delta",
                ExpressionAttributeValues={":delta": {"N": str(delta)}},
            )
        except Exception as exc:
            log.warning(
                "rate counter settle failed", extra={"key_id": admission.key_id, "error_type": type(exc).__name__}
            )

    def _limited(self, key: VerifiedKey, exc: BaseException, window: int, now: float) -> KeyRateLimitedError:
        old: dict[str, Any] = getattr(exc, "response", {}).get("Item") or {}
        requests = int(old.get("requests", {}).get("N", "0"))
        rpm = key.policy.requests_per_minute
        which = "requests_per_minute" if rpm is not None and requests >= rpm else "tokens_per_minute"
        limit = rpm if which == "requests_per_minute" else key.policy.tokens_per_minute
        retry_after = max(1, math.ceil(window + WINDOW_S - now))
        unit = "requests" if which == "requests_per_minute" else "tokens"
        return KeyRateLimitedError(
            f"rate limit reached for this key: {limit} {unit} per minute; retry in {retry_after} s",
            details={"limit": which, "limit_value": limit},
            retry_after=retry_after,
        )


def _window_key(key_id: str, window: int) -> dict[str, Any]:
    return {"pk": {"S": f"RATE#{key_id}#{window}"}}
