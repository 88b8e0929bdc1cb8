"""Time left in this invocation, so that no wait or call runs past the Lambda's own timeout."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol


class LambdaContextLike(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


class Deadline:
    def __init__(self, seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._end = self._clock() + seconds

    @classmethod
    def from_context(cls, context: LambdaContextLike | None, *, margin_s: float, default_s: float = 60.0) -> Deadline:
        if context is None or not hasattr(context, "get_remaining_time_in_millis"):
            return cls(default_s - margin_s)
        return cls(context.get_remaining_time_in_millis() / 1000.0 - margin_s)

    def remaining(self) -> float:
        return max(self._end - self._clock(), 0.0)

    def expired(self) -> bool:
        return self.remaining() <= 0.0
