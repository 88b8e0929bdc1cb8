"""What ``make report`` draws, aggregated from the usage table's per-tenant aggregates (no matplotlib here).

The ledger keeps, per tenant, ``AGG#<tenant>`` / ``DAY#<date>`` and ``MODEL#<date>#<provider>/<model>``
counters (llm_gateway/accounting/usage.py) and the budget alerts' markers ``ALERT#...``
(llm_gateway/accounting/alerts.py). Across tenants there is no index, so the report reads them with a
Scan filtered to those items (a local, operator-run tool: it pays the table's read capacity once);
with ``tenants`` given it reads only those tenants' partitions with Queries.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from llm_gateway.accounting.alerts import sent_within
from llm_gateway.accounting.money import to_usd

TOP_TENANTS = 10


@dataclass
class DayTotals:
    """Counters summed as the ledger keeps them (money in integer pico-dollars: sums are exact)."""

    requests: int = 0
    cache_hits: int = 0
    attempts: int = 0
    errors: int = 0
    cost_pusd: int = 0
    saved_pusd: int = 0

    @property
    def cost_usd(self) -> float:
        return to_usd(self.cost_pusd)

    @property
    def saved_usd(self) -> float:
        return to_usd(self.saved_pusd)

    @property
    def cache_hit_rate(self) -> float:
        return self.cache_hits / self.requests if self.requests else 0.0


@dataclass
class ReportData:
    first: date
    last: date
    days: list[str]  # every date of the range, in order
    by_day: dict[str, DayTotals]
    cost_by_day_model: dict[str, dict[str, float]]  # model ("provider/model") -> date -> USD (exact sums)
    tenants: dict[str, DayTotals]  # tenant -> totals over the range
    alerts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def totals(self) -> DayTotals:
        total = DayTotals()
        for day in self.by_day.values():
            _add(total, day)
        return total

    def top_tenants(self, n: int = TOP_TENANTS) -> list[tuple[str, DayTotals]]:
        return sorted(self.tenants.items(), key=lambda item: (-item[1].cost_usd, item[0]))[:n]

    def models(self) -> list[str]:
        """Models by cost over the range, most expensive first."""
        return sorted(self.cost_by_day_model, key=lambda m: (-sum(self.cost_by_day_model[m].values()), m))

    def as_json(self) -> dict[str, Any]:
        def totals(t: DayTotals) -> dict[str, Any]:
            counts = {name: value for name, value in t.__dict__.items() if not name.endswith("_pusd")}
            return {
                **counts,
                "cost_usd": t.cost_usd,
                "saved_usd": t.saved_usd,
                "cache_hit_rate": round(t.cache_hit_rate, 4),
            }

        return {
            "from": self.first.isoformat(),
            "to": self.last.isoformat(),
            "totals": totals(self.totals),
            "days": {day: totals(self.by_day[day]) for day in self.days},
            "cost_by_day_model": self.cost_by_day_model,
            "top_tenants": [{"tenant": name, **totals(t)} for name, t in self.top_tenants()],
            "alerts": self.alerts,
        }


def collect(client: Any, table: str, first: date, last: date, *, tenants: Sequence[str] | None = None) -> ReportData:
    """The report's numbers between two dates (inclusive), over every tenant or only ``tenants``."""
    items = _scan(client, table, first, last) if tenants is None else _query(client, table, first, last, tenants)
    return aggregate(items, first, last)


