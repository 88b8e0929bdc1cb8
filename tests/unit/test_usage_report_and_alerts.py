"""The CSV rendering of a usage summary, the ``format`` parameter, and the budget alerts' pure parts."""

from __future__ import annotations

import csv
import io

import pytest

from llm_gateway.accounting.alerts import BudgetAlert, BudgetAlerts, parse_thresholds, percent_text
from llm_gateway.accounting.money import to_pusd
from llm_gateway.config import Settings
from llm_gateway.errors import InvalidRequestError
from llm_gateway.http.usage_report import answer_format, usage_csv

COUNTERS = {
    "requests": 4,
    "attempts": 5,
    "errors": 1,
    "cache_hits": 1,
    "input_tokens": 100,
    "output_tokens": 50,
    "cached_input_tokens": 0,
    "cost_usd": 1.7e-05,
    "saved_usd": 0.0,
}


def summary() -> dict:
    return {
        "from": "2026-12-01",
        "to": "2026-12-04",
        "totals": {**COUNTERS, "cache_hit_rate": 0.25},
        "days": [{"date": "2026-12-04", **COUNTERS}],
        "models": [{"date": "2026-12-04", "provider": "openai", "model": "=HYPERLINK(1)", **COUNTERS}],
        "keys": [{"date": "2026-12-04", "key_id": "k1", **COUNTERS}],
        "alerts": [{"threshold": 0.8}],
    }


def test_csv_has_a_header_and_one_row_per_group_without_exponents_or_formulas() -> None:
    text = usage_csv(summary())
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][:5] == ["group", "date", "provider", "model", "key_id"]
    assert [row[0] for row in rows[1:]] == ["total", "day", "model", "key"]
    by_name = [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]
    assert {row["cost_usd"] for row in by_name} == {"0.000017"}
    assert {row["cache_hit_rate"] for row in by_name} == {"0.25"}
    assert by_name[2]["model"] == "'=HYPERLINK(1)"  # a spreadsheet shows it as text
    assert by_name[3]["key_id"] == "k1" and by_name[0]["date"] == "2026-12-01/2026-12-04"
    assert text.endswith("\r\n")


@pytest.mark.parametrize("value", [None, "json"])
def test_json_is_the_default_format(value: str | None) -> None:
    assert answer_format(value) == "json"


@pytest.mark.parametrize("value", ["xml", "CSV", "", "csv "])
def test_other_formats_are_refused_naming_the_parameter(value: str) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        answer_format(value)
    assert raised.value.details == {"param": "format"}


def test_thresholds_parse_sort_and_refuse_nonsense() -> None:
    assert parse_thresholds("1.0, 0.8") == (0.8, 1.0)
    assert parse_thresholds("0.5,0.5") == (0.5,)
    assert parse_thresholds("off") == ()
    for bad in ("0", "-1", "11", "abc", "0.8;1.0"):
        with pytest.raises(ValueError):
            parse_thresholds(bad)
    assert Settings.from_env({"GATEWAY_BUDGET_ALERT_THRESHOLDS": "0.5,0.9"}).budget_alert_thresholds == (0.5, 0.9)
    assert Settings().budget_alert_thresholds == (0.8, 1.0)
    with pytest.raises(ValueError):
        Settings.from_env({"GATEWAY_BUDGET_ALERT_THRESHOLDS": "lots"})


def test_percent_text() -> None:
    assert [percent_text(t) for t in (0.8, 1.0, 0.955, 1.5)] == ["80", "100", "95.5", "150"]


def test_reached_is_exact_at_the_threshold_and_skips_zero_budgets() -> None:
    alerts = BudgetAlerts("table", "arn:aws:sns:us-east-1:123456789012:t", thresholds=(0.8, 1.0))
    limit = to_pusd(1.0)

    def reached(spent_usd: float, limit_pusd: int = limit) -> list[float]:
        found = alerts.reached(
            tenant="t",
            subject="t",
            window="day",
            period="2026-12-04",
            limit_pusd=limit_pusd,
            spent_pusd=to_pusd(spent_usd),
        )
        return [alert.threshold for alert in found]

    assert reached(0.799999999999) == []
    assert reached(0.8) == [0.8]
    assert reached(1.2) == [0.8, 1.0]
    assert reached(1.0, limit_pusd=0) == []


def test_subject_line_is_printable_ascii_within_sns_limit() -> None:
    alert = BudgetAlert("ténant\n" + "x" * 200, "ténant", "month", "2026-12", 0.8, 0.9, 1.0)
    line = alert.subject_line()
    assert len(line) <= 100 and all(" " <= ch <= "~" for ch in line)
    assert BudgetAlert("acme", "key:k1", "day", "2026-12-04", 1.0, 1, 1).subject_line() == (
        "LLM gateway budget alert: key k1 at 100% of its daily budget"
    )
