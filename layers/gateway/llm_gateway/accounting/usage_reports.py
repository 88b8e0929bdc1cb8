"""Usage reports: the ledger's aggregates for one tenant and a range of days (``GET /v1/usage``,
``make usage``). The items they read are described in :mod:`llm_gateway.accounting.usage`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from llm_gateway import aws
from llm_gateway.accounting.alerts import alerts_sent
from llm_gateway.accounting.money import to_usd
from llm_gateway.accounting.usage import COUNTERS, MONEY
from llm_gateway.errors import InvalidRequestError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

MAX_REPORT_DAYS = 366


def parse_day(value: str | None, *, param: str, default: date) -> date:
    if value is None or value == "":
        return default
    try:
        return date.fromisoformat(value)
    except ValueError:
        message = f"{param} must be a date as YYYY-MM-DD, got {value!r}"
        raise InvalidRequestError(message, details={"param": param}) from None


def report_range(start: str | None, end: str | None, *, today: date | None = None) -> tuple[date, date]:
    """The inclusive date range of a usage report: default the last 7 days, at most a year."""
    today = today or datetime.now(UTC).date()
    last = parse_day(end, param="to", default=today)
    first = parse_day(start, param="from", default=last - timedelta(days=6))
    if first > last:
        raise InvalidRequestError("'from' must not be after 'to'", details={"param": "from"})
    if (last - first).days + 1 > MAX_REPORT_DAYS:
        raise InvalidRequestError(f"a report covers at most {MAX_REPORT_DAYS} days", details={"param": "from"})
    return first, last


def usage_summary(client: DynamoDBClient, table: str, tenant: str, first: date, last: date) -> dict[str, Any]:
    """Aggregates for one tenant between two dates (inclusive): totals, per day, per day and model, per
    day and gateway key (requests made with one), per day and deployment (attempts on a known one), and the
    budget alerts sent for windows in the range."""
    with aws.unavailable_as_503("DynamoDB", "Query"):
        days = _query(client, table, tenant, f"DAY#{first.isoformat()}", f"DAY#{last.isoformat()}")
        models = _query(client, table, tenant, f"MODEL#{first.isoformat()}", f"MODEL#{last.isoformat()}#\uffff")
        keys = _query(client, table, tenant, f"KEY#{first.isoformat()}", f"KEY#{last.isoformat()}#\uffff")
        alerts = alerts_sent(client, table, tenant, first, last)
        deployments = _query(client, table, tenant, f"DEPLOY#{first.isoformat()}", f"DEPLOY#{last.isoformat()}#\uffff")
    day_rows = [{"date": item["sk"]["S"].removeprefix("DAY#"), **_counters(item)} for item in days]
    key_rows = _rows(keys, lambda key_id: {"key_id": key_id})
    deployment_rows = _rows(deployments, lambda deployment: {"deployment": deployment})
    model_rows = _rows(models, lambda name: dict(zip(("provider", "model"), name.partition("/")[::2], strict=True)))
    totals: dict[str, int | float] = {MONEY.get(name, name): 0 for name in COUNTERS}
    for row in day_rows:
        for name in totals:
            totals[name] += row[name]
    for name in MONEY.values():
        totals[name] = round(totals[name], 12)
    totals["cache_hit_rate"] = round(totals["cache_hits"] / totals["requests"], 4) if totals["requests"] else 0.0
    return {
        "object": "usage.summary",
        "tenant": tenant,
        "from": first.isoformat(),
        "to": last.isoformat(),
        "totals": totals,
        "days": day_rows,
        "models": model_rows,
        "keys": key_rows,
        "alerts": alerts,
        "deployments": deployment_rows,
    }


def _rows(items: list[dict[str, Any]], named: Callable[[str], dict[str, str]]) -> list[dict[str, Any]]:
    """Rows of ``<KIND>#<date>#<name>`` aggregates: the date, what ``named`` makes of the name, counters."""
    rows = []
    for item in items:
        _, day, name = item["sk"]["S"].split("#", 2)
        rows.append({"date": day, **named(name), **_counters(item)})
    return rows


def _query(client: DynamoDBClient, table: str, tenant: str, low: str, high: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "pk = :pk AND sk BETWEEN :low AND :high",
        "ExpressionAttributeValues": {":pk": {"S": f"AGG#{tenant}"}, ":low": {"S": low}, ":high": {"S": high}},
    }
    while True:
        page = client.query(**kwargs)
        items.extend(page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _counters(item: Mapping[str, Any]) -> dict[str, int | float]:
    row: dict[str, int | float] = {}
    for name in COUNTERS:
        raw = int(Decimal(item.get(name, {}).get("N", "0")))
        if name in MONEY:
            row[MONEY[name]] = to_usd(raw)
        else:
            row[name] = raw
    return row
