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
        "stream_slow",  # a delay of ``delay`` seconds between a stream's chunks
        "stream_cut",  # the connection closes after ``after`` chunks, without the end marker
        "stream_stall",  # no bytes after ``after`` chunks, for ``delay`` seconds, then the connection closes
        "stream_malformed",  # an event that is not valid JSON after ``after`` chunks
        "stream_error",  # the provider's error event (Anthropic overloaded_error) after ``after`` chunks
    }
)
# Faults that only a streamed request plays; a non-streamed request is answered as without them.
STREAM_FAULTS = frozenset(name for name in FAULTS if name.startswith("stream_"))
# [[sim:fault=<name>(,retry_after=<s>)(,delay=<s>)(,after=<n>)(,provider=<openai|compat|anthropic|gemini|bedrock>)]]
_MARKER = re.compile(r"\[\[sim:fault=([a-z_]+)((?:\s*,\s*[a-z_]+\s*=\s*[a-z0-9._]+)*)\s*\]\]")


@dataclass
class Fault:
    name: str
    retry_after: float = 1.0
    delay_s: float = 5.0
    provider: str | None = None  # only this provider plays the fault (a marker's provider=...)
    after: int = 2  # stream faults: chunks sent before the fault


@dataclass
class FaultRule:
    fault: str
    provider: str = "*"
    model: str | None = None
    times: int | None = None
    retry_after: float = 1.0
    delay_s: float = 5.0
    after: int = 2


def _fault_from_marker(text: str, provider: str | None = None) -> Fault | None:
    """The first marker in ``text`` that applies to ``provider`` (one without ``provider=`` applies to all),
    so a prompt can fail OpenAI alone and show the fallback to another provider."""
    for match in _MARKER.finditer(text):
        fault = Fault(match.group(1))
        for pair in filter(None, (p.strip() for p in match.group(2).split(","))):
            key, _, value = (part.strip() for part in pair.partition("="))
            try:
                if key == "retry_after":
                    fault.retry_after = float(value)
                elif key in ("delay", "delay_s"):
                    fault.delay_s = float(value)
                elif key == "after":
                    fault.after = max(0, int(value))
                elif key == "provider":
                    fault.provider = value
            except ValueError:
                pass  # a malformed number keeps the default, as a bad header value does
        if fault.provider is None or provider is None or fault.provider == provider:
            return fault
    return None
