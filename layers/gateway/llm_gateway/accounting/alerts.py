"""Budget alerts: one SNS notification per budget subject, window and threshold, even under concurrency.

A subject is a tenant or a gateway key with a budget of its own (``key:<key_id>``, see budgets.py and
keys/budget.py). When a settlement leaves a window's settled spend at or over ``threshold x limit`` (the
thresholds of ``GATEWAY_BUDGET_ALERT_THRESHOLDS``, default 0.8 and 1.0), the budget guard hands this
module the numbers, after the response (``ctx.defer``), and one notification goes to
``GATEWAY_ALERTS_TOPIC_ARN``.

Exactly once, through one marker item per subject, window and threshold in the usage table, in the
owning tenant's aggregate partition (so its usage report lists it):

* ``AGG#<tenant>`` / ``ALERT#<period>#<percent>#<subject>``: ``state`` (``claimed`` | ``sent``),
  ``claim_id``, ``claimed_at``, the alert's numbers, and once sent ``sent_at`` and ``message_id``.

1. claim: a conditional PutItem that succeeds only if no marker exists, or if one was claimed more than
   ``lease_s`` ago and never marked sent. Of N settlements crossing the threshold at once, one wins.
2. publish the notification to SNS.
3. mark it sent (conditional on our ``claim_id``).

A publish that fails releases the claim (``claimed_at`` = 0), so the next settlement of that subject in
the window tries again. A sandbox that dies between the claim and the publish leaves a stale claim,
taken over by the first settlement after the lease (at-least-once across such a crash; once otherwise).
One that dies after the publish but before step 3 may see its alert sent a second time after the lease:
the message's ``alert_id`` is the same both times, so a subscriber can drop the repeat.
"""

from __future__ import annotations

import functools
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from llm_gateway import aws
from llm_gateway.accounting.counters import Counters
from llm_gateway.accounting.money import to_usd, usd_text
from llm_gateway.interfaces import RequestContext
from llm_gateway.keys.budget import BUDGET_OWNER_TAG

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sns import SNSClient

log = logging.getLogger("llm_gateway.accounting.alerts")

KEY_SUBJECT_PREFIX = "key:"
DEFAULT_THRESHOLDS = (0.8, 1.0)
DEFAULT_LEASE_S = 300.0  # a claim older than this, never marked sent, is taken over
MARKER_RETENTION_S = 400 * 86_400
SUBJECT_MAX = 100  # SNS: at most 100 printable ASCII characters
PUBLISH = aws.CallProfile(connect_timeout_s=1.0, read_timeout_s=3.0, max_attempts=3)


