"""Budget windows (UTC day and month) and the integer money units used in storage."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from llm_gateway.accounting.budgets import period_end, period_of
from llm_gateway.accounting.money import to_pusd, to_usd, usd_text
from llm_gateway.aws import CallProfile
from llm_gateway.catalog import default_catalog


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("window", "at", "period", "end"),
    [
        ("day", "2026-11-23T23:59:59", "2026-11-23", "2026-11-24T00:00:00+00:00"),
        ("day", "2026-12-31T12:00:00", "2026-12-31", "2027-01-01T00:00:00+00:00"),
        ("month", "2026-11-01T00:00:00", "2026-11", "2026-12-01T00:00:00+00:00"),
        ("month", "2026-12-15T08:00:00", "2026-12", "2027-01-01T00:00:00+00:00"),
    ],
)
def test_windows_are_utc_days_and_months(window, at, period, end):
    assert period_of(window, ts(at)) == period
    assert period_end(window, ts(at)).isoformat() == end


def test_every_catalog_price_is_a_whole_number_of_pico_dollars_per_token():
    for spec in default_catalog().models:
        for price in (spec.input_per_mtok, spec.output_per_mtok, spec.cached_input_per_mtok):
            assert to_pusd(price) % 1_000_000 == 0, (spec.id, price)  # per Mtok -> per token stays integral


def test_money_round_trips_and_never_uses_exponent_notation():
    assert to_pusd(0.0000255) == 25_500_000 and to_usd(25_500_000) == pytest.approx(0.0000255)
    assert to_pusd("1.5") == 1_500_000_000_000
    assert usd_text(1e-7) == "0.0000001" and usd_text(0.0) == "0" and usd_text(100) == "100"


def test_call_profiles_reject_unbounded_settings():
    with pytest.raises(ValueError):
        CallProfile(connect_timeout_s=0)
    with pytest.raises(ValueError):
        CallProfile(max_attempts=0)
