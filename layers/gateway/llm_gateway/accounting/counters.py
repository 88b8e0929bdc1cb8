"""In-process counters for the cache, ledger, budgets and breaker, with an optional metrics sink.

The counters make behaviour observable in tests and benchmarks; the sink forwards each increment to
CloudWatch (Powertools EMF metrics) when the function has a metrics namespace configured.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Callable

log = logging.getLogger("llm_gateway")

MetricSink = Callable[[str, float, str | None], None]  # (name, value, provider or None)


class Counters:
    def __init__(self, sink: MetricSink | None = None) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._sink = sink

    def add(self, name: str, value: int = 1, *, provider: str | None = None) -> None:
        """Count ``name``; with ``provider``, its metric also has a Provider dimension."""
        with self._lock:
            self._counts[name] += value
        if self._sink is not None:
            try:
                self._sink(name, value, provider)
            except Exception:  # metrics must never break a request
                log.debug("metric sink failed", exc_info=True)

    def get(self, name: str) -> int:
        with self._lock:
            return self._counts[name]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


def powertools_sink() -> MetricSink | None:
    """Forward counts to Powertools metrics (flushed by the handler's ``log_metrics``), if configured."""
    if not os.environ.get("POWERTOOLS_METRICS_NAMESPACE"):
        return None
    from aws_lambda_powertools import Metrics  # lazy: only in Lambda-like environments
    from aws_lambda_powertools.metrics import MetricUnit

    from llm_gateway.observability import metrics as operator_metrics

    metrics = Metrics()  # instances share one metric set, flushed by the handler's decorator

    def sink(name: str, value: float, provider: str | None) -> None:
        if provider is None:
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
        else:  # a document of its own: [service, Provider] and [service]
            operator_metrics.count(name, value, provider=provider)

    return sink
