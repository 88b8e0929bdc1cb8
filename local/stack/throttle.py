"""API Gateway throttling: a token bucket per API key, as a usage plan's ``Throttle`` sets it.

The bucket holds ``burst`` requests and refills at ``rate`` per second; a request that finds it empty
is answered 429 without reaching the function. Only ``make run`` turns it on (``LocalStack(throttle=
True)``): tests and benchmarks send bursts API Gateway would throttle on purpose.
"""

from __future__ import annotations

import threading
import time


class KeyThrottle:
    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, monotonic time of that count)

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        with self._lock:
            tokens, since = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - since) * self.rate_per_s)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                return False
            self._buckets[key] = (tokens - 1.0, now)
            return True
