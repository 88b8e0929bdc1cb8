"""Shared quota state in DynamoDB (QuotaTable): per-window counters and "exhausted until" per deployment.

Items (``pk`` + ``sk``, ``expires_at`` is the table's TTL):

* ``QUOTA#<deployment>`` / ``W#<window>``: ``req`` and ``tok``, the requests and tokens reserved in one
  fixed window (window = ``int(now // window_s)``). A reservation is one ``UpdateItem``: ``ADD req :n,
  tok :t`` with a condition that both stay within the declared RPM/TPM, so no two instances can overshoot
  together (the condition and the add are one atomic step). ``ALL_NEW`` returns the counts, which keep
  every instance's view of the deployment's utilisation current at no extra read.
* ``QUOTA#<deployment>`` / ``EXHAUSTED``: ``until`` (epoch seconds), written when a provider said no
  request or token is left (or answered 429); only ever moved later, never earlier.

Why DynamoDB and not Momento increments: a conditional ``ADD`` refuses a request over the limit in the
same round trip, without overshooting; Momento's ``increment`` has no condition, so an instance would
have to increment, look, and decrement again on refusal (two round trips, and a transient overshoot
that other instances see). Every instance already has a DynamoDB client and the local stack runs it.

DynamoDB's TTL deletes late: an expired item can still be read, so readers check the window and the
time themselves (an old window is simply never asked for; ``until`` in the past means "not exhausted").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llm_gateway import aws

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

EXHAUSTED_SK = "EXHAUSTED"
KEEP_AFTER_S = 3600  # items outlive their window or reset by this much before TTL removes them


@dataclass(frozen=True)
class WindowCounts:
    requests: int = 0
    tokens: int = 0


@dataclass(frozen=True)
class Admission:
    """The outcome of one reservation: ``admitted``, and the window's counts after it (or, when refused,
    as they were: what filled it)."""

    admitted: bool
    counts: WindowCounts


@dataclass(frozen=True)
class SharedQuota:
    """One deployment's shared state as read: the window's counts and its exhausted-until time (0: none)."""

    counts: WindowCounts
    exhausted_until: float


class DynamoDBQuotaStore:
    def __init__(self, table: str, *, client: Callable[[], DynamoDBClient] | None = None) -> None:
        self.table = table
        # Fail fast: a request waits on these, and a failure is fail-open (see tracker.py).
        self._client = client or (lambda: aws.dynamodb(aws.FAST))

    async def reserve(
        self,
        deployment: str,
        window: int,
        *,
        requests: int,
        tokens: int,
        rpm: int | None,
        tpm: int | None,
        expires_at: int,
    ) -> Admission:
        """Add ``requests`` and ``tokens`` to the window's counts if both stay within the limits."""
        conditions = []
        values: dict[str, Any] = {":r": _n(requests), ":t": _n(tokens), ":exp": _n(expires_at + KEEP_AFTER_S)}
        if rpm is not None:
            conditions.append("(attribute_not_exists(req) OR req <= :rroom)")
            values[":rroom"] = _n(rpm - requests)
        if tpm is not None:
            conditions.append("(attribute_not_exists(tok) OR tok <= :troom)")
            values[":troom"] = _n(tpm - tokens)
        extra: dict[str, Any] = {"ConditionExpression": " AND ".join(conditions)} if conditions else {}
        try:
            response = await aws.in_thread(
                self._client().update_item,
                TableName=self.table,
                Key=_key(deployment, f"W#{window}"),
                UpdateExpression="ADD req :r, tok :t SET expires_at = if_not_exists(expires_at, :exp)",
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
                **extra,
            )
        except Exception as exc:
            if aws.error_code(exc) == "ConditionalCheckFailedException":
                old = getattr(exc, "response", {}).get("Item") or {}
                return Admission(False, _counts(old))
            raise
        return Admission(True, _counts(response.get("Attributes") or {}))

    async def adjust(self, deployment: str, window: int, *, requests: int = 0, tokens: int = 0) -> None:
        """Correct a window's counts: a token estimate by what the call used, or a reservation taken back."""
        if requests == 0 and tokens == 0:
            return
        await aws.in_thread(
            self._client().update_item,
            TableName=self.table,
            Key=_key(deployment, f"W#{window}"),
            UpdateExpression="ADD req :r, tok :t",
            ExpressionAttributeValues={":r": _n(requests), ":t": _n(tokens)},
        )

    async def mark_exhausted(self, deployment: str, until: float) -> bool:
        """Record that the deployment has nothing left until ``until``; True if this moved it later."""
        try:
            await aws.in_thread(
                self._client().update_item,
                TableName=self.table,
                Key=_key(deployment, EXHAUSTED_SK),
                UpdateExpression="SET #u = :u, expires_at = :exp",
                ConditionExpression="attribute_not_exists(#u) OR #u < :u",
                ExpressionAttributeNames={"#u": "until"},
                ExpressionAttributeValues={":u": _n(round(until, 3)), ":exp": _n(int(until) + KEEP_AFTER_S)},
            )
        except Exception as exc:
            if aws.error_code(exc) == "ConditionalCheckFailedException":
                return False  # another instance recorded the same or a later reset
            raise
        return True

    async def read(self, deployments: Sequence[str], window: int) -> dict[str, SharedQuota]:
        """Every deployment's window counts and exhausted-until, in one BatchGetItem (eventually consistent:
        a view, refreshed often; reservations themselves are exact)."""
        keys = [_key(d, sk) for d in deployments for sk in (f"W#{window}", EXHAUSTED_SK)]
        found: dict[tuple[str, str], Mapping[str, Any]] = {}
        request: dict[str, Any] = {self.table: {"Keys": keys}}
        for _ in range(3):  # unprocessed keys come back under load; a partial view is still a view
            response = await aws.in_thread(self._client().batch_get_item, RequestItems=request)
            for item in response.get("Responses", {}).get(self.table, []):
                found[(item["pk"]["S"], item["sk"]["S"])] = item
            request = response.get("UnprocessedKeys") or {}
            if not request:
                break
        out: dict[str, SharedQuota] = {}
        for deployment in deployments:
            counts = _counts(found.get((f"QUOTA#{deployment}", f"W#{window}"), {}))
            exhausted = found.get((f"QUOTA#{deployment}", EXHAUSTED_SK), {})
            out[deployment] = SharedQuota(counts, float(exhausted.get("until", {}).get("N", "0")))
        return out


def _key(deployment: str, sk: str) -> dict[str, dict[str, str]]:
    return {"pk": {"S": f"QUOTA#{deployment}"}, "sk": {"S": sk}}


def _counts(item: Mapping[str, Any]) -> WindowCounts:
    def number(name: str) -> int:
        attr = item.get(name)
        return int(float(attr["N"])) if isinstance(attr, dict) and "N" in attr else 0

    return WindowCounts(requests=number("req"), tokens=number("tok"))


def _n(value: float) -> dict[str, str]:
    return {"N": str(value)}
