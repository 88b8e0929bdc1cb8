"""The record of one provider call (an ``Attempt``) and what a request's attempts cost, for every routed path."""

from __future__ import annotations

import time

from llm_gateway.catalog import ModelSpec
from llm_gateway.errors import ProviderError
from llm_gateway.models import Attempt


def failed_attempt(spec: ModelSpec, err: ProviderError, started: float, *, deployment: str | None = None) -> Attempt:
    """A call that failed with ``err`` (which is labelled with the catalog's provider and model)."""
    err.provider, err.model = spec.provider, spec.id
    return Attempt(
        provider=spec.provider,
        model=spec.id,
        deployment=deployment,
        outcome="error",
        error_class=type(err).__name__,
        error_code=err.code,
        status_code=err.status_code,
        duration_ms=ms_since(started),
    )


def spent(attempts: list[Attempt]) -> float:
    return sum(a.cost_usd for a in attempts)


def spent_tokens(attempts: list[Attempt], deployment: str) -> int:
    """The tokens (input + output) a deployment's attempts used: what its quota is charged."""
    return sum(a.usage.input_tokens + a.usage.output_tokens for a in attempts if a.deployment == deployment)


def ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 3)
