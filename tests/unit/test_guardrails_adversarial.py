"""Hostile input must not make a check backtrack catastrophically: every scan of 200 KB returns promptly.

The bound is deliberately generous (the machine is shared); a quadratic pattern takes minutes on these
inputs, far beyond it. Timings themselves belong to the benchmark.
"""

from __future__ import annotations

import time

import pytest

from llm_gateway.guardrails.denylist import DenyListCheck
from llm_gateway.guardrails.injection import InjectionCheck
from llm_gateway.guardrails.pii import PiiCheck

SIZE = 200_000

ADVERSARIAL = {
    "digit run": "1" * SIZE,
    "spaced digits": "1 " * (SIZE // 2),
    "dashed digits": "12-" * (SIZE // 3),
    "a@ run": "a@" * (SIZE // 2),
    "dotted letters": "a." * (SIZE // 2),
    "dotted digits": "1." * (SIZE // 2),
    "colon hex": "a:" * (SIZE // 2),
    "plus digits": "+1 " * (SIZE // 3),
    "letters": "A" * SIZE,
    "jwt-like": "eyJa." * (SIZE // 5),
    "pem begins": "-----BEGIN PRIVATE KEY-----\n" * (SIZE // 28),
    "assignments": "password=" * (SIZE // 9),
    "iban starts": "DE89 " * (SIZE // 5),
    "base64-ish": "Ab1/" * (SIZE // 4),
    "email-ish": "a.b@c.d." * (SIZE // 8),
    "ignore words": "ignore " * (SIZE // 7),
    "ignore previous": "ignore previous " * (SIZE // 16),
    "hidden styles": "<p style='display:none'>" * (SIZE // 24),
    "styles without tags": "style='display:none'>" + "x" * SIZE,
    "comment openers": "<!--" * (SIZE // 4),
    "comments": "<!-- a -->" * (SIZE // 10),
    "alt texts": "![" * (SIZE // 2),
    "zero width": "a\u200b" * (SIZE // 2),
    "tag characters": "\U000e0061" * SIZE,
    "accents": "e\u0301" * (SIZE // 2),
}

GENEROUS_SECONDS = 20.0


CHECKS = {
    "pii": PiiCheck(),
    "injection": InjectionCheck(),
    "denylist": DenyListCheck(["ignore previous", "a a a a b", "style", "e e e e x"]),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("check", sorted(CHECKS))
@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_scan_is_linear_on_hostile_input(check: str, name: str) -> None:
    text = ADVERSARIAL[name]
    began = time.perf_counter()
    CHECKS[check].scan(text)
    assert time.perf_counter() - began < GENEROUS_SECONDS
