"""Settings read from the environment once, into a typed model (never at import time)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cache

from pydantic import BaseModel, Field

DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com",
}


class Settings(BaseModel):
    openai_base_url: str = DEFAULT_BASE_URLS["openai"]
    anthropic_base_url: str = DEFAULT_BASE_URLS["anthropic"]
    gemini_base_url: str = DEFAULT_BASE_URLS["gemini"]
    openai_compatible_base_url: str | None = None
    # Keys straight from the environment (local runs); in AWS they come from the secret below.
    api_keys: dict[str, str] = Field(default_factory=dict)
    provider_keys_secret: str | None = None
    key_params: dict[str, str] = Field(default_factory=dict)  # provider -> SSM parameter name

    connect_timeout_s: float = Field(default=3.0, gt=0)
    request_timeout_s: float = Field(default=30.0, gt=0)
    max_attempts_per_model: int = Field(default=3, ge=1, le=10)
    backoff_base_s: float = Field(default=0.5, ge=0)
    backoff_max_s: float = Field(default=8.0, ge=0)
    max_retry_after_s: float = Field(default=20.0, ge=0)
    deadline_margin_s: float = Field(default=1.5, ge=0)

    default_tier: str = "fast"
    default_max_tokens: int = Field(default=1024, ge=1)
    auto_fallback: bool = True
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    log_prompts: bool = False

    cache_table: str | None = None
    usage_table: str | None = None
    retry_queue_url: str | None = None
    documents_bucket: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for provider in ("openai", "anthropic", "gemini", "openai_compatible"):
            upper = provider.upper()
            if base := env.get(f"{upper}_BASE_URL"):
                values[f"{provider}_base_url"] = base.rstrip("/")
        values["api_keys"] = {
            provider: key
            for provider in ("openai", "anthropic", "gemini", "openai_compatible")
            if (key := env.get(f"{provider.upper()}_API_KEY"))
        }
        values["key_params"] = {
            provider: name
            for provider in ("openai", "anthropic", "gemini", "openai_compatible")
            if (name := env.get(f"{provider.upper()}_API_KEY_PARAM"))
        }
        simple = {
            "provider_keys_secret": "PROVIDER_KEYS_SECRET",
            "connect_timeout_s": "GATEWAY_CONNECT_TIMEOUT",
            "request_timeout_s": "GATEWAY_REQUEST_TIMEOUT",
            "max_attempts_per_model": "GATEWAY_MAX_ATTEMPTS",
            "backoff_base_s": "GATEWAY_BACKOFF_BASE",
            "backoff_max_s": "GATEWAY_BACKOFF_MAX",
            "max_retry_after_s": "GATEWAY_MAX_RETRY_AFTER",
            "deadline_margin_s": "GATEWAY_DEADLINE_MARGIN",
            "default_tier": "GATEWAY_DEFAULT_TIER",
            "default_max_tokens": "GATEWAY_DEFAULT_MAX_TOKENS",
            "auto_fallback": "GATEWAY_AUTO_FALLBACK",
            "max_body_bytes": "GATEWAY_MAX_BODY_BYTES",
            "log_prompts": "GATEWAY_LOG_PROMPTS",
            "cache_table": "CACHE_TABLE",
            "usage_table": "USAGE_TABLE",
            "retry_queue_url": "RETRY_QUEUE_URL",
            "documents_bucket": "DOCUMENTS_BUCKET",
        }
        for field, var in simple.items():
            if (raw := env.get(var)) not in (None, ""):
                values[field] = raw
        return cls.model_validate(values)

    def base_url(self, provider: str) -> str | None:
        return {
            "openai": self.openai_base_url,
            "anthropic": self.anthropic_base_url,
            "gemini": self.gemini_base_url,
            "openai_compatible": self.openai_compatible_base_url,
        }.get(provider)


@cache
def settings() -> Settings:
    """Process-wide settings, parsed on first use."""
    return Settings.from_env()
