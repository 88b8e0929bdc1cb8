"""Per-deployment quota metrics: utilisation, requests skipped for quota, 429s received.

In-process: the totals go to the shared ``Counters`` (``QuotaSkipped``, ``ProviderRateLimited``,
``QuotaStoreError``), and per deployment to this object's own counts (:meth:`count`), for tests and
benchmarks. With ``POWERTOOLS_METRICS_NAMESPACE`` set they are also EMF documents with the dimension set
[service, Deployment] (deployments are few and operator-defined: a small, bounded set), at most one per
metric and deployment every ``flush_s`` seconds, carrying the sum (counts) or the highest value
(utilisation) since the previous one: a busy instance writes a few lines a minute, not one per request.
What is still pending when a sandbox ends is lost (at most ``flush_s`` of it). Nothing here may fail a
request.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable

from llm_gateway.accounting.counters import Counters

log = logging.getLogger("llm_gateway.quotas")

SKIPPED = "QuotaSkipped"  # a deployment not called because it had no quota left (known or refused)
RATE_LIMITED = "ProviderRateLimited"  # a 429 received from a deployment
UTILISATION = "QuotaUtilisation"  # percent of the window's declared limit, after a reservation
STORE_ERROR = "QuotaStoreError"


class QuotaMetrics:
    def __init__(
        self,
        counters: Counters | None = None,
        *,
        emit: bool | None = None,
        flush_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.counters = counters or Counters()
        self._emit = bool(os.environ.get("POWERTOOLS_METRICS_NAMESPACE")) if emit is None else emit
        self.flush_s = flush_s
        self._clock = clock
        self._lock = threading.Lock()
        self._per_deployment: Counter[tuple[str, str]] = Counter()
        self._utilisation: dict[str, float] = {}
        self._pending: dict[tuple[str, str], float] = {}  # (metric, deployment) -> value not yet emitted
        self._emitted_at: dict[tuple[str, str], float] = {}

    def skipped(self, deployment: str) -> None:
        self._count(SKIPPED, deployment)

    def rate_limited(self, deployment: str) -> None:
        self._count(RATE_LIMITED, deployment)

    def store_error(self) -> None:
        self.counters.add(STORE_ERROR)

    def utilisation(self, deployment: str, fraction: float) -> None:
        percent = round(100.0 * fraction, 2)
        with self._lock:
            self._utilisation[deployment] = percent
        self._record(UTILISATION, deployment, percent, "Percent", combine=max)

    def count(self, name: str, deployment: str) -> int:
        """How many ``name`` events this instance counted for ``deployment``."""
        with self._lock:
            return self._per_deployment[(name, deployment)]

    def last_utilisation(self, deployment: str) -> float | None:
        """The deployment's utilisation (percent) after this instance's last reservation on it."""
        with self._lock:
            return self._utilisation.get(deployment)

    def _count(self, name: str, deployment: str) -> None:
        self.counters.add(name)
        with self._lock:
            self._per_deployment[(name, deployment)] += 1
        self._record(name, deployment, 1, "Count", combine=lambda a, b: a + b)

    def _record(self, name: str, deployment: str, value: float, unit: str, *, combine: Callable[..., float]) -> None:
        if not self._emit:
            return
        key = (name, deployment)
        now = self._clock()
        with self._lock:
            held = self._pending.get(key)
            self._pending[key] = value if held is None else combine(held, value)
            if now - self._emitted_at.get(key, float("-inf")) < self.flush_s:
                return
            due = self._pending.pop(key)
            self._emitted_at[key] = now
        try:
            from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

            metrics = EphemeralMetrics()
            metrics.add_dimension(name="Deployment", value=deployment)
            metrics.add_metric(name=name, unit=MetricUnit(unit), value=due)
            metrics.flush_metrics()
        except Exception:  # metrics must never break a request
            log.debug("quota metric failed", exc_info=True)