def percent_text(threshold: float) -> str:
    """0.8 -> "80", 1.0 -> "100", 0.955 -> "95.5" (the marker key and the message)."""
    text = format(Decimal(str(threshold)) * 100, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def parse_thresholds(value: str | Iterable[float]) -> tuple[float, ...]:
    """``"0.8,1.0"`` -> (0.8, 1.0); ``"off"`` or ``"none"`` -> no alerts. Each share in (0, 10]."""
    if isinstance(value, str):
        if value.strip().lower() in ("off", "none"):
            return ()
        parts = [part.strip() for part in value.split(",") if part.strip()]
        try:
            shares = [float(part) for part in parts]
        except ValueError:
            raise ValueError(f"thresholds must be numbers separated by commas, e.g. 0.8,1.0 (got {value!r})") from None
    else:
        shares = [float(share) for share in value]
    for share in shares:
        if not 0 < share <= 10:
            raise ValueError(f"a threshold is a share of the budget in (0, 10], got {share}")
    return tuple(sorted(set(shares)))


@dataclass(frozen=True)
class BudgetAlert:
    tenant: str  # the tenant whose usage report lists it (the key's tenant for a key budget)
    subject: str  # the budget's subject: the tenant, or key:<key_id>
    window: str  # day | month
    period: str  # 2026-12-04 | 2026-12
    threshold: float
    spent_usd: float
    budget_usd: float

    @property
    def key_id(self) -> str | None:
        return self.subject.removeprefix(KEY_SUBJECT_PREFIX) if self.subject.startswith(KEY_SUBJECT_PREFIX) else None

    @property
    def alert_id(self) -> str:
        return f"{self.subject}/{self.period}/{percent_text(self.threshold)}"

    def marker_key(self) -> dict[str, Any]:
        sort_key = f"ALERT#{self.period}#{percent_text(self.threshold)}#{self.subject}"
        return {"pk": {"S": f"AGG#{self.tenant}"}, "sk": {"S": sort_key}}

    def subject_line(self) -> str:
        who = f"key {self.key_id}" if self.key_id is not None else f"tenant {self.tenant}"
        adjective = "daily" if self.window == "day" else "monthly"
        text = f"LLM gateway budget alert: {who} at {percent_text(self.threshold)}% of its {adjective} budget"
        printable = "".join(ch if " " <= ch <= "~" else "?" for ch in text)
        return printable if len(printable) <= SUBJECT_MAX else printable[: SUBJECT_MAX - 3] + "..."

    def body(self, sent_at: float) -> dict[str, Any]:
        return {
            "type": "budget_alert",
            "alert_id": self.alert_id,
            "tenant": self.tenant,
            "key_id": self.key_id,
            "window": self.window,
            "period": self.period,
            "threshold": self.threshold,
            "threshold_percent": float(percent_text(self.threshold)),
            "spent_usd": self.spent_usd,
            "budget_usd": self.budget_usd,
            "sent_at": datetime.fromtimestamp(sent_at, UTC).isoformat(),
        }


class BudgetAlerts:
    """Decides which thresholds a settled spend reached and sends each alert once."""

    def __init__(
        self,
        table: str,
        topic_arn: str,
        *,
        thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
        lease_s: float = DEFAULT_LEASE_S,
        client: Callable[[], DynamoDBClient] | None = None,
        sns: Callable[[], SNSClient] | None = None,
        clock: Callable[[], float] = time.time,
        counters: Counters | None = None,
    ) -> None:
        self.table = table
        self.topic_arn = topic_arn
        self.thresholds = parse_thresholds(thresholds)
        self.lease_s = lease_s
        self._client = client or (lambda: aws.dynamodb(aws.DURABLE))
        self._sns = sns or (lambda: aws.client("sns", PUBLISH))
        self._clock = clock
        self.counters = counters or Counters()
        self._known_sent: set[str] = set()  # alert ids this sandbox saw sent: no marker write for them again

    async def after_settle(
        self, ctx: RequestContext, subject: str, window: str, period: str, limit_pusd: int, *, spent_pusd: int
    ) -> None:
        """Called by the budget guard after each settlement with the window's settled spend."""
        reached = self.reached(
            tenant=ctx.tags.get(BUDGET_OWNER_TAG) or ctx.tenant,
            subject=subject,
            window=window,
            period=period,
            limit_pusd=limit_pusd,
            spent_pusd=spent_pusd,
        )
        if reached:  # never on the answer's path (a failed call settles before its fallback is tried)
            await ctx.defer.soon(functools.partial(self.send, reached))

    def reached(
        self, *, tenant: str, subject: str, window: str, period: str, limit_pusd: int, spent_pusd: int
    ) -> list[BudgetAlert]:
        """The alerts a window's settled spend calls for, less those this sandbox knows were sent."""
        if limit_pusd <= 0 or spent_pusd <= 0:
            return []
        found = []
        for threshold in self.thresholds:
            if Decimal(spent_pusd) < Decimal(str(threshold)) * limit_pusd:  # exact, in pico-dollars
                continue
            alert = BudgetAlert(tenant, subject, window, period, threshold, to_usd(spent_pusd), to_usd(limit_pusd))
            if alert.alert_id not in self._known_sent:
                found.append(alert)
        return found

    async def send(self, alerts: Sequence[BudgetAlert]) -> None:
        """Send each alert unless it was sent (or is being sent) already. Never raises."""
        for alert in alerts:
            try:
                await aws.in_thread(self.send_once, alert)
            except Exception as exc:  # after the response: nobody to tell but the logs
                log.error(
                    "budget alert failed",
                    extra={"alert_id": alert.alert_id, "error": type(exc).__name__},
                )

    def send_once(self, alert: BudgetAlert) -> bool:
        """Claim, publish, mark sent. True if this call published it."""
        claim_id = uuid.uuid4().hex
        if not self._claim(alert, claim_id):
            return False
        try:
            sent_at = self._clock()
            message_id = self._publish(alert, sent_at)
        except Exception:
            self._release(alert, claim_id)
            raise
        self._mark_sent(alert, claim_id, sent_at, message_id)
        self._known_sent.add(alert.alert_id)
        self.counters.add("BudgetAlertsSent")
        log.info("budget alert sent", extra={"alert_id": alert.alert_id, "message_id": message_id})
        return True

    def _claim(self, alert: BudgetAlert, claim_id: str) -> bool:
        now = self._clock()
        item: dict[str, Any] = {
            **alert.marker_key(),
            "state": {"S": "claimed"},
            "claim_id": {"S": claim_id},
            "claimed_at": {"N": str(now)},
            "subject": {"S": alert.subject},
            "window": {"S": alert.window},
            "period": {"S": alert.period},
            "threshold": {"N": str(alert.threshold)},
            "spent_usd": {"N": usd_text(alert.spent_usd)},
            "budget_usd": {"N": usd_text(alert.budget_usd)},
            "expires_at": {"N": str(int(now + MARKER_RETENTION_S))},
        }
        try:
            self._client().put_item(
                TableName=self.table,
                Item=item,
                ConditionExpression="attribute_not_exists(pk) OR (#state = :claimed AND claimed_at < :stale)",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={":claimed": {"S": "claimed"}, ":stale": {"N": str(now - self.lease_s)}},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except Exception as exc:
            if aws.error_code(exc) != "ConditionalCheckFailedException":
                raise
            current = getattr(exc, "response", {}).get("Item") or {}
            if current.get("state", {}).get("S") == "sent":
                self._known_sent.add(alert.alert_id)
            return False
        return True

    def _publish(self, alert: BudgetAlert, sent_at: float) -> str:
        response = self._sns().publish(
            TopicArn=self.topic_arn,
            Subject=alert.subject_line(),
            Message=json.dumps(alert.body(sent_at), separators=(",", ":")),
            MessageAttributes={"type": {"DataType": "String", "StringValue": "budget_alert"}},
        )
        return str(response.get("MessageId", ""))

    def _mark_sent(self, alert: BudgetAlert, claim_id: str, sent_at: float, message_id: str) -> None:
        self._update_claim(
            alert,
            claim_id,
            "SET #state = :sent, sent_at = :at, message_id = :mid",
            {":sent": {"S": "sent"}, ":at": {"N": str(sent_at)}, ":mid": {"S": message_id or "-"}},
        )

    def _release(self, alert: BudgetAlert, claim_id: str) -> None:
        """The publish failed: let the next settlement claim it at once."""
        try:
            self._update_claim(alert, claim_id, "SET claimed_at = :zero", {":zero": {"N": "0"}})
        except Exception as exc:  # the lease frees it later anyway
            log.warning("budget alert claim not released", extra={"error": type(exc).__name__})

    def _update_claim(self, alert: BudgetAlert, claim_id: str, expression: str, values: dict[str, Any]) -> None:
        names: dict[str, Any] = {"ExpressionAttributeNames": {"#state": "state"}} if "#state" in expression else {}
        try:
            self._client().update_item(
                TableName=self.table,
                Key=alert.marker_key(),
                UpdateExpression=expression,
                ConditionExpression="claim_id = :claim",
                ExpressionAttributeValues={**values, ":claim": {"S": claim_id}},
                **names,
            )
        except Exception as exc:
            if aws.error_code(exc) != "ConditionalCheckFailedException":
                raise
            # Our lease ran out and another settlement took the claim over: it owns the marker now.
            log.warning("budget alert claim taken over", extra={"alert_id": alert.alert_id})


def alerts_sent(client: DynamoDBClient, table: str, tenant: str, first: date, last: date) -> list[dict[str, Any]]:
    """The budget alerts sent to ``tenant`` (its own and its keys') for windows overlapping the dates."""
    kwargs: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "pk = :pk AND sk BETWEEN :low AND :high",
        "ExpressionAttributeValues": {
            ":pk": {"S": f"AGG#{tenant}"},
            ":low": {"S": f"ALERT#{first.isoformat()[:7]}"},  # a month's window sorts before its days
            ":high": {"S": f"ALERT#{last.isoformat()}#\uffff"},
        },
    }
    rows: list[dict[str, Any]] = []
    while True:
        page = client.query(**kwargs)
        rows.extend(_alert_row(tenant, item) for item in page.get("Items", []) if sent_within(item, first, last))
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return sorted(rows, key=lambda row: (row["sent_at"], row["threshold"]))


def sent_within(item: Mapping[str, Any], first: date, last: date) -> bool:
    """A marker item of an alert sent for a window (a day or a month) that overlaps the dates."""
    if item.get("state", {}).get("S") != "sent":
        return False
    period: str = item.get("period", {}).get("S", "")
    return first.isoformat()[: len(period)] <= period <= last.isoformat()[: len(period)]


def _alert_row(tenant: str, item: dict[str, Any]) -> dict[str, Any]:
    alert = BudgetAlert(
        tenant=tenant,
        subject=item["subject"]["S"],
        window=item["window"]["S"],
        period=item["period"]["S"],
        threshold=float(item["threshold"]["N"]),
        spent_usd=float(item["spent_usd"]["N"]),
        budget_usd=float(item["budget_usd"]["N"]),
    )
    row = {name: value for name, value in asdict(alert).items() if name not in ("tenant", "subject")}
    sent_at = datetime.fromtimestamp(float(item["sent_at"]["N"]), UTC).isoformat()
    return {"key_id": alert.key_id, **row, "sent_at": sent_at, "message_id": item.get("message_id", {}).get("S")}
