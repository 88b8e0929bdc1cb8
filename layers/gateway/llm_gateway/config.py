"""Settings read from the environment once, into a typed model (never at import time)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cache
from typing import Literal

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

    # Response cache (issue 3): DynamoDB on CACHE_TABLE, or Momento when selected.
    cache_backend: Literal["dynamodb", "momento", "off"] = "dynamodb"
    cache_ttl_s: int = Field(default=86_400, ge=1, le=30 * 86_400)
    cache_timeout_s: float = Field(default=0.5, gt=0, le=10)  # slower than this: skipped (fail-open)
    momento_api_key: str | None = None
    momento_cache_name: str = "llm-gateway"
    momento_endpoint: str | None = None  # with a v2 API key, e.g. "cell-1-us-east-1-1.prod.a.momentohq.com"
    momento_local_endpoint: str | None = None  # "host:port" of a local Momento-protocol server
    # Budgets: a per-tenant item in the usage table, else this default (None: no budget).
    default_budget_usd: float | None = Field(default=None, ge=0)
    budget_window: Literal["day", "month"] = "day"
    budget_fail_open: bool = False
    usage_retention_days: int = Field(default=400, ge=1)
    # Shared circuit breaker (state in the usage table, or Momento when selected).
    breaker_backend: Literal["dynamodb", "momento", "off"] = "dynamodb"
    breaker_failures: int = Field(default=5, ge=1)
    breaker_window_s: int = Field(default=60, ge=1)
    breaker_cooldown_s: int = Field(default=30, ge=1)

    # Summarization (issue 5): chunk size cap, parallel map calls, prompt templates, input size.
    summary_max_chunk_tokens: int = Field(default=3_000, ge=32, le=200_000)
    summary_stuff_max_tokens: int = Field(default=32_000, ge=32, le=2_000_000)  # auto's one-call ceiling
    summary_concurrency: int = Field(default=8, ge=1, le=64)
    summary_prompt_version: str = Field(default="v1", pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    summary_max_document_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)

    # Async jobs and the retry worker (issue 6). JOB_MAX_RECEIVES must equal RetryQueue's maxReceiveCount.
    jobs_table: str | None = None
    idempotency_table: str | None = None
    retry_dlq_url: str | None = None  # poison messages go straight here (kept, never retried)
    job_max_receives: int = Field(default=5, ge=1, le=1000)
    job_backoff_base_s: int = Field(default=30, ge=0, le=43_200)  # SQS visibility/delay: whole seconds
    job_backoff_max_s: int = Field(default=900, ge=0, le=43_200)
    job_ttl_s: int = Field(default=14 * 86_400, ge=60)  # as long as the dead-letter queue keeps messages
    job_inline_max_bytes: int = Field(default=250_000, ge=1_024, le=250_000)  # larger: S3 (fits SFN output)
    job_max_runtime_s: float = Field(default=60.0, gt=0)

    # Extraction (issue 4): bounded reasks on invalid answers, token budget over all asks, input size.
    extraction_max_reasks: int = Field(default=2, ge=0, le=5)
    extraction_token_budget: int = Field(default=60_000, ge=1_000, le=2_000_000)
    extraction_max_document_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)

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
            "cache_backend": "GATEWAY_CACHE_BACKEND",
            "cache_ttl_s": "GATEWAY_CACHE_TTL",
            "cache_timeout_s": "GATEWAY_CACHE_TIMEOUT",
            "momento_api_key": "MOMENTO_API_KEY",
            "momento_cache_name": "MOMENTO_CACHE_NAME",
            "momento_endpoint": "MOMENTO_ENDPOINT",
            "momento_local_endpoint": "MOMENTO_LOCAL_ENDPOINT",
            "default_budget_usd": "GATEWAY_DEFAULT_BUDGET_USD",
            "budget_window": "GATEWAY_BUDGET_WINDOW",
            "budget_fail_open": "GATEWAY_BUDGET_FAIL_OPEN",
            "usage_retention_days": "GATEWAY_USAGE_RETENTION_DAYS",
            "breaker_backend": "GATEWAY_BREAKER_BACKEND",
            "breaker_failures": "GATEWAY_BREAKER_FAILURES",
            "breaker_window_s": "GATEWAY_BREAKER_WINDOW",
            "breaker_cooldown_s": "GATEWAY_BREAKER_COOLDOWN",
            "summary_max_chunk_tokens": "GATEWAY_SUMMARY_MAX_CHUNK_TOKENS",
            "summary_stuff_max_tokens": "GATEWAY_SUMMARY_STUFF_MAX_TOKENS",
            "summary_concurrency": "GATEWAY_SUMMARY_CONCURRENCY",
            "summary_prompt_version": "GATEWAY_SUMMARY_PROMPT_VERSION",
            "summary_max_document_bytes": "GATEWAY_SUMMARY_MAX_DOCUMENT_BYTES",
            "jobs_table": "JOBS_TABLE",
            "idempotency_table": "IDEMPOTENCY_TABLE",
            "retry_dlq_url": "RETRY_DLQ_URL",
            "job_max_receives": "JOB_MAX_RECEIVES",
            "job_backoff_base_s": "JOB_BACKOFF_BASE",
            "job_backoff_max_s": "JOB_BACKOFF_MAX",
            "job_ttl_s": "JOB_TTL_SECONDS",
            "job_inline_max_bytes": "JOB_INLINE_MAX_BYTES",
            "job_max_runtime_s": "JOB_MAX_RUNTIME",
            "extraction_max_reasks": "GATEWAY_EXTRACTION_MAX_REASKS",
            "extraction_token_budget": "GATEWAY_EXTRACTION_TOKEN_BUDGET",
            "extraction_max_document_bytes": "GATEWAY_EXTRACTION_MAX_DOCUMENT_BYTES",
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
