"""A key's policy and its stored form (one item per secret in the keys table, see store.py).

Patterns in ``allowed`` are shell-style globs matched, case-sensitively, against the model or tier as
the caller wrote it (``gpt-4o*``, ``claude-*``, ``tier:fast``): ``tier:fast`` allows asking for the
fast tier, whatever models the tier routes to, and not ``gpt-4o`` by name. An empty list allows all.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llm_gateway.catalog import ModelSpec

BUDGET_SUBJECT_PREFIX = "key:"  # a key's budget lives in the budgets table under "key:<key_id>"


@dataclass(frozen=True)
class KeyBudget:
    limit_usd: Decimal
    window: str  # "day" | "month"


@dataclass(frozen=True)
class KeyPolicy:
    """What a key may do. Limits of None mean no limit."""

    tenant: str
    name: str
    created_at: float
    expires_at: float | None = None
    disabled: bool = False
    revoked_at: float | None = None
    allowed: tuple[str, ...] = ()
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    budget: KeyBudget | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    # Guardrails (guardrails/policy.py): the key's settings over the deployment's default, e.g.
    # "pii=redact,injection=block", and whether its requests may change them ("any", "tighten" or
    # "none"; None: the deployment's GATEWAY_GUARDRAILS_OVERRIDE).
    guardrails: str | None = None
    guardrails_override: str | None = None

    def allows(self, model_or_tier: str) -> bool:
        return not self.allowed or any(fnmatch.fnmatchcase(model_or_tier, pattern) for pattern in self.allowed)

    def allows_model(self, spec: ModelSpec) -> bool:
        """Whether the router may serve this key with a catalog model it picked itself (an automatic
        fallback, a larger window): allowed by its id or by one of its tiers."""
        return (
            not self.allowed or self.allows(spec.id) or any(self.allows(f"tier:{tier}") for tier in sorted(spec.tiers))
        )

    def refusal(self, now: float) -> str | None:
        """Why the key cannot be used at ``now`` (for logs and the admin view), or None when it can."""
        if self.revoked_at is not None and self.revoked_at <= now:
            return "revoked"
        if self.disabled:
            return "disabled"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return None


@dataclass(frozen=True)
class KeyRecord:
    """One stored secret: its hash, the key it belongs to and that key's policy. A rotation adds a
    record with the same ``key_id`` and the next ``generation``."""

    key_hash: str
    key_id: str
    policy: KeyPolicy
    generation: int = 1

    def with_policy(self, **changes: Any) -> KeyRecord:
        return replace(self, policy=replace(self.policy, **changes))


@dataclass(frozen=True)
class VerifiedKey:
    """The caller, as its key says: the only source of tenant and policy for the request."""

    key_id: str
    tenant: str
    policy: KeyPolicy

    @property
    def budget_subject(self) -> str | None:
        return BUDGET_SUBJECT_PREFIX + self.key_id if self.policy.budget is not None else None

    def context_tags(self) -> dict[str, str]:
        """Tags for ``RequestContext.tags``: the ledger records ``key_id``; the key budget guard reads
        ``key_budget`` (the budget subject) when the key has a budget of its own."""
        tags = {"key_id": self.key_id}
        if (subject := self.budget_subject) is not None:
            tags["key_budget"] = subject
        return tags


def first_refused(policy: KeyPolicy, names: Iterable[str]) -> str | None:
    """The first of ``names`` the policy does not allow, or None."""
    return next((name for name in names if not policy.allows(name)), None)
