"""Provider API keys: environment first, then SSM parameters, then one Secrets Manager JSON secret.

A deployment (quotas/deployment_config.py) may keep its key elsewhere: in ``GATEWAY_DEPLOYMENT_KEYS``
(local runs), an SSM parameter, a secret of its own, or its own entry in the provider-keys secret.
Remote lookups go through Powertools parameters, which caches them (``max_age``) across warm invocations.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from llm_gateway.config import Settings

if TYPE_CHECKING:
    from llm_gateway.quotas.deployment_config import DeploymentConfig

KEY_CACHE_SECONDS = 300


def provider_key(settings: Settings, provider: str) -> str | None:
    if key := settings.api_keys.get(provider):
        return key
    if param := settings.key_params.get(provider):
        from llm_gateway import aws

        value = aws.ssm_parameters().get(param, decrypt=True, max_age=KEY_CACHE_SECONDS)
        return str(value) if value else None
    if settings.provider_keys_secret:
        return _secret_keys(settings.provider_keys_secret).get(provider) or None
    return None


def deployment_key(settings: Settings, deployment: DeploymentConfig) -> str | None:
    """The key of one listed deployment. An entry named after its provider, speaking its dialect and
    naming no key of its own, refines the implicit deployment: the provider's key as today."""
    if key := settings.deployment_keys.get(deployment.id):
        return key
    if deployment.key_param:
        from llm_gateway import aws

        value = aws.ssm_parameters().get(deployment.key_param, decrypt=True, max_age=KEY_CACHE_SECONDS)
        return str(value) if value else None
    if deployment.secret:
        return _own_secret_key(deployment.secret)
    if deployment.key is None and deployment.id == deployment.provider == deployment.dialect:
        return provider_key(settings, deployment.provider)
    if settings.provider_keys_secret:
        return _secret_keys(settings.provider_keys_secret).get(deployment.key or deployment.id) or None
    return None


def _own_secret_key(secret_id: str) -> str | None:
    """A deployment's own secret: the key as plain text, or a JSON object with an ``api_key`` entry."""
    from llm_gateway import aws

    raw: Any = aws.secrets().get(secret_id, max_age=KEY_CACHE_SECONDS)
    if isinstance(raw, bytes):
        raw = raw.decode()
    if isinstance(raw, str) and raw.lstrip().startswith("{"):
        raw = json.loads(raw)
    if isinstance(raw, dict):
        raw = raw.get("api_key")
    return str(raw).strip() or None if raw else None


def _secret_keys(secret_id: str) -> dict[str, str]:
    from llm_gateway import aws

    raw: Any = aws.secrets().get(secret_id, max_age=KEY_CACHE_SECONDS)
    data = json.loads(raw) if isinstance(raw, str | bytes) else raw
    if not isinstance(data, dict):
        return {}
    return {str(k): str(v) for k, v in data.items() if v}
