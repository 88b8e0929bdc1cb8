"""What a PII detector reports before overlaps are resolved, and the shared rules for choosing between them.

Every pattern in the detector modules is written to run in linear time: each one starts only at a token
boundary (a look-behind on the class it repeats), its repeats are bounded, and no repeat nests another
that could match the same characters. That keeps a 200 KB adversarial input (long digit runs,
``a@a@a@...``) from backtracking catastrophically.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

# Which of two overlapping candidates wins: the more specific detector. A PEM block or a JWT contains
# long runs that other detectors would also like; a card number is never also a phone number.
PRIORITY: dict[str, int] = {
    "private_key": 100,
    "jwt": 90,
    "aws_access_key": 85,
    "aws_secret_key": 85,
    "api_key": 80,
    "password": 70,
    "credit_card": 60,
    "iban": 55,
    "email": 50,
    "ip_address": 40,
    "phone": 30,
}


@dataclass(frozen=True)
class Candidate:
    kind: str
    start: int
    end: int
    reason: str
    # How sure the detector is: 1.0 where a checksum or a vendor prefix proves the shape, lower where
    # only layout (phone numbers, dotted quads) or context words (passwords in prose) do.
    score: float = 1.0

    @property
    def priority(self) -> int:
        return PRIORITY.get(self.kind, 0)


def resolve_overlaps(candidates: list[Candidate]) -> list[Candidate]:
    """One candidate per region: the higher priority wins, then the longer span, then the earlier one."""
    ranked = sorted(candidates, key=lambda c: (-c.priority, -(c.end - c.start), c.start))
    # Kept spans never overlap, so sorted by start they are sorted by end too: the one neighbour on
    # each side decides (bisect keeps thousands of candidates from going quadratic).
    starts: list[int] = []
    kept: list[Candidate] = []
    for candidate in ranked:
        index = bisect.bisect_right(starts, candidate.start)
        if index > 0 and kept[index - 1].end > candidate.start:
            continue
        if index < len(kept) and kept[index].start < candidate.end:
            continue
        starts.insert(index, candidate.start)
        kept.insert(index, candidate)
    return kept


# Words just before a number that say it is an identifier (an order, an invoice, a ticket), not a phone
# number or a card. Applied to at most the 32 characters before the candidate.
ID_CONTEXT = re.compile(
    r"(?:order|invoice|inv|ref|reference|ticket|case|tracking|id|sku|isbn|issn|serial|part|transaction|txn"
    r"|po|batch|lot|build|version|release|ver|model|item|product|customer|cust|confirmation|booking)"
    r"\b[^\w\n]{0,4}(?:no|number|num|nr|#|id)?[^\w\n]{0,4}$",
    re.IGNORECASE,
)

# Words just before a bare number that say it is a phone number.
PHONE_CONTEXT = re.compile(
    r"\b(?:phone|tel|telephone|call|calling|mobile|cell|cellphone|fax|whatsapp|sms|text\s+me|dial|ring"
    r"|contact\s+number|phone\s+number)\b[^\w\n]{0,4}(?:(?:me|us|him|her|them|at|on|is|number|no)\b[^\w\n]{0,3}){0,3}$",
    re.IGNORECASE,
)


def preceded_by(pattern: re.Pattern[str], text: str, start: int, window: int = 32) -> bool:
    return pattern.search(text, max(0, start - window), start) is not None
