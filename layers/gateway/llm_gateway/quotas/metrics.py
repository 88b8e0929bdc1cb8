"""Per-deployment quota metrics: utilisation, requests skipped for quota, 429s received.

In-process counts (``Counters``, ``<Metric>`` and ``<Metric>:<deployment>``) for tests and benchmarks;
with ``POWERTOOLS_METRICS_NAMESPACE`` set, each event is also one EMF document with the dimension set
[service, Deployment] (deployments are few and operator-defined: a small, bounded set). Nothing here may
fail a request.
"""

from __future__ import annotations

import logging
import os
import threading

from llm_gateway.accounting.counters import Counters

log = logging.getLogger("llm_gateway.quotas")

SKIPPED = "QuotaSkipped"  # a deployment not called because it had no quota left (known or refused)
RATE_LIMITED = "ProviderRateLimited"  # a 429 received from a deployment
UTILISATION = "QuotaUtilisation"  # percent of the window's declared limit, after a reservation
STORE_ERROR = "QuotaStoreError"


class QuotaMetrics:
    def __init__(self, counters: Counters | None = None, *, emit: bool | None = None) -> None:
        self.counters = counters or Counters()
        self._emit = bool(os.environ.get("POWERTOOLS_METRICS_NAMESPACE")) if emit is None else emit
        self._lock = threading.Lock()
        self._utilisation: dict[str, float] = {}

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
        self._document(UTILISATION, deployment, percent, "Percent")

    def last_utilisation(self, deployment: str) -> float | None:
        """The deployment's utilisation (percent) after this instance's last reservation on it."""
        with self._lock:
            return self._utilisation.get(deployment)

    def _count(self, name: str, deployment: str) -> None:
        self.counters.add(name)
        self.counters.add(f"{name}:{deployment}")
        self._document(name, deployment, 1, "Count")

    def _document(self, name: str, deployment: str, value: float, unit: str) -> None:
        if not self._emit:
            return
        try:
            from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

            metrics = EphemeralMetrics()
            metrics.add_dimension(name="Deployment", value=deployment)
            metrics.add_metric(name=name, unit=MetricUnit(unit), value=value)
            metrics.flush_metrics()
        except Exception:  # metrics must never break a request
            log.debug("quota metric failed", exc_info=True)