def aggregate(items: Iterable[Mapping[str, Any]], first: date, last: date) -> ReportData:
    """Fold aggregate items (DynamoDB's attribute-value shape) into the report's series."""
    days = [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
    by_day = {day: DayTotals() for day in days}
    cost_by_day_model: dict[str, dict[str, int]] = defaultdict(dict)
    tenants: dict[str, DayTotals] = defaultdict(DayTotals)
    alerts: list[dict[str, Any]] = []
    for item in items:
        tenant = item["pk"]["S"].removeprefix("AGG#")
        kind, _, rest = item["sk"]["S"].partition("#")
        if kind == "DAY" and rest in by_day:
            counters = _counters(item)
            _add(by_day[rest], counters)
            _add(tenants[tenant], counters)
        elif kind == "MODEL":
            day, _, model = rest.partition("#")
            if day in by_day:
                series = cost_by_day_model[model]
                series[day] = series.get(day, 0) + _counters(item).cost_pusd
        elif kind == "ALERT" and sent_within(item, first, last):
            alerts.append(_alert(tenant, item))
    costs = {model: {day: to_usd(pusd) for day, pusd in series.items()} for model, series in cost_by_day_model.items()}
    return ReportData(first, last, days, by_day, costs, dict(tenants), alerts)


def _scan(client: Any, table: str, first: date, last: date) -> Iterator[Mapping[str, Any]]:
    kwargs: dict[str, Any] = {
        "TableName": table,
        "FilterExpression": "begins_with(pk, :agg) AND (sk BETWEEN :d1 AND :d2 OR sk BETWEEN :m1 AND :m2 "
        "OR sk BETWEEN :a1 AND :a2)",
        "ExpressionAttributeValues": {":agg": {"S": "AGG#"}, **_ranges(first, last)},
    }
    yield from _pages(client.scan, kwargs)


def _query(client: Any, table: str, first: date, last: date, tenants: Sequence[str]) -> Iterator[Mapping[str, Any]]:
    ranges = _ranges(first, last)
    for tenant in tenants:
        for low, high in ((":d1", ":d2"), (":m1", ":m2"), (":a1", ":a2")):
            kwargs = {
                "TableName": table,
                "KeyConditionExpression": "pk = :pk AND sk BETWEEN :low AND :high",
                "ExpressionAttributeValues": {
                    ":pk": {"S": f"AGG#{tenant}"},
                    ":low": ranges[low],
                    ":high": ranges[high],
                },
            }
            yield from _pages(client.query, kwargs)


def _ranges(first: date, last: date) -> dict[str, Any]:
    a, b = first.isoformat(), last.isoformat()
    return {
        ":d1": {"S": f"DAY#{a}"},
        ":d2": {"S": f"DAY#{b}"},
        ":m1": {"S": f"MODEL#{a}"},
        ":m2": {"S": f"MODEL#{b}#\uffff"},
        ":a1": {"S": f"ALERT#{a[:7]}"},
        ":a2": {"S": f"ALERT#{b}#\uffff"},
    }


def _pages(call: Any, kwargs: dict[str, Any]) -> Iterator[Mapping[str, Any]]:
    while True:
        page = call(**kwargs)
        yield from page.get("Items", [])
        if "LastEvaluatedKey" not in page:
            return
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _counters(item: Mapping[str, Any]) -> DayTotals:
    def number(name: str) -> int:
        return int(Decimal(item.get(name, {}).get("N", "0")))

    return DayTotals(
        requests=number("requests"),
        cache_hits=number("cache_hits"),
        attempts=number("attempts"),
        errors=number("errors"),
        cost_pusd=number("cost_pusd"),
        saved_pusd=number("saved_pusd"),
    )


def _add(total: DayTotals, more: DayTotals) -> None:
    total.requests += more.requests
    total.cache_hits += more.cache_hits
    total.attempts += more.attempts
    total.errors += more.errors
    total.cost_pusd += more.cost_pusd
    total.saved_pusd += more.saved_pusd


def _alert(tenant: str, item: Mapping[str, Any]) -> dict[str, Any]:
    subject = item.get("subject", {}).get("S", tenant)
    return {
        "tenant": tenant,
        "key_id": subject.removeprefix("key:") if subject.startswith("key:") else None,
        "period": item.get("period", {}).get("S"),
        "threshold": float(item.get("threshold", {}).get("N", "0")),
        "spent_usd": float(item.get("spent_usd", {}).get("N", "0")),
        "budget_usd": float(item.get("budget_usd", {}).get("N", "0")),
    }
