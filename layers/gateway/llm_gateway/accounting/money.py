"""Money in storage: integer pico-dollars (1e-12 USD).

Counters that DynamoDB adds up (ledger aggregates, budget spend) are integers, so sums are exact and
no store ever sees a number in exponent notation. Catalog prices (USD per million tokens, at most six
decimals) make every per-token cost a whole number of pico-dollars.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

PICO_PER_USD = 10**12


def to_pusd(usd: float | Decimal | str) -> int:
    return int((Decimal(str(usd)) * PICO_PER_USD).to_integral_value(ROUND_HALF_EVEN))


def to_usd(pusd: int | Decimal | str) -> float:
    return float(Decimal(str(pusd)) / PICO_PER_USD)


def usd_text(usd: float | Decimal) -> str:
    """A plain decimal string (never exponent notation), for items written once."""
    return format(Decimal(str(usd)).quantize(Decimal("0.000000000001")).normalize(), "f")
