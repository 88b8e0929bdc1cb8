"""Luhn and ISO 13616 mod-97, against published test numbers and single-digit corruptions."""

from __future__ import annotations

import pytest

from llm_gateway.guardrails.checksums import IBAN_LENGTHS, iban_valid, luhn_valid


@pytest.mark.parametrize("number", ["4111111111111111", "5555555555554444", "378282246310005", "79927398713", "0"])
def test_luhn_accepts_valid_numbers(number: str) -> None:
    assert luhn_valid(number) is (len(number) >= 2)


@pytest.mark.parametrize("number", ["4111111111111112", "79927398710", "1234567812345678", "", "4111a11111111111"])
def test_luhn_rejects_invalid_numbers(number: str) -> None:
    assert not luhn_valid(number)


def test_luhn_catches_every_single_digit_change() -> None:
    valid = "4539578763621486"
    assert luhn_valid(valid)
    for position in range(len(valid)):
        for digit in "0123456789":
            if digit != valid[position]:
                assert not luhn_valid(valid[:position] + digit + valid[position + 1 :])


@pytest.mark.parametrize(
    "iban",
    [
        "DE89370400440532013000",
        "GB82WEST12345698765432",
        "FR1420041010050500013M02606",
        "NL91ABNA0417164300",
        "BE68539007547034",
        "NO9386011117947",
        "CH9300762011623852957",
    ],
)
def test_iban_accepts_registry_examples(iban: str) -> None:
    assert iban_valid(iban)


@pytest.mark.parametrize(
    "iban",
    [
        "DE89370400440532013001",  # one digit changed
        "DE88370400440532013000",  # wrong check digits
        "DE8937040044053201300",  # one short for Germany
        "XX89370400440532013000",  # no such country
        "GB82 WEST 1234 5698 7654 32",  # spaces are the caller's job to strip
        "de89370400440532013000",  # lower case is not compact form
    ],
)
def test_iban_rejects_corruptions(iban: str) -> None:
    assert not iban_valid(iban)


def test_length_table_is_plausible() -> None:
    assert all(len(code) == 2 and code.isupper() and 15 <= length <= 34 for code, length in IBAN_LENGTHS.items())
