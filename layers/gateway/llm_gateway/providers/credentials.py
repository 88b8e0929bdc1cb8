"""Provider API keys: environment first, then SSM parameters, then one Secrets Manager JSON secret.

Remote lookups go through Powertools parameters, which caches them (``max_age``) across warm invocations.
"""

from __future__ import annotations

import json
from typing import Any

from llm_gateway.config import Settings

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


def _secret_keys(secret_id: str) -> dict[str, str]:
    from llm_gateway import aws

    raw: Any = aws.secrets().get(secret_id, max_age=KEY_CACHE_SECONDS)
    data = json.loads(raw) if isinstance(raw, str | bytes) else raw
    if not isinstance(data, dict):
        return {}
    return {str(k): str(v) for k, v in data.items() if v}
