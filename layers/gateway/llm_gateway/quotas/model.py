"""The shapes shared by deployments, header parsing and quota-aware routing.

A *deployment* is one way to reach a provider's models: its own credentials, base URL or region, an
optional weight and optional declared RPM/TPM. Today's single-key configuration is one deployment per
provider, whose id is the provider's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from llm_gateway.providers.base import Provider


@dataclass(frozen=True)
class Deployment:
    id: str  # unique in the deployment; the provider's name for the default single-key deployment
    provider: str  # the catalog provider whose models it serves: openai, anthropic, gemini, bedrock, ...
    kind: str  # the wire dialect: the provider's name, or "azure_openai"
    weight: float = 1.0
    rpm: int | None = None  # declared requests per minute, enforced across every instance
    tpm: int | None = None  # declared tokens per minute (input + output)
    region: str | None = None
    models: frozenset[str] = frozenset()  # catalog model ids it serves; empty: every model of its provider


@dataclass(frozen=True)
class Target:
    """A deployment and the adapter instance configured to call it."""

    deployment: Deployment
    provider: Provider


class DeploymentSet(Protocol):
    """Which deployments serve a catalog model, in configuration order (at least one for every model of a
    configured provider; today's single-key setup: exactly one, whose id is the provider's name)."""

    def targets(self, provider: str, model: str) -> list[Target]: ...


@dataclass(frozen=True)
class RateLimitSnapshot:
    """What one provider answer's headers said about the deployment's quota. Times are epoch seconds
    (resets given as durations are added to the time the answer was received); None: not said."""

    limit_requests: int | None = None
    remaining_requests: int | None = None
    requests_reset_at: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    tokens_reset_at: float | None = None
    retry_after_at: float | None = None  # a 429's retry-after, as a time

    def exhausted_until(self) -> float | None:
        """The time before which the deployment should not be called, or None when it has room."""
        waits = [self.retry_after_at]
        if self.remaining_requests == 0:
            waits.append(self.requests_reset_at)
        if self.remaining_tokens == 0:
            waits.append(self.tokens_reset_at)
        known = [w for w in waits if w is not None]
        return max(known) if known else None
