"""The configured deployments: which adapter instance serves which provider's models.

Built in the composition root (wiring.py) from ``Settings`` and the keys read for them: one implicit
deployment per configured provider (id: the provider's name; today's single-key setup), refined or
joined by the entries of ``GATEWAY_DEPLOYMENTS``. Each deployment gets its own adapter instance (its
own key, base URL, region, Azure deployment names); the HTTP client stays shared.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from llm_gateway.quotas.deployment_config import DeploymentConfig
from llm_gateway.quotas.model import Deployment, Target

if TYPE_CHECKING:
    from llm_gateway.config import Settings
    from llm_gateway.providers.base import Provider

log = logging.getLogger("llm_gateway.quotas")

DeploymentKeys = Mapping[str, str | None]


class ConfiguredDeployments:
    """A ``DeploymentSet`` over a fixed list of targets, in configuration order."""

    def __init__(self, targets: Iterable[Target]) -> None:
        self._targets = tuple(targets)
        ids = [t.deployment.id for t in self._targets]
        if len(set(ids)) != len(ids):
            raise ValueError(f"deployment ids must be unique: {ids}")

    @classmethod
    def one_per_provider(cls, providers: Mapping[str, Provider]) -> ConfiguredDeployments:
        """Today's single-key setup: one deployment per adapter, named after its provider."""
        return cls(
            Target(Deployment(id=name, provider=name, kind=name), adapter) for name, adapter in providers.items()
        )

    def targets(self, provider: str, model: str) -> list[Target]:
        return [
            t
            for t in self._targets
            if t.deployment.provider == provider and (not t.deployment.models or model in t.deployment.models)
        ]

    @property
    def all(self) -> tuple[Target, ...]:
        return self._targets

    def get(self, deployment_id: str) -> Target | None:
        return next((t for t in self._targets if t.deployment.id == deployment_id), None)

    def primary_adapters(self) -> dict[str, Provider]:
        """Provider -> the adapter of its first deployment: the providers that can be called, for the
        router, and the adapter of callers that do not choose among deployments."""
        primary: dict[str, Provider] = {}
        for target in self._targets:
            primary.setdefault(target.deployment.provider, target.provider)
        return primary


def deployment_plan(config: Settings) -> list[DeploymentConfig]:
    """Every deployment that could be configured: the implicit one of each provider with a base URL
    (replaced in place by a listed entry of the same id), then the other listed entries in order."""
    from llm_gateway.providers import PROVIDER_NAMES

    listed = {entry.id: entry for entry in config.deployments}
    implicit = [name for name in PROVIDER_NAMES if config.base_url(name) is not None or name in listed]
    plan = [listed.get(name) or DeploymentConfig.model_validate({"id": name, "provider": name}) for name in implicit]
    return plan + [entry for entry in config.deployments if entry.id not in implicit]


def read_deployment_keys(config: Settings) -> dict[str, str | None]:
    """The key of every deployment that takes one, by deployment id (the implicit ones: by provider name).
    Remote lookups are cached by Powertools; a failure propagates (the caller decides)."""
    from llm_gateway.providers import SIGNED_PROVIDERS
    from llm_gateway.providers.credentials import deployment_key

    return {
        entry.id: deployment_key(config, entry)
        for entry in deployment_plan(config)
        if entry.dialect not in SIGNED_PROVIDERS
    }


def build_deployments(
    config: Settings, keys: DeploymentKeys, *, known_models: Sequence[str] = ()
) -> ConfiguredDeployments:
    """The deployments that can be called: a key is known (or, for a self-hosted server, a base URL; for
    Bedrock, a region: the function's role signs its calls)."""
    from llm_gateway.providers import SIGNED_PROVIDERS

    targets: list[Target] = []
    for entry in deployment_plan(config):
        key = keys.get(entry.id)
        if key is None and entry.dialect != "openai_compatible" and entry.dialect not in SIGNED_PROVIDERS:
            continue
        adapter = _adapter(config, entry, key)
        if adapter is None:
            continue
        if known_models and (unknown := sorted(set(entry.served_models) - set(known_models))):
            log.warning(
                "deployment names models the catalog does not have", extra={"deployment": entry.id, "models": unknown}
            )
        targets.append(Target(_deployment(config, entry), adapter))
    return ConfiguredDeployments(targets)


def _deployment(config: Settings, entry: DeploymentConfig) -> Deployment:
    region = entry.region or (config.bedrock_region if entry.dialect == "bedrock" else None)
    return Deployment(
        id=entry.id,
        provider=entry.provider,
        kind=entry.dialect,
        weight=entry.weight,
        rpm=entry.rpm,
        tpm=entry.tpm,
        region=region,
        models=entry.served_models,
    )


def _adapter(config: Settings, entry: DeploymentConfig, key: str | None) -> Provider | None:
    from llm_gateway.providers import adapter_class

    base_url = entry.base_url
    extra: dict[str, object] = {}
    if entry.dialect == "bedrock":
        # Bedrock signs with the function's role in its region instead of a key.
        region = entry.region or config.bedrock_region
        base_url = base_url or (
            config.bedrock_endpoint_url or f"https://bedrock-runtime.{region}.amazonaws.com"
            if entry.region
            else config.bedrock_base_url
        )
        extra["region"] = region
    elif entry.dialect == "azure_openai":
        from llm_gateway.quotas.deployment_config import DEFAULT_AZURE_API_VERSION

        extra["api_version"] = entry.api_version or DEFAULT_AZURE_API_VERSION
        extra["deployment_names"] = dict(entry.azure_deployments)
    base_url = base_url or config.base_url(entry.provider)
    if base_url is None:
        return None
    return adapter_class(entry.dialect)(
        base_url=base_url,
        api_key=key,
        connect_timeout_s=config.connect_timeout_s,
        log_prompts=config.log_prompts,
        **extra,
    )
