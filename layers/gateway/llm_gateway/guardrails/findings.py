"""The shapes every guardrail check shares: a check scans text and reports findings, nothing more.

What to do about a finding (block, redact, monitor) is the pipeline's decision, not the check's: the same
check serves every mode. Checks need no network; a check that does (Bedrock Guardrails) is async and
lives apart (``guardrails/bedrock.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

Mode = Literal["block", "redact", "monitor"]


@dataclass(frozen=True)
class Finding:
    check: str  # the check's name: "pii", "injection", "denylist", "bedrock"
    kind: str  # what was found: "email", "credit_card", "iban", "aws_access_key", "instruction_override", ...
    start: int  # the span in the scanned text (str indexes); redaction replaces text[start:end]
    end: int
    score: float = 1.0  # confidence in [0, 1]; injection heuristics add up to a score
    reason: str = ""  # a human reason, never the matched text itself (it may be the secret)


class Check(Protocol):
    """One local check. ``scan`` is pure, synchronous and fast (regexes and arithmetic, no I/O)."""

    name: str

    def scan(self, text: str) -> list[Finding]: ...
