"""Per-tenant budgets in USD over a day or a month, enforced before each provider call.

Reserve-then-settle on one DynamoDB item per tenant and window (usage table):

* ``BUDGET#<tenant>`` / ``CONFIG``: ``limit_usd``, ``window`` (``day`` | ``month``), set by an operator
  (``make budget``); tenants without one get ``GATEWAY_DEFAULT_BUDGET_USD`` (unset: no budget).
* ``BUDGET#<tenant>`` / ``SPEND#<period>`` (period ``2026-11-23`` or ``2026-11``): ``committed_pusd`` =
  settled spend + outstanding reservations, ``spent_pusd`` = settled spend (integer pico-dollars, see
  money.py), one attribute ``r_<id> = {amount, expires}`` per outstanding reservation and one
  ``x_<id> = {expires}`` per reservation reclaimed as expired but not settled yet.

Each step is one conditional UpdateItem, so each is exactly-once even when botocore retries it after
a lost response:

* reserve: ``ADD committed_pusd :amount, SET r_<id>`` only if ``r_<id>`` does not exist and
  ``committed_pusd <= limit - amount``. A retry whose first attempt landed fails the condition and
  finds its own ``r_<id>`` (returned with the failure): that is success, not a second charge.
* settle: ``REMOVE r_<id>, ADD committed_pusd (actual - amount), spent_pusd actual`` only if ``r_<id>``
  exists. If it does not, either the reservation was reclaimed (then ``x_<id>`` exists and the actual
  cost is added afresh while removing it, again conditionally) or it was settled already (nothing to do).
* reclaim: when a reservation is refused, reservations past their expiry (the invocation's deadline
  plus a grace period) are released (``r_<id>`` swapped for ``x_<id>``) and the reservation is tried
  once more.

The guarantee, and what it rests on. A reservation succeeds only while ``committed <= limit``, and
``committed`` always includes settled spend, outstanding reservations and any excess a settlement
brought in. Hence ``spent <= limit + excess``, where excess is the sum of ``actual - reserved`` over
the requests whose actual cost was above their reservation and that were already in flight when the
budget ran out, plus the cost of reservations settled after being reclaimed. "At most one reservation
over the budget" therefore holds as long as (a) reservations cover the actual cost up to a total error
of one reservation among concurrent requests: the gateway reserves the worst case, input estimated
from the request as actually sent (JSON instruction, native schema and tool prompt, images at their
maximum) with a margin for tokenizer differences (tokens.py), output at ``max_tokens``, which
providers enforce; and (b) invocations settle before their reservation expires. When an estimate is
short anyway, the excess is still charged in full (spend stays truthful) and pushes ``committed`` over
the limit, so every later reservation in the window is refused: an estimation error cannot compound
beyond the requests already in flight.

Alerts: each settlement hands the window's settled spend to alerts.py, which notifies the alerts topic
once per subject, window and threshold reached.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from llm_gateway import aws
from llm_gateway.accounting.alerts import BudgetAlerts
from llm_gateway.accounting.counters import Counters
from llm_gateway.accounting.money import to_pusd, to_usd, usd_text
from llm_gateway.errors import BudgetExceededError, BudgetUnavailableError, GatewayError, InvalidRequestError
from llm_gateway.interfaces import RequestContext

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

log = logging.getLogger("llm_gateway.accounting.budgets")

Window = Literal["day", "month"]
WINDOWS: tuple[Window, ...] = ("day", "month")
ADJECTIVE: dict[Window, str] = {"day": "daily", "month": "monthly"}
RESERVATION_GRACE_S = 60  # beyond the invocation's own deadline
MAX_RESERVATION_S = 15 * 60 + RESERVATION_GRACE_S  # a Lambda never runs longer than 15 minutes
SPEND_RETENTION_S = 400 * 86_400


@dataclass(frozen=True)
class BudgetPolicy:
    limit_usd: Decimal
    window: Window


@dataclass
class BudgetReservation:
    amount_usd: float
    tenant: str = ""
    period: str = ""
    reservation_id: str | None = None  # None: nothing was reserved (no budget for this tenant)
    limit_pusd: int = 0  # the budget it was reserved against (alerts compare the settled spend with it)
    window: Window = "day"

    @property
    def amount_pusd(self) -> int:
        return to_pusd(self.amount_usd)


def period_of(window: Window, at: float) -> str:
    moment = datetime.fromtimestamp(at, UTC)
    return moment.strftime("%Y-%m-%d") if window == "day" else moment.strftime("%Y-%m")


def period_end(window: Window, at: float) -> datetime:
    moment = datetime.fromtimestamp(at, UTC)
    if window == "day":
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        return datetime.fromtimestamp(start.timestamp() + 86_400, UTC)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return datetime(year, month, 1, tzinfo=UTC)


class DynamoDBBudgetGuard:
    """The gateway's BudgetGuard over the usage table."""

    def __init__(
        self,
        table: str,
        *,
        default_limit_usd: float | None = None,
        default_window: Window = "day",
        fail_open: bool = False,
        config_ttl_s: float = 60.0,
        client: Callable[[], DynamoDBClient] | None = None,
        clock: Callable[[], float] = time.time,
        counters: Counters | None = None,
        alerts: BudgetAlerts | None = None,
    ) -> None:
        self.table = table
        self.alerts = alerts
        self.default = (
            BudgetPolicy(Decimal(str(default_limit_usd)), default_window) if default_limit_usd is not None else None
        )
        self.fail_open = fail_open
        self.config_ttl_s = config_ttl_s
        self._client = client or (lambda: aws.dynamodb(aws.DURABLE))
        self._clock = clock
        self.counters = counters or Counters()
        self._policies: dict[str, tuple[BudgetPolicy | None, float]] = {}

    # --- the seam

    async def reserve(self, ctx: RequestContext, amount_usd: float) -> BudgetReservation:
        try:
            policy = await self._policy(ctx.tenant)
            if policy is None:
                return BudgetReservation(amount_usd=amount_usd)
            return await self._reserve(ctx, policy, to_pusd(amount_usd))
        except GatewayError:
            raise
        except Exception as exc:
            return self._unavailable(exc, amount_usd)

    async def settle(self, ctx: RequestContext, reservation: Any, actual_usd: float) -> None:
        if not isinstance(reservation, BudgetReservation) or reservation.reservation_id is None:
            return
        try:
            settled = await aws.in_thread(self._settle, reservation, to_pusd(actual_usd))
        except Exception as exc:  # the reservation will expire; the ledger still has the actual cost
            log.error(
                "budget settle failed",
                extra={"tenant": reservation.tenant, "period": reservation.period, "error": type(exc).__name__},
            )
            self.counters.add("BudgetSettleError")
            return
        if settled is None:
            self.counters.add("BudgetSettleDuplicate")  # settled before: nothing charged twice
        elif self.alerts is not None:
            r = reservation
            await self.alerts.after_settle(ctx, r.tenant, r.window, r.period, r.limit_pusd, spent_pusd=settled)

    # --- reserving

    async def _reserve(self, ctx: RequestContext, policy: BudgetPolicy, amount: int) -> BudgetReservation:
        now = self._clock()
        period = period_of(policy.window, now)
        if amount > to_pusd(policy.limit_usd):
            raise self._exceeded(ctx.tenant, policy, period, now, committed=None, amount=amount)
        reservation_id = uuid.uuid4().hex[:16]
        expires = now + min(ctx.deadline.remaining() + RESERVATION_GRACE_S, MAX_RESERVATION_S)
        attempt = (self._try_reserve, ctx.tenant, policy, period, reservation_id, amount, expires)
        reserved = await aws.in_thread(*attempt)
        if not reserved and await aws.in_thread(self._reclaim_expired, ctx.tenant, period, now):
            reserved = await aws.in_thread(*attempt)
        if not reserved:
            committed = await aws.in_thread(self._committed, ctx.tenant, period)
            raise self._exceeded(ctx.tenant, policy, period, now, committed=committed, amount=amount)
        self.counters.add("BudgetReserved")
        limit = to_pusd(policy.limit_usd)
        return BudgetReservation(to_usd(amount), ctx.tenant, period, reservation_id, limit, policy.window)

    def _try_reserve(
        self, tenant: str, policy: BudgetPolicy, period: str, rid: str, amount: int, expires: float
    ) -> bool:
        retain_until = int(period_end(policy.window, self._clock()).timestamp()) + SPEND_RETENTION_S
        record = {"M": {"amount": _n(amount), "expires": {"N": str(int(expires))}}}
        try:
            self._client().update_item(
                TableName=self.table,
                Key=_spend_key(tenant, period),
                UpdateExpression=(
                    "ADD committed_pusd :amount SET #r = :res, expires_at = if_not_exists(expires_at, :keep)"
                ),
                ConditionExpression=(
                    "attribute_not_exists(#r) AND (attribute_not_exists(committed_pusd) OR committed_pusd <= :room)"
                ),
                ExpressionAttributeNames={"#r": f"r_{rid}"},
                ExpressionAttributeValues={
                    ":amount": _n(amount),
                    ":room": _n(to_pusd(policy.limit_usd) - amount),
                    ":res": record,
                    ":keep": {"N": str(retain_until)},
                },
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except Exception as exc:
            if aws.error_code(exc) == "ConditionalCheckFailedException":
                # A retry whose first attempt landed (the response was lost) finds its own reservation
                # (the id is random: only this call can have written it).
                current = getattr(exc, "response", {}).get("Item") or {}
                return bool(current.get(f"r_{rid}", {}).get("M", {}).get("amount") == _n(amount))
            raise
        return True

    def _reclaim_expired(self, tenant: str, period: str, now: float) -> bool:
        """Release reservations whose invocation is long gone. True if anything was released."""
        item = self._client().get_item(TableName=self.table, Key=_spend_key(tenant, period), ConsistentRead=True)
        released = False
        for name, value in (item.get("Item") or {}).items():
            record: Any = value.get("M", {})
            expires = float(record.get("expires", {}).get("N", "0"))
            if name.startswith("x_") and expires < now - MAX_RESERVATION_S:
                # A reclaimed reservation whose invocation cannot still be running: it will never settle.
                self._conditional_update(tenant, period, "REMOVE #r", name)
                continue
            if not name.startswith("r_") or expires > now:
                continue
            if (
                self._conditional_update(
                    tenant,
                    period,
                    "REMOVE #r SET #x = :marker ADD committed_pusd :release",
                    name,
                    names={"#x": "x_" + name.removeprefix("r_")},
                    values={
                        ":release": _n(-int(record["amount"]["N"])),
                        ":marker": {"M": {"expires": record["expires"]}},
                    },
                )
                is not None
            ):
                released = True
                self.counters.add("BudgetReservationExpired")
        return released

    def _settle(self, reservation: BudgetReservation, actual: int) -> int | None:
        """Exactly once per reservation: the window's settled spend after it, or None if it had been
        settled before (a retry or a duplicate)."""
        rid = reservation.reservation_id
        updated = self._conditional_update(
            reservation.tenant,
            reservation.period,
            "REMOVE #r ADD committed_pusd :delta, spent_pusd :actual",
            f"r_{rid}",
            values={":delta": _n(actual - reservation.amount_pusd), ":actual": _n(actual)},
        )
        if updated is None:
            # Reclaimed as expired already: its amount was released, so count the actual cost afresh, once.
            updated = self._conditional_update(
                reservation.tenant,
                reservation.period,
                "REMOVE #r ADD committed_pusd :actual, spent_pusd :actual",
                f"x_{rid}",
                values={":actual": _n(actual)},
            )
        return None if updated is None else int(updated.get("spent_pusd", {}).get("N", "0"))

    def _conditional_update(
        self,
        tenant: str,
        period: str,
        expression: str,
        attribute: str,
        *,
        names: dict[str, str] | None = None,
        values: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Apply ``expression`` only while ``attribute`` (``#r``) exists: the updated attributes' new
        values, or None if it did not exist."""
        extra: dict[str, Any] = {"ExpressionAttributeValues": values} if values else {}
        try:
            response = self._client().update_item(
                TableName=self.table,
                Key=_spend_key(tenant, period),
                UpdateExpression=expression,
                ConditionExpression="attribute_exists(#r)",
                ExpressionAttributeNames={"#r": attribute, **(names or {})},
                ReturnValues="UPDATED_NEW",
                **extra,
            )
        except Exception as exc:
            if aws.error_code(exc) == "ConditionalCheckFailedException":
                return None
            raise
        return dict(response.get("Attributes") or {})

    def _committed(self, tenant: str, period: str) -> int | None:
        item = (
            self._client()
            .get_item(TableName=self.table, Key=_spend_key(tenant, period), ProjectionExpression="committed_pusd")
            .get("Item")
        )
        return int(item["committed_pusd"]["N"]) if item and "committed_pusd" in item else None

    def _exceeded(
        self, tenant: str, policy: BudgetPolicy, period: str, now: float, *, committed: int | None, amount: int
    ) -> BudgetExceededError:
        self.counters.add("BudgetExceeded")
        resets_at = period_end(policy.window, now)
        return BudgetExceededError(
            f"the {ADJECTIVE[policy.window]} budget of {policy.limit_usd.normalize():f} USD cannot cover this request "
            f"(worst case {to_usd(amount):.6f} USD); it resets at {resets_at.isoformat()}",
            details={
                "limit_usd": float(policy.limit_usd),
                "committed_usd": to_usd(committed) if committed is not None else None,
                "request_worst_case_usd": to_usd(amount),
                "window": policy.window,
                "period": period,
                "resets_at": resets_at.isoformat(),
            },
        )

    def _unavailable(self, exc: BaseException, amount_usd: float) -> BudgetReservation:
        log.error("budget store unavailable", extra={"error": type(exc).__name__, "fail_open": self.fail_open})
        self.counters.add("BudgetStoreError")
        if self.fail_open:
            return BudgetReservation(amount_usd=amount_usd)
        raise BudgetUnavailableError("budgets cannot be checked right now; retry shortly") from None

    # --- policies

    async def _policy(self, tenant: str) -> BudgetPolicy | None:
        cached = self._policies.get(tenant)
        now = self._clock()
        if cached is not None and now - cached[1] < self.config_ttl_s:
            return cached[0]
        policy = await aws.in_thread(self.read_policy, tenant)
        self._policies[tenant] = (policy, now)
        return policy

    def read_policy(self, tenant: str) -> BudgetPolicy | None:
        item = self._client().get_item(TableName=self.table, Key=_config_key(tenant), ConsistentRead=True).get("Item")
        if not item:
            return self.default
        window = item.get("window", {}).get("S", "day")
        return BudgetPolicy(Decimal(item["limit_usd"]["N"]), window if window in WINDOWS else "day")

    # --- administration (the budget CLI)

    def set_policy(self, tenant: str, limit_usd: float, window: Window) -> None:
        if limit_usd < 0 or window not in WINDOWS:
            raise InvalidRequestError("a budget needs limit_usd >= 0 and window 'day' or 'month'")
        self._client().put_item(
            TableName=self.table,
            Item={
                **_config_key(tenant),
                "limit_usd": {"N": usd_text(limit_usd)},
                "window": {"S": window},
                "updated_at": {"N": str(int(self._clock()))},
            },
        )
        self._policies.pop(tenant, None)

    def status(self, tenant: str) -> dict[str, Any]:
        """The tenant's policy and the current window's committed/spent amounts."""
        policy = self.read_policy(tenant)
        if policy is None:
            return {"tenant": tenant, "budget": None}
        now = self._clock()
        period = period_of(policy.window, now)
        item = self._client().get_item(TableName=self.table, Key=_spend_key(tenant, period), ConsistentRead=True)
        spend = item.get("Item") or {}
        return {
            "tenant": tenant,
            "budget": {"limit_usd": float(policy.limit_usd), "window": policy.window},
            "period": period,
            "committed_usd": to_usd(spend.get("committed_pusd", {}).get("N", "0")),
            "spent_usd": to_usd(spend.get("spent_pusd", {}).get("N", "0")),
            "outstanding_reservations": sum(1 for name in spend if name.startswith("r_")),
            "resets_at": period_end(policy.window, now).isoformat(),
        }


def _config_key(tenant: str) -> dict[str, Any]:
    return {"pk": {"S": f"BUDGET#{tenant}"}, "sk": {"S": "CONFIG"}}


def _spend_key(tenant: str, period: str) -> dict[str, Any]:
    return {"pk": {"S": f"BUDGET#{tenant}"}, "sk": {"S": f"SPEND#{period}"}}


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}
