"""The PII check: personal data and credentials in a text, one finding per region.

Kinds: email, phone, credit_card, iban, ip_address, aws_access_key, aws_secret_key, api_key,
private_key, jwt, password. Where two detectors claim overlapping text, the more specific one wins
(``candidates.PRIORITY``), so a region is redacted once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from llm_gateway.guardrails.candidates import Candidate, resolve_overlaps
from llm_gateway.guardrails.findings import Finding
from llm_gateway.guardrails.pii_patterns import find_cards, find_emails, find_ibans, find_ip_addresses, find_phones
from llm_gateway.guardrails.secret_patterns import (
    find_assignments,
    find_aws_keys,
    find_jwts,
    find_private_keys,
    find_vendor_tokens,
)

Detector = Callable[[str], Iterator[Candidate]]

DETECTORS: dict[str, Detector] = {
    "private_key": find_private_keys,
    "jwt": find_jwts,
    "aws": find_aws_keys,
    "vendor_tokens": find_vendor_tokens,
    "assignments": find_assignments,
    "credit_card": find_cards,
    "iban": find_ibans,
    "email": find_emails,
    "ip_address": find_ip_addresses,
    "phone": find_phones,
}

ALL_KINDS = frozenset(
    {
        "email",
        "phone",
        "credit_card",
        "iban",
        "ip_address",
        "aws_access_key",
        "aws_secret_key",
        "api_key",
        "private_key",
        "jwt",
        "password",
    }
)


class PiiCheck:
    """Finds personal data and secrets. ``kinds`` narrows what is reported (default: every kind)."""

    name = "pii"

    def __init__(self, kinds: Iterable[str] | None = None) -> None:
        selected = ALL_KINDS if kinds is None else frozenset(kinds)
        unknown = selected - ALL_KINDS
        if unknown:
            raise ValueError(f"unknown PII kinds: {', '.join(sorted(unknown))}")
        self.kinds = selected

    def scan(self, text: str) -> list[Finding]:
        if not text:
            return []
        candidates = [candidate for detect in DETECTORS.values() for candidate in detect(text)]
        # Overlaps are resolved over every kind first, so a card number inside a JWT stays part of the JWT
        # even when only cards are asked for.
        return [
            Finding(check=self.name, kind=c.kind, start=c.start, end=c.end, score=c.score, reason=c.reason)
            for c in resolve_overlaps(candidates)
            if c.kind in self.kinds
        ]
