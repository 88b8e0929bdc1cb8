"""Which deployment of a model to try first: least utilised relative to its weight, exhausted ones never.

Pure functions over numbers the tracker keeps, so the policy is unit-tested on its own.

*Utilisation* is a fraction of what the deployment may take in the current window: the larger of
requests/RPM and tokens/TPM for declared limits, else what the provider's last headers said
(1 - remaining/limit), else the deployment's share of this instance's recent calls to the model. The
order is by utilisation divided by weight: two deployments with weights 3 and 1 and the same limits are
called 3:1 while both have room, and the lighter one gets everything once the heavier one is full.
Ties keep configuration order; a deployment of weight 0 is a standby, tried last.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Load:
    """What selection needs to know about one deployment right now."""

    deployment: str
    weight: float
    utilisation: float  # 0..1 (may exceed 1 transiently: counted in flight)
    exhausted_until: float = 0.0  # epoch seconds; in the past: not exhausted


def utilisation(
    requests: int, tokens: int, *, rpm: int | None, tpm: int | None, hint: float | None, share: float
) -> float:
    """The deployment's utilisation from its declared limits, else the provider's hint, else its share."""
    declared = [used / limit for used, limit in ((requests, rpm), (tokens, tpm)) if limit]
    if declared:
        return max(declared)
    if hint is not None:
        return hint
    return share


def order(loads: Sequence[Load], now: float) -> list[str]:
    """The deployments to try, best first; those exhausted at ``now`` are left out."""
    ranked = [(index, load) for index, load in enumerate(loads) if load.exhausted_until <= now]
    ranked.sort(key=lambda pair: (*_rank(pair[1]), pair[0]))
    return [load.deployment for _, load in ranked]


def _rank(load: Load) -> tuple[int, float]:
    # Weight 0: a standby, called only when every weighted deployment is exhausted or refused.
    return (0, load.utilisation / load.weight) if load.weight > 0 else (1, load.utilisation)


def earliest_reset(resets: Sequence[float]) -> float | None:
    """When the first of several exhausted deployments has room again (None: none is known)."""
    known = [r for r in resets if r > 0]
    return min(known) if known else None
