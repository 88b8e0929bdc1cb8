"""The report's aggregation over usage-table items (in memory), and drawing an empty range."""

from __future__ import annotations

from datetime import date

from llm_gateway.accounting.money import to_pusd
from local.report_charts import render_html, render_png
from local.report_data import aggregate

FIRST, LAST = date(2026, 12, 1), date(2026, 12, 3)


def counters(requests: int, hits: int, cost: float, saved: float = 0.0) -> dict:
    return {
        "requests": {"N": str(requests)},
        "cache_hits": {"N": str(hits)},
        "attempts": {"N": str(requests - hits)},
        "cost_pusd": {"N": str(to_pusd(cost))},
        "saved_pusd": {"N": str(to_pusd(saved))},
    }


def item(tenant: str, sk: str, **attributes) -> dict:
    return {"pk": {"S": f"AGG#{tenant}"}, "sk": {"S": sk}, **attributes}


def test_aggregate_folds_days_models_tenants_and_alerts_within_the_range() -> None:
    items = [
        item("acme", "DAY#2026-12-01", **counters(4, 1, 0.4, 0.1)),
        item("acme", "DAY#2026-12-03", **counters(2, 0, 0.2)),
        item("globex", "DAY#2026-12-01", **counters(1, 1, 0.0, 0.05)),
        item("acme", "DAY#2026-11-30", **counters(9, 0, 9.0)),  # before the range: ignored
        item("acme", "MODEL#2026-12-01#openai/gpt-4o-mini", **counters(3, 1, 0.3)),
        item("acme", "MODEL#2026-12-01#anthropic/claude", **counters(1, 0, 0.1)),
        item("acme", "MODEL#2026-12-03#openai/gpt-4o-mini", **counters(2, 0, 0.2)),
        item("acme", "KEY#2026-12-01#k1", **counters(4, 1, 0.4)),  # per key: not a report series
        item(
            "acme",
            "ALERT#2026-12-01#80#acme",
            state={"S": "sent"},
            subject={"S": "acme"},
            period={"S": "2026-12-01"},
            threshold={"N": "0.8"},
            spent_usd={"N": "0.85"},
            budget_usd={"N": "1"},
        ),
        item("acme", "ALERT#2026-12-01#100#acme", state={"S": "claimed"}, period={"S": "2026-12-01"}),  # not sent
        item("acme", "ALERT#2026-11-28#80#acme", state={"S": "sent"}, period={"S": "2026-11-28"}),  # out of range
    ]
    data = aggregate(items, FIRST, LAST)

    assert data.days == ["2026-12-01", "2026-12-02", "2026-12-03"]
    assert (data.by_day["2026-12-01"].requests, data.by_day["2026-12-01"].cache_hits) == (5, 2)
    assert data.by_day["2026-12-01"].cache_hit_rate == 0.4
    assert data.by_day["2026-12-02"].requests == 0
    assert (data.totals.cost_usd, data.totals.saved_usd) == (0.6, 0.15)  # exact: summed in pico-dollars
    assert data.cost_by_day_model == {
        "openai/gpt-4o-mini": {"2026-12-01": 0.3, "2026-12-03": 0.2},
        "anthropic/claude": {"2026-12-01": 0.1},
    }
    assert data.models() == ["openai/gpt-4o-mini", "anthropic/claude"]
    assert [name for name, _ in data.top_tenants()] == ["acme", "globex"]
    assert [(a["tenant"], a["threshold"], a["key_id"]) for a in data.alerts] == [("acme", 0.8, None)]


def test_an_empty_range_still_draws_a_report() -> None:
    data = aggregate([], FIRST, LAST)
    png = render_png(data)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    page = render_html(data, png)
    assert "0 requests" in page and page.count("(none)") == 3  # models, tenants, alerts
