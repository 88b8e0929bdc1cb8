"""Settings: one typed model read from the environment, once, at the edge.

Each field names its environment variable (``validation_alias``); nothing is read at import time. The
edge builds one ``Settings`` per process (``wiring.services()``) and passes it down: nothing below the
edge reads the environment or calls a settings factory. Tests build their own, by field name, or from a
mapping with :meth:`Settings.from_env`, without touching ``os.environ``.

Plain pydantic rather than pydantic-settings: the same declarative mapping, without the ~15 ms that
importing pydantic-settings adds to every cold start (measured with ``python -X importtime``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from llm_gateway.quotas.deployment_config import DeploymentConfig, parse_deployments, parse_key_map

PROVIDERS = ("openai", "anthropic", "gemini", "openai_compatible")
DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com",
}


class Settings(BaseModel):
    # Fields are set by name in code and tests, by their environment variable (validation_alias) from
    # the environment; an empty variable counts as unset.
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    openai_base_url: str = Field(default=DEFAULT_BASE_URLS["openai"], validation_alias="OPENAI_BASE_URL")
    anthropic_base_url: str = Field(default=DEFAULT_BASE_URLS["anthropic"], validation_alias="ANTHROPIC_BASE_URL")
    gemini_base_url: str = Field(default=DEFAULT_BASE_URLS["gemini"], validation_alias="GEMINI_BASE_URL")
    openai_compatible_base_url: str | None = Field(default=None, validation_alias="OPENAI_COMPATIBLE_BASE_URL")
    # Keys straight from the environment (local runs); in AWS they come from the secret or SSM below.
    openai_api_key: str | None = Field(default=None, validation_alias="OPENAI_API_KEY", repr=False)
    anthropic_api_key: str | None = Field(default=None, validation_alias="ANTHROPIC_API_KEY", repr=False)
    gemini_api_key: str | None = Field(default=None, validation_alias="GEMINI_API_KEY", repr=False)
    openai_compatible_api_key: str | None = Field(
        default=None, validation_alias="OPENAI_COMPATIBLE_API_KEY", repr=False
    )
    # Amazon Bedrock: no key, the function's role signs each call (SigV4). Configured when a region is known;
    # the endpoint variable is botocore's own (the local stack points it at the simulator).
    bedrock_region: str | None = Field(default=None, validation_alias=AliasChoices("BEDROCK_REGION", "AWS_REGION"))
    bedrock_endpoint_url: str | None = Field(default=None, validation_alias="AWS_ENDPOINT_URL_BEDROCK_RUNTIME")
    bedrock_enabled: bool = Field(default=True, validation_alias="GATEWAY_BEDROCK_ENABLED")

    provider_keys_secret: str | None = Field(default=None, validation_alias="PROVIDER_KEYS_SECRET")
    # provider -> SSM parameter name holding its key
    openai_api_key_param: str | None = Field(default=None, validation_alias="OPENAI_API_KEY_PARAM")
    anthropic_api_key_param: str | None = Field(default=None, validation_alias="ANTHROPIC_API_KEY_PARAM")
    gemini_api_key_param: str | None = Field(default=None, validation_alias="GEMINI_API_KEY_PARAM")
    openai_compatible_api_key_param: str | None = Field(
        default=None, validation_alias="OPENAI_COMPATIBLE_API_KEY_PARAM"
    )

    # Deployments (quotas/deployment_config.py): more keys, accounts, regions or Azure OpenAI deployments
    # of the providers' models, as a JSON list; empty: one deployment per configured provider.
    deployments: tuple[DeploymentConfig, ...] = Field(default=(), validation_alias="GATEWAY_DEPLOYMENTS")
    # Deployment id -> key straight from the environment (local runs), as a JSON object.
    deployment_keys: dict[str, str] = Field(
        default_factory=dict, validation_alias="GATEWAY_DEPLOYMENT_KEYS", repr=False
    )

    connect_timeout_s: float = Field(default=3.0, gt=0, validation_alias="GATEWAY_CONNECT_TIMEOUT")
    request_timeout_s: float = Field(default=30.0, gt=0, validation_alias="GATEWAY_REQUEST_TIMEOUT")
    max_attempts_per_model: int = Field(default=3, ge=1, le=10, validation_alias="GATEWAY_MAX_ATTEMPTS")
    backoff_base_s: float = Field(default=0.5, ge=0, validation_alias="GATEWAY_BACKOFF_BASE")
    backoff_max_s: float = Field(default=8.0, ge=0, validation_alias="GATEWAY_BACKOFF_MAX")
    max_retry_after_s: float = Field(default=20.0, ge=0, validation_alias="GATEWAY_MAX_RETRY_AFTER")
    # Streams: the wait for a provider's first event, and between two events (each a ProviderTimeoutError).
    stream_first_byte_timeout_s: float = Field(default=30.0, gt=0, validation_alias="GATEWAY_STREAM_FIRST_BYTE_TIMEOUT")
    stream_idle_timeout_s: float = Field(default=30.0, gt=0, validation_alias="GATEWAY_STREAM_IDLE_TIMEOUT")
    # A request answered in one piece on a streamed route (API Gateway's response streaming lets it run
    # up to 15 minutes): the same 29 s as a buffered route by default, so a hung provider still falls
    # back as fast; raise it (up to the function's timeout) for long unstreamed answers.
    unstreamed_deadline_s: float = Field(default=29.0, gt=0, le=900, validation_alias="GATEWAY_UNSTREAMED_DEADLINE")
    deadline_margin_s: float = Field(default=1.5, ge=0, validation_alias="GATEWAY_DEADLINE_MARGIN")

    default_tier: str = Field(default="fast", validation_alias="GATEWAY_DEFAULT_TIER")
    default_max_tokens: int = Field(default=1024, ge=1, validation_alias="GATEWAY_DEFAULT_MAX_TOKENS")
    auto_fallback: bool = Field(default=True, validation_alias="GATEWAY_AUTO_FALLBACK")
    # Chat and completion bodies; the document routes (extractions, summaries, jobs) take up to what a
    # synchronous Lambda invocation can carry (6 MB for the whole event, envelope included).
    max_body_bytes: int = Field(default=1_048_576, ge=1024, validation_alias="GATEWAY_MAX_BODY_BYTES")
    document_max_body_bytes: int = Field(
        default=6_000_000, ge=1024, le=6_291_456, validation_alias="GATEWAY_DOCUMENT_MAX_BODY_BYTES"
    )
    log_prompts: bool = Field(default=False, validation_alias="GATEWAY_LOG_PROMPTS")

    cache_table: str | None = Field(default=None, validation_alias="CACHE_TABLE")
    usage_table: str | None = Field(default=None, validation_alias="USAGE_TABLE")
    retry_queue_url: str | None = Field(default=None, validation_alias="RETRY_QUEUE_URL")
    documents_bucket: str | None = Field(default=None, validation_alias="DOCUMENTS_BUCKET")

    # Response cache (issue 3): DynamoDB on CACHE_TABLE, or Momento when selected.
    cache_backend: Literal["dynamodb", "momento", "off"] = Field(
        default="dynamodb", validation_alias="GATEWAY_CACHE_BACKEND"
    )
    cache_ttl_s: int = Field(default=86_400, ge=1, le=30 * 86_400, validation_alias="GATEWAY_CACHE_TTL")
    # slower than this: skipped (fail-open)
    cache_timeout_s: float = Field(default=0.5, gt=0, le=10, validation_alias="GATEWAY_CACHE_TIMEOUT")
    momento_api_key: str | None = Field(default=None, validation_alias="MOMENTO_API_KEY")
    momento_cache_name: str = Field(default="llm-gateway", validation_alias="MOMENTO_CACHE_NAME")
    # with a v2 API key, e.g. "cell-1-us-east-1-1.prod.a.momentohq.com"
    momento_endpoint: str | None = Field(default=None, validation_alias="MOMENTO_ENDPOINT")
    # "host:port" of a local Momento-protocol server
    momento_local_endpoint: str | None = Field(default=None, validation_alias="MOMENTO_LOCAL_ENDPOINT")
    # Budgets: a per-tenant item in the usage table, else this default (None: no budget).
    default_budget_usd: float | None = Field(default=None, ge=0, validation_alias="GATEWAY_DEFAULT_BUDGET_USD")
    budget_window: Literal["day", "month"] = Field(default="day", validation_alias="GATEWAY_BUDGET_WINDOW")
    budget_fail_open: bool = Field(default=False, validation_alias="GATEWAY_BUDGET_FAIL_OPEN")
    usage_retention_days: int = Field(default=400, ge=1, validation_alias="GATEWAY_USAGE_RETENTION_DAYS")
    # Budget alerts (accounting/alerts.py): one notification to this SNS topic per tenant or key, window and
    # threshold reached (shares of the budget, "0.8,1.0"; "off" for none). No topic: no alerts.
    alerts_topic_arn: str | None = Field(default=None, validation_alias="GATEWAY_ALERTS_TOPIC_ARN")
    budget_alert_thresholds: tuple[float, ...] = Field(
        default=(0.8, 1.0), validation_alias="GATEWAY_BUDGET_ALERT_THRESHOLDS"
    )
    # Shared circuit breaker (state in the usage table, or Momento when selected).
    breaker_backend: Literal["dynamodb", "momento", "off"] = Field(
        default="dynamodb", validation_alias="GATEWAY_BREAKER_BACKEND"
    )
    breaker_failures: int = Field(default=5, ge=1, validation_alias="GATEWAY_BREAKER_FAILURES")
    breaker_window_s: int = Field(default=60, ge=1, validation_alias="GATEWAY_BREAKER_WINDOW")
    breaker_cooldown_s: int = Field(default=30, ge=1, validation_alias="GATEWAY_BREAKER_COOLDOWN")
    # A provider that refuses the gateway's key (401/403) is skipped this long, then probed once.
    breaker_auth_cooldown_s: int = Field(default=300, ge=1, validation_alias="GATEWAY_BREAKER_AUTH_COOLDOWN")
    # A breaker state read more than 1 s ago is used this much longer while a background read refreshes
    # it: the request that finds it stale does not wait on the store (0: always wait for a fresh read).
    breaker_view_stale_s: float = Field(default=10.0, ge=0, validation_alias="GATEWAY_BREAKER_VIEW_STALE")

    # Provider quotas (issue 19): shared per-deployment counters and exhausted-until state in QUOTA_TABLE
    # ("off": no quota tracking at all; without a table, what the providers' headers say is kept per instance).
    quota_table: str | None = Field(default=None, validation_alias="QUOTA_TABLE")
    quota_backend: Literal["dynamodb", "off"] = Field(default="dynamodb", validation_alias="GATEWAY_QUOTA_BACKEND")
    # Declared RPM/TPM count in fixed windows of this length (60 s: per minute; shorter in tests).
    quota_window_s: float = Field(default=60.0, gt=0, le=3600, validation_alias="GATEWAY_QUOTA_WINDOW")
    # How old this instance's view of other instances' quota state may be before it is read again.
    quota_view_ttl_s: float = Field(default=1.0, ge=0, le=60, validation_alias="GATEWAY_QUOTA_VIEW_TTL")
    # A call reserved this close to its window's end counts in the next window too (it may reach the
    # provider after the provider's window turned).
    quota_boundary_guard_s: float = Field(default=0.25, ge=0, le=10, validation_alias="GATEWAY_QUOTA_BOUNDARY_GUARD")

    # Gateway keys (issue 15): the keys table, and how long a sandbox trusts what it read from it. A
    # revoked or disabled key stops working within key_cache_ttl_s; an unknown key is re-read after
    # key_negative_cache_ttl_s (a flood of bad keys costs one read per key and interval, not per request).
    keys_table: str | None = Field(default=None, validation_alias="KEYS_TABLE")
    key_cache_ttl_s: float = Field(default=30.0, ge=0, le=300, validation_alias="GATEWAY_KEY_CACHE_TTL")
    key_negative_cache_ttl_s: float = Field(default=5.0, ge=0, le=60, validation_alias="GATEWAY_KEY_NEGATIVE_CACHE_TTL")

    # Summarization (issue 5): chunk size cap, parallel map calls, prompt templates, input size.
    summary_max_chunk_tokens: int = Field(
        default=3_000, ge=32, le=200_000, validation_alias="GATEWAY_SUMMARY_MAX_CHUNK_TOKENS"
    )
    # auto's one-call ceiling
    summary_stuff_max_tokens: int = Field(
        default=32_000, ge=32, le=2_000_000, validation_alias="GATEWAY_SUMMARY_STUFF_MAX_TOKENS"
    )
    summary_concurrency: int = Field(default=8, ge=1, le=64, validation_alias="GATEWAY_SUMMARY_CONCURRENCY")
    summary_prompt_version: str = Field(
        default="v1", pattern=r"^[A-Za-z0-9_.-]{1,32}$", validation_alias="GATEWAY_SUMMARY_PROMPT_VERSION"
    )
    summary_max_document_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024, validation_alias="GATEWAY_SUMMARY_MAX_DOCUMENT_BYTES"
    )

    # Async jobs and the retry worker (issue 6). JOB_MAX_RECEIVES must equal RetryQueue's maxReceiveCount.
    jobs_table: str | None = Field(default=None, validation_alias="JOBS_TABLE")
    idempotency_table: str | None = Field(default=None, validation_alias="IDEMPOTENCY_TABLE")
    # poison messages go straight here (kept, never retried)
    retry_dlq_url: str | None = Field(default=None, validation_alias="RETRY_DLQ_URL")
    job_max_receives: int = Field(default=5, ge=1, le=1000, validation_alias="JOB_MAX_RECEIVES")
    # SQS visibility/delay: whole seconds
    job_backoff_base_s: int = Field(default=30, ge=0, le=43_200, validation_alias="JOB_BACKOFF_BASE")
    job_backoff_max_s: int = Field(default=900, ge=0, le=43_200, validation_alias="JOB_BACKOFF_MAX")
    # as long as the dead-letter queue keeps messages
    job_ttl_s: int = Field(default=14 * 86_400, ge=60, validation_alias="JOB_TTL_SECONDS")
    # larger: S3 (fits SFN output)
    job_inline_max_bytes: int = Field(default=250_000, ge=1_024, le=250_000, validation_alias="JOB_INLINE_MAX_BYTES")
    job_max_runtime_s: float = Field(default=60.0, gt=0, validation_alias="JOB_MAX_RUNTIME")

    # Extraction (issue 4): bounded reasks on invalid answers, token budget over all asks, input size.
    extraction_max_reasks: int = Field(default=2, ge=0, le=5, validation_alias="GATEWAY_EXTRACTION_MAX_REASKS")
    extraction_token_budget: int = Field(
        default=60_000, ge=1_000, le=2_000_000, validation_alias="GATEWAY_EXTRACTION_TOKEN_BUDGET"
    )
    extraction_max_document_bytes: int = Field(
        default=5 * 1024 * 1024, ge=1024, validation_alias="GATEWAY_EXTRACTION_MAX_DOCUMENT_BYTES"
    )

    # Guardrails (issue 18, llm_gateway/guardrails): the default policy ("pii=redact,injection=monitor";
    # README, Guardrails), whether a request may change it when its key's policy says nothing (any,
    # tighten, none), the deny-list's terms (comma-separated) and the injection score that counts.
    guardrails: str = Field(default="", max_length=512, validation_alias="GATEWAY_GUARDRAILS")
    guardrails_override: Literal["any", "tighten", "none"] = Field(
        default="tighten", validation_alias="GATEWAY_GUARDRAILS_OVERRIDE"
    )
    guardrail_deny_terms: str = Field(default="", max_length=16_384, validation_alias="GATEWAY_GUARDRAIL_DENY_TERMS")
    guardrail_injection_threshold: float = Field(
        default=0.5, gt=0, le=1, validation_alias="GATEWAY_GUARDRAIL_INJECTION_THRESHOLD"
    )
    # Amazon Bedrock Guardrails (ApplyGuardrail): used by the "bedrock" check when an id is set.
    bedrock_guardrail_id: str | None = Field(default=None, validation_alias="GATEWAY_BEDROCK_GUARDRAIL_ID")
    bedrock_guardrail_version: str = Field(default="DRAFT", validation_alias="GATEWAY_BEDROCK_GUARDRAIL_VERSION")
    bedrock_guardrail_timeout_s: float = Field(
        default=5.0, gt=0, le=60, validation_alias="GATEWAY_BEDROCK_GUARDRAIL_TIMEOUT"
    )
    bedrock_guardrail_fail_open: bool = Field(default=False, validation_alias="GATEWAY_BEDROCK_GUARDRAIL_FAIL_OPEN")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``environ`` (default: the process environment); a bad value is a ValidationError."""
        source = os.environ if environ is None else environ
        return cls.model_validate({name: value for name, value in source.items() if value != ""})

    @property
    def jobs_configured(self) -> bool:
        """Whether this deployment has the job table and queue (async jobs, hand-offs, deferral)."""
        return bool(self.jobs_table and self.retry_queue_url)

    @field_validator("budget_alert_thresholds", mode="before")
    @classmethod
    def _thresholds(cls, value: object) -> tuple[float, ...]:
        from llm_gateway.accounting.alerts import parse_thresholds  # only when the variable is given

        if isinstance(value, str | list | tuple):
            return parse_thresholds(value)
        raise ValueError("thresholds are shares of the budget separated by commas, e.g. 0.8,1.0")

    @field_validator("guardrails")
    @classmethod
    def _guardrails_spec(cls, value: str) -> str:
        from llm_gateway.errors import InvalidRequestError
        from llm_gateway.guardrails.policy import parse

        try:
            parse(value, param="GATEWAY_GUARDRAILS")
        except InvalidRequestError as err:
            raise ValueError(err.message) from None
        return value

    @field_validator(
        "openai_base_url", "anthropic_base_url", "gemini_base_url", "openai_compatible_base_url", "bedrock_endpoint_url"
    )
    @classmethod
    def _no_trailing_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @field_validator("deployments", mode="before")
    @classmethod
    def _deployments(cls, value: object) -> tuple[DeploymentConfig, ...]:
        return parse_deployments(value)

    @field_validator("deployment_keys", mode="before")
    @classmethod
    def _deployment_keys(cls, value: object) -> dict[str, str]:
        return parse_key_map(value)

    @property
    def api_keys(self) -> dict[str, str]:
        """Provider -> key set directly in the environment (local runs)."""
        return {p: key for p in PROVIDERS if (key := getattr(self, f"{p}_api_key"))}

    @property
    def key_params(self) -> dict[str, str]:
        """Provider -> SSM parameter name holding its key."""
        return {p: name for p in PROVIDERS if (name := getattr(self, f"{p}_api_key_param"))}

    def base_url(self, provider: str) -> str | None:
        return {
            "openai": self.openai_base_url,
            "anthropic": self.anthropic_base_url,
            "gemini": self.gemini_base_url,
            "openai_compatible": self.openai_compatible_base_url,
            "bedrock": self.bedrock_base_url,
        }.get(provider)

    @property
    def bedrock_base_url(self) -> str | None:
        """Bedrock Runtime's endpoint in the configured region; None when Bedrock is off or no region is known."""
        if not self.bedrock_enabled or not self.bedrock_region:
            return None
        return self.bedrock_endpoint_url or f"https://bedrock-runtime.{self.bedrock_region}.amazonaws.com"
