"""Fault injection: the faults the simulator can play, scheduled rules and in-prompt markers."""

from __future__ import annotations

import re
from dataclasses import dataclass

FAULTS = frozenset(
    {
        "rate_limit",
        "server_error",
        "overloaded",
        "slow",
        "drop",
        "malformed",
        "malformed_shape",
        "auth",
        "bad_request",
        "context_length",
        "content_filter",
    }
)
_MARKER = re.compile(r"\[\[sim:fault=([a-z_]+)((?:\s*,\s*[a-z_]+\s*=\s*[0-9.]+)*)\s*\]\]")


@dataclass
class Fault:
    name: str
    retry_after: float = 1.0
    delay_s: float = 5.0


@dataclass
class FaultRule:
    fault: str
    provider: str = "*"
    model: str | None = None
    times: int | None = None
    retry_after: float = 1.0
    delay_s: float = 5.0


def _fault_from_marker(text: str) -> Fault | None:
    match = _MARKER.search(text)
    if match is None:
        return None
    fault = Fault(match.group(1))
    for pair in filter(None, (p.strip() for p in match.group(2).split(","))):
        key, _, value = pair.partition("=")
        if key.strip() == "retry_after":
            fault.retry_after = float(value)
        elif key.strip() in ("delay", "delay_s"):
            fault.delay_s = float(value)
    return fault
