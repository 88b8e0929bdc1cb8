"""An in-memory QuotaStore with the DynamoDB store's semantics (conditional add, only-later exhaustion),
for unit tests of selection and routing; the DynamoDB store itself is tested against moto."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence

from llm_gateway.quotas.store import Admission, SharedQuota, WindowCounts


class MemoryQuotaStore:
    def __init__(self) -> None:
        self.windows: dict[tuple[str, int], WindowCounts] = {}
        self.exhausted: dict[str, float] = {}
        self.calls: Counter[str] = Counter()
        self.fail = False
        self._lock = threading.Lock()

    def _check(self, operation: str) -> None:
        self.calls[operation] += 1
        if self.fail:
            raise ConnectionError("quota store down")

    async def reserve(
        self,
        deployment: str,
        window: int,
        *,
        requests: int,
        tokens: int,
        rpm: int | None,
        tpm: int | None,
        expires_at: int,
    ) -> Admission:
        self._check("reserve")
        with self._lock:
            now = self.windows.get((deployment, window), WindowCounts())
            if (rpm is not None and now.requests + requests > rpm) or (tpm is not None and now.tokens + tokens > tpm):
                return Admission(False, now)
            after = WindowCounts(now.requests + requests, now.tokens + tokens)
            self.windows[(deployment, window)] = after
            return Admission(True, after)

    async def adjust(self, deployment: str, window: int, *, requests: int = 0, tokens: int = 0) -> None:
        self._check("adjust")
        with self._lock:
            now = self.windows.get((deployment, window), WindowCounts())
            self.windows[(deployment, window)] = WindowCounts(now.requests + requests, now.tokens + tokens)

    async def mark_exhausted(self, deployment: str, until: float) -> bool:
        self._check("mark_exhausted")
        with self._lock:
            if self.exhausted.get(deployment, 0.0) >= until:
                return False
            self.exhausted[deployment] = until
            return True

    async def read(self, deployments: Sequence[str], window: int) -> dict[str, SharedQuota]:
        self._check("read")
        with self._lock:
            return {
                d: SharedQuota(self.windows.get((d, window), WindowCounts()), self.exhausted.get(d, 0.0))
                for d in deployments
            }
