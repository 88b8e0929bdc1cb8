"""The usage ledger: one record per provider attempt (and per cache hit), plus running aggregates.

Item layout in the usage table (``pk`` + ``sk``):

* ``USAGE#<tenant>#<YYYY-MM-DD>`` / ``<ISO time>#<record id>``: one attempt: tenant, request id,
  operation, provider, model, outcome (``success`` | ``error`` | ``cache_hit``, and for streams
  ``truncated``: the provider broke it after it began, ``cancelled``: the caller left; ``blocked``: a
  guardrail refused the input, provider ``guardrails`` and model ``<check>/<kind>``), error code,
  input/output/cached-input tokens, cost, latency, and (for hits) the cost the hit saved.
* ``AGG#<tenant>`` / ``DAY#<date>``, ``AGG#<tenant>`` / ``MODEL#<date>#<provider>/<model>`` and, for
  requests made with a gateway key (``key_id`` in the context's tags), ``AGG#<tenant>`` /
  ``KEY#<date>#<key_id>``, and for attempts on a known deployment ``AGG#<tenant>`` /
  ``DEPLOY#<date>#<deployment>``: counters ``requests``, ``attempts``, ``errors``, ``cache_hits``,
  ``input_tokens``, ``output_tokens``, ``cached_input_tokens``, ``cost_pusd``, ``saved_pusd`` kept with
  atomic ``ADD`` (money as integer pico-dollars, see money.py; reports convert back to USD).

The record and both aggregates are written in one transaction whose record ``Put`` is conditional
on the record not existing: a record is counted exactly once, even when it is replayed. Concurrent
transactions on a busy tenant's aggregate items cancel each other (``TransactionConflict``), which
botocore does not retry: the ledger retries those itself, a few times with jittered backoff within the
invocation's deadline (a cancelled transaction wrote nothing, so this cannot double-count). A write
that still fails goes to the retry queue as::

    {"kind": "usage", "version": 1, "record": {<UsageRecord fields>}}

and the retry worker calls :func:`replay_usage_message` with the message body. If even the queue is
unreachable the record is logged at ERROR level in full (it holds no prompt text), so it can be
recovered from the logs. ``requests`` counts answered requests (successful attempts plus cache hits);
``attempts`` every provider call, ``errors`` the failed ones, a truncated stream included (a cancelled
one is the caller's doing, not an error). The tokens and cost of truncated and cancelled streams are
what the provider generated before the end: they are billed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ValidationError

from llm_gateway import aws
from llm_gateway.accounting.counters import Counters
from llm_gateway.accounting.money import to_pusd, usd_text
from llm_gateway.errors import InvalidRequestError, NotConfiguredError
from llm_gateway.interfaces import RequestContext
from llm_gateway.models import Attempt, CompletionResult
from llm_gateway.observability.spans import traced
from llm_gateway.routing.deadline import Deadline

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sqs import SQSClient

log = logging.getLogger("llm_gateway.accounting.usage")

USAGE_MESSAGE_KIND = "usage"
USAGE_MESSAGE_VERSION = 1
COUNTERS = (
    "requests",
    "attempts",
    "errors",
    "cache_hits",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cost_pusd",
    "saved_pusd",
)
MONEY = {"cost_pusd": "cost_usd", "saved_pusd": "saved_usd"}  # stored name -> reported name (USD)
CONFLICT_RETRIES = 4  # after the first try; conflicts clear in milliseconds
STALLED_SKIP_S = 10.0  # after a timeout or throttle, records are queued without trying DynamoDB this long
CONFLICT_BASE_DELAY_S = 0.025  # full jitter: up to 25, 50, 100, 200 ms
CONFLICT_TIME_NEEDED_S = 1.0  # do not start another try with less time left than this


class UsageRecord(BaseModel):
    record_id: str
    tenant: str
    request_id: str
    operation: str
    timestamp: float
    provider: str
    model: str
    outcome: Literal["success", "error", "cache_hit", "skipped", "truncated", "cancelled", "blocked"]
    error_code: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cost_usd: float = 0.0
    saved_usd: float = 0.0
    latency_ms: float = 0.0
    key_id: str | None = None  # the gateway key the request came with (RequestContext.tags["key_id"])
    deployment: str | None = None  # which deployment of the model served the attempt (quotas/)

    @property
    def day(self) -> str:
        return datetime.fromtimestamp(self.timestamp, UTC).strftime("%Y-%m-%d")

    def increments(self) -> dict[str, int]:
        return {
            "requests": int(self.outcome in ("success", "cache_hit")),
            "attempts": int(self.outcome in ("success", "error", "truncated", "cancelled")),
            "errors": int(self.outcome in ("error", "truncated")),
            "cache_hits": int(self.outcome == "cache_hit"),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "cost_pusd": to_pusd(self.cost_usd),
            "saved_pusd": to_pusd(self.saved_usd),
        }


def record_for_attempt(ctx: RequestContext, attempt: Attempt, *, now: float) -> UsageRecord:
    return UsageRecord(
        record_id=uuid.uuid4().hex,
        tenant=ctx.tenant,
        request_id=ctx.request_id,
        operation=ctx.operation,
        timestamp=now,
        provider=attempt.provider,
        model=attempt.model,
        outcome=attempt.outcome,
        error_code=attempt.error_code,
        input_tokens=attempt.usage.input_tokens,
        output_tokens=attempt.usage.output_tokens,
        cached_input_tokens=attempt.usage.cached_input_tokens,
        cost_usd=attempt.cost_usd,
        latency_ms=attempt.duration_ms,
        key_id=ctx.tags.get("key_id"),
        deployment=attempt.deployment,
    )


def record_for_cache_hit(ctx: RequestContext, result: CompletionResult, saved_usd: float, *, now: float) -> UsageRecord:
    return UsageRecord(
        record_id=uuid.uuid4().hex,
        tenant=ctx.tenant,
        request_id=ctx.request_id,
        operation=ctx.operation,
        timestamp=now,
        provider=result.provider,
        model=result.model,
        outcome="cache_hit",
        saved_usd=saved_usd,
        latency_ms=result.latency_ms,
        key_id=ctx.tags.get("key_id"),
    )


def usage_message(record: UsageRecord) -> dict[str, Any]:
    return {"kind": USAGE_MESSAGE_KIND, "version": USAGE_MESSAGE_VERSION, "record": record.model_dump(mode="json")}


class UsageLedger:
    """The gateway's UsageRecorder. Never fails a request: a write that cannot land is queued."""

    def __init__(
        self,
        table: str,
        *,
        queue_url: str | None = None,
        retention_days: int = 400,
        client: Callable[[], DynamoDBClient] | None = None,
        queue_client: Callable[[], SQSClient] | None = None,
        clock: Callable[[], float] = time.time,
        counters: Counters | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.table = table
        self.queue_url = queue_url
        self._rng = rng or random.Random()
        self.retention_days = retention_days
        self._client = client or (lambda: aws.dynamodb(aws.DURABLE))
        self._queue_client = queue_client or (lambda: aws.sqs(aws.STANDARD))
        self._clock = clock
        self.counters = counters or Counters()

    async def record(self, ctx: RequestContext, attempt: Attempt) -> None:
        record = record_for_attempt(ctx, attempt, now=self._clock())
        await ctx.defer.soon(lambda: self._save(record, ctx.deadline))

    async def record_cache_hit(self, ctx: RequestContext, result: CompletionResult, saved_usd: float) -> None:
        record = record_for_cache_hit(ctx, result, saved_usd, now=self._clock())
        await ctx.defer.soon(lambda: self._save(record, ctx.deadline))

    @traced("ledger.write")
    async def _save(self, record: UsageRecord, deadline: Deadline | None = None) -> None:
        if aws.recently_unavailable("dynamodb"):
            # DynamoDB just timed out or throttled a write: do not make every record of this sandbox
            # wait through botocore's timeouts and retries too (after the response, that time counts
            # against the invocation, and a sandbox that times out loses what it had not written).
            self.counters.add("UsageWriteSkippedWhileStalled")
            await self._queue(record)
            return
        tries = 0
        while True:
            try:
                await aws.in_thread(
                    write_record, self._client(), self.table, record, retention_days=self.retention_days
                )
                self.counters.add("UsageRecorded")
                return
            except Exception as exc:
                delay = self._conflict_delay(exc, tries, deadline)
                if delay is None:
                    log.warning(
                        "usage write failed, queueing it", extra={"error": type(exc).__name__, "detail": str(exc)}
                    )
                    self.counters.add("UsageWriteFailed")
                    if aws.is_unavailable(exc):
                        aws.note_unavailable("dynamodb", STALLED_SKIP_S)
                    break
            self.counters.add("UsageWriteConflict")
            tries += 1
            await asyncio.sleep(delay)
        await self._queue(record)

    async def _queue(self, record: UsageRecord) -> None:
        """The retry queue (the worker replays it); if even that fails, the full record at ERROR."""
        try:
            if not self.queue_url:
                raise NotConfiguredError("no RETRY_QUEUE_URL configured")
            await aws.in_thread(
                self._queue_client().send_message,
                QueueUrl=self.queue_url,
                MessageBody=json.dumps(usage_message(record), separators=(",", ":")),
                MessageAttributes={"kind": {"DataType": "String", "StringValue": USAGE_MESSAGE_KIND}},
            )
            self.counters.add("UsageQueued")
        except Exception as exc:
            # Last resort: the full record in the logs (no prompt text in it), for manual recovery.
            log.error(
                "usage record could not be written or queued",
                extra={"error": type(exc).__name__, "usage_message": usage_message(record)},
            )
            self.counters.add("UsageLost")

    def _conflict_delay(self, exc: BaseException, tries: int, deadline: Deadline | None) -> float | None:
        """How long to wait before trying a conflicted transaction again; None: do not (queue it)."""
        if tries >= CONFLICT_RETRIES or not is_transaction_conflict(exc):
            return None
        delay = self._rng.uniform(0.0, CONFLICT_BASE_DELAY_S * 2**tries)
        if deadline is not None and deadline.remaining() < delay + CONFLICT_TIME_NEEDED_S:
            return None
        return delay


def is_transaction_conflict(exc: BaseException) -> bool:
    """A transaction cancelled because another one was writing the same item at the same time."""
    if aws.error_code(exc) != "TransactionCanceledException":
        return False
    response = getattr(exc, "response", None)
    reasons = (response.get("CancellationReasons") if isinstance(response, dict) else None) or []
    return any(reason.get("Code") == "TransactionConflict" for reason in reasons)


def write_record(client: DynamoDBClient, table: str, record: UsageRecord, *, retention_days: int = 400) -> bool:
    """Write one record and its aggregates atomically. False if it was already written (a replay)."""
    day = record.day
    increments = record.increments()
    names = {f"#{name}": name for name in increments}
    values = {f":{name}": {"N": str(value)} for name, value in increments.items()}
    adds = "ADD " + ", ".join(f"#{name} :{name}" for name in increments)
    item: dict[str, Any] = {
        "pk": {"S": f"USAGE#{record.tenant}#{day}"},
        "sk": {"S": f"{_iso(record.timestamp)}#{record.record_id}"},
        "expires_at": {"N": str(int(record.timestamp) + retention_days * 86_400)},
    }
    for name, value in record.model_dump().items():
        if value is None:
            continue
        if isinstance(value, str):
            item[name] = {"S": value}
        elif name.endswith("_usd"):
            item[name] = {"N": usd_text(value)}
        else:
            item[name] = {"N": format(Decimal(repr(round(value, 6))), "f") if isinstance(value, float) else str(value)}
    aggregate_keys = [
        {"pk": {"S": f"AGG#{record.tenant}"}, "sk": {"S": f"DAY#{day}"}},
        {"pk": {"S": f"AGG#{record.tenant}"}, "sk": {"S": f"MODEL#{day}#{record.provider}/{record.model}"}},
    ]
    if record.key_id:
        aggregate_keys.append({"pk": {"S": f"AGG#{record.tenant}"}, "sk": {"S": f"KEY#{day}#{record.key_id}"}})
    if record.deployment:
        aggregate_keys.append({"pk": {"S": f"AGG#{record.tenant}"}, "sk": {"S": f"DEPLOY#{day}#{record.deployment}"}})
    operations: list[Any] = [
        {"Put": {"TableName": table, "Item": item, "ConditionExpression": "attribute_not_exists(pk)"}},
    ]
    for key in aggregate_keys:
        operations.append(
            {
                "Update": {
                    "TableName": table,
                    "Key": key,
                    "UpdateExpression": adds,
                    "ExpressionAttributeNames": names,
                    "ExpressionAttributeValues": values,
                }
            }
        )
    try:
        client.transact_write_items(TransactItems=operations)
    except Exception as exc:
        response = getattr(exc, "response", None)  # None on a timeout: requests' exceptions carry one
        reasons = (response.get("CancellationReasons") if isinstance(response, dict) else None) or []
        if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
            return False  # recorded before: counting it again would double-bill
        raise
    return True


def replay_usage_message(
    body: str | bytes | Mapping[str, Any],
    *,
    table: str | None,
    client: DynamoDBClient | None = None,
) -> bool:
    """Apply a queued usage message (for the retry worker). Idempotent: True if written now, False if
    it had been written before. Raises InvalidRequestError for a message that can never be applied
    (send it to the dead-letter queue) and AWS errors for ones worth retrying later."""
    try:
        message = json.loads(body) if isinstance(body, str | bytes) else dict(body)
        if message.get("kind") != USAGE_MESSAGE_KIND:
            raise InvalidRequestError(f"not a usage message (kind={message.get('kind')!r})")
        if message.get("version") != USAGE_MESSAGE_VERSION:
            raise InvalidRequestError(f"unsupported usage message version {message.get('version')!r}")
        record = UsageRecord.model_validate(message.get("record"))
    except (ValueError, TypeError, AttributeError, ValidationError) as exc:
        if isinstance(exc, InvalidRequestError):
            raise
        raise InvalidRequestError(f"malformed usage message: {type(exc).__name__}") from None
    if not table:
        raise NotConfiguredError("USAGE_TABLE is not configured; cannot replay usage")
    return write_record(client or aws.dynamodb(aws.DURABLE), table, record)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
