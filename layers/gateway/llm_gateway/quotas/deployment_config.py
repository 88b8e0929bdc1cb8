"""One entry of ``GATEWAY_DEPLOYMENTS``: how to reach one deployment of a provider's models.

``GATEWAY_DEPLOYMENTS`` is a JSON list of these objects. Each names the catalog provider it serves and
how its key is found; today's single-key configuration needs none of them (one implicit deployment per
configured provider, whose id is the provider's name). An entry whose id is a provider's name refines
that implicit deployment (a weight, RPM/TPM) and keeps its key lookup unless it names its own.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# The wire dialects a deployment may speak: a provider's own, or Azure OpenAI's for OpenAI models.
KINDS = ("openai", "openai_compatible", "anthropic", "gemini", "bedrock", "azure_openai")
# A deployment's own secret must be named under this prefix: the functions may read no other (template.yaml).
SECRET_PREFIX = "llm-gateway/"
# Azure OpenAI's current GA data-plane version; an entry may name another.
DEFAULT_AZURE_API_VERSION = "2024-10-21"

CatalogProvider = Literal["openai", "openai_compatible", "anthropic", "gemini", "bedrock"]


class DeploymentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    provider: CatalogProvider
    kind: str | None = None  # default: the provider's own dialect
    # Where the key is: GATEWAY_DEPLOYMENT_KEYS (local runs) first, then an SSM parameter, then a
    # secret of its own, else the entry `key` (default: the id) in PROVIDER_KEYS_SECRET.
    key: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,128}$")
    secret: str | None = Field(default=None, min_length=1, max_length=2048)
    key_param: str | None = Field(default=None, pattern=r"^(/[A-Za-z0-9_.-]+)+$")
    base_url: str | None = None  # default: the provider's (Bedrock: the region's endpoint)
    region: str | None = Field(default=None, pattern=r"^[a-z0-9-]{2,32}$")
    weight: float = Field(default=1.0, gt=0, le=1000)
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    models: tuple[str, ...] = ()  # catalog model ids; empty: every model of the provider
    # Azure OpenAI only: the data-plane api-version, and catalog model id -> Azure deployment name.
    api_version: str | None = Field(default=None, pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(-preview)?$")
    azure_deployments: dict[str, str] = Field(default_factory=dict)

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("base_url must be an http(s) URL")
        return value.rstrip("/") if value else value

    @field_validator("secret")
    @classmethod
    def _secret_name(cls, value: str | None) -> str | None:
        if value is None:
            return value
        name = value.split(":secret:", 1)[1] if value.startswith("arn:") and ":secret:" in value else value
        if not name.startswith(SECRET_PREFIX):
            raise ValueError(
                f"a deployment's secret must be named {SECRET_PREFIX}... (the functions may read no other)"
            )
        return value

    @field_validator("azure_deployments")
    @classmethod
    def _azure_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value.values():
            # It becomes a path segment of the URL.
            if not name or len(name) > 64 or not all(c.isalnum() or c in "-_." for c in name):
                raise ValueError(f"azure deployment name {name!r} is not a valid deployment name")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DeploymentConfig:
        kind = self.dialect
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}")
        if kind == "azure_openai":
            if self.provider != "openai":
                raise ValueError("an azure_openai deployment serves the openai provider's models")
            if self.base_url is None:
                raise ValueError("an azure_openai deployment needs base_url (https://<resource>.openai.azure.com)")
        elif kind != self.provider:
            raise ValueError(f"kind {kind} cannot serve the {self.provider} provider's models")
        elif self.api_version is not None or self.azure_deployments:
            raise ValueError("api_version and azure_deployments are for azure_openai deployments only")
        # The provider's implicit deployment (id: its name) takes its base URL and region from the settings.
        implicit = self.id == self.provider
        if kind == "bedrock" and self.base_url is None and self.region is None and not implicit:
            raise ValueError("a bedrock deployment needs a region (or a base_url)")
        if kind == "openai_compatible" and self.base_url is None and not implicit:
            raise ValueError("an openai_compatible deployment needs base_url")
        return self

    @property
    def dialect(self) -> str:
        return self.kind or self.provider

    @property
    def served_models(self) -> frozenset[str]:
        """Its models: as listed; for Azure without a list, the models it maps to Azure deployments."""
        if self.models:
            return frozenset(self.models)
        return frozenset(self.azure_deployments)


def parse_deployments(value: Any) -> tuple[DeploymentConfig, ...]:
    """``GATEWAY_DEPLOYMENTS`` (a JSON list, or the parsed list) as entries; ids must be unique."""
    value = _json(value, "GATEWAY_DEPLOYMENTS", [])
    if not isinstance(value, list | tuple):
        raise ValueError("GATEWAY_DEPLOYMENTS must be a JSON list of deployment objects")
    entries = tuple(e if isinstance(e, DeploymentConfig) else DeploymentConfig.model_validate(e) for e in value)
    seen: set[str] = set()
    for entry in entries:
        if entry.id in seen:
            raise ValueError(f"deployment id {entry.id!r} appears twice")
        seen.add(entry.id)
    return entries


def parse_key_map(value: Any) -> dict[str, str]:
    """``GATEWAY_DEPLOYMENT_KEYS``: a JSON object, deployment id -> key (local runs)."""
    value = _json(value, "GATEWAY_DEPLOYMENT_KEYS", {})
    if not isinstance(value, dict):
        raise ValueError("GATEWAY_DEPLOYMENT_KEYS must be a JSON object (deployment id -> key)")
    return {str(k): str(v) for k, v in value.items() if v}


def _json(value: Any, name: str, empty: Any) -> Any:
    if not isinstance(value, str | bytes):
        return value
    if not value.strip():
        return empty
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{name} is not valid JSON: {exc.msg} at position {exc.pos}") from None
