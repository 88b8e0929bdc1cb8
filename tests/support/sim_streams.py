"""What the provider simulator recorded of the streams it sent."""

from __future__ import annotations

import time
from typing import Any

from local.simulator import ProviderSimulator


def stream_record(simulator: ProviderSimulator, provider: str, timeout_s: float = 5.0) -> dict[str, Any]:
    """How the simulator's first stream to ``provider`` went, once it has finished sending it (the record is
    filed when the simulator's writer returns, which can trail the client's last read)."""
    deadline = time.monotonic() + timeout_s
    while "stream" not in (call := simulator.calls(provider)[0]):
        assert time.monotonic() < deadline, "the simulator did not finish the stream in time"
        time.sleep(0.02)
    record: dict[str, Any] = call["stream"]
    return record
