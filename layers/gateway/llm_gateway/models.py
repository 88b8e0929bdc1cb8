"""Request and response models shared by every function and provider adapter."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from llm_gateway.quotas.model import RateLimitSnapshot
from llm_gateway.tool_models import (
    Tool,
    ToolCall,
    ToolChoice,
    check_tool_conversation,
    check_tool_fields,
    has_tool_turns,
)

Role = Literal["system", "user", "assistant", "tool"]
Tier = Literal["fast", "balanced", "best"]
FinishReason = Literal["stop", "length", "content_filter", "tool_calls", "error"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CacheBreakpoint(_Strict):
    """Anthropic's ``cache_control``: the prompt up to and including this part may be cached by the
    provider. Sent to Anthropic only; the other adapters read a part's text and ignore it."""

    type: Literal["ephemeral"] = "ephemeral"
    ttl: Literal["5m", "1h"] | None = None


class TextPart(_Strict):
    type: Literal["text"] = "text"
    text: str
    cache_control: CacheBreakpoint | None = None


class ImagePart(_Strict):
    """An image given by URL or data URI (``data:image/png;base64,...``)."""

    type: Literal["image_url"] = "image_url"
    url: str
    detail: Literal["auto", "low", "high"] | None = None


ContentPart = TextPart | ImagePart


class Message(_Strict):
    """One turn. An assistant turn may carry ``tool_calls`` (its content then may be empty or None); a
    ``tool`` turn carries the result of one call, named by ``tool_call_id``."""

    role: Role
    tool_calls: list[ToolCall] | None = Field(default=None, max_length=128)
    tool_call_id: str | None = Field(default=None, min_length=1, max_length=256)
    # After the tool fields: whether it may be missing depends on them. None only with tool_calls.
    content: str | list[ContentPart] | None = Field(default=None, validate_default=True)

    @field_validator("content")
    @classmethod
    def _content_unless_calling_tools(cls, content: Any, info: ValidationInfo) -> Any:
        if content is None and not (info.data.get("role") == "assistant" and info.data.get("tool_calls")):
            raise ValueError("Field required (it may be null only on an assistant message with tool_calls)")
        return content

    @model_validator(mode="after")
    def _tool_fields_fit_the_role(self) -> Message:
        check_tool_fields(self)
        return self

    def text(self) -> str:
        """The message's text, images left out."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text for p in self.content if isinstance(p, TextPart))

    def has_image(self) -> bool:
        return isinstance(self.content, list) and any(isinstance(p, ImagePart) for p in self.content)


class JsonSchemaFormat(_Strict):
    """Ask for a JSON answer valid against ``json_schema`` (provider-native mode when available)."""

    type: Literal["json_schema"] = "json_schema"
    name: str = Field(default="result", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    json_schema: dict[str, Any] = Field(alias="schema")
    strict: bool = True

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class JsonObjectFormat(_Strict):
    type: Literal["json_object"] = "json_object"


ResponseFormat = JsonSchemaFormat | JsonObjectFormat


MAX_CHOICES = 8  # n: Gemini's candidateCount limit, and the most parallel calls one request may fan out to
MAX_TOP_LOGPROBS = 20


class CacheControl(_Strict):
    """Per-request cache controls (honoured by the cache, when one is configured)."""

    no_cache: bool = False  # skip the read
    no_store: bool = False  # skip the write
    ttl_seconds: int | None = Field(default=None, ge=1, le=30 * 24 * 3600)
    namespace: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    force: bool = False  # cache even a non-deterministic request (temperature > 0)


class CompletionRequest(_Strict):
    """The gateway's own request shape (``POST /v1/completions``)."""

    messages: list[Message] = Field(min_length=1)
    model: str | None = Field(default=None, min_length=1, max_length=128)
    tier: Tier | None = None
    fallback: list[str] | None = Field(default=None, max_length=8)
    max_tokens: int | None = Field(default=None, ge=1, le=200_000)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: list[str] | None = Field(default=None, max_length=4)
    seed: int | None = None
    response_format: ResponseFormat | None = Field(default=None, discriminator="type")
    # Choices and sampling controls only some providers have: routing/params.py says which.
    n: int = Field(default=1, ge=1, le=MAX_CHOICES)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[str, int] | None = Field(default=None, max_length=300)
    top_k: int | None = Field(default=None, ge=1, le=1000)  # Anthropic and Gemini only (routing/params.py)
    user: str | None = Field(default=None, max_length=256)
    capabilities: list[str] = Field(default_factory=list, max_length=8)
    metadata: dict[str, str] = Field(default_factory=dict, max_length=16)
    cache: CacheControl | None = None
    prompt_version: str | None = Field(default=None, max_length=64)
    # Tool calling (see tool_models.py): the functions the model may call, and how it must choose.
    tools: list[Tool] | None = Field(default=None, min_length=1, max_length=128)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None

    @model_validator(mode="after")
    def _tools_consistent(self) -> CompletionRequest:
        check_tool_conversation(self.messages, self.tools, self.tool_choice)
        return self

    @model_validator(mode="after")
    def _model_or_tier(self) -> CompletionRequest:
        if self.model is not None and self.tier is not None:
            raise ValueError("give either 'model' or 'tier', not both")
        return self

    @model_validator(mode="after")
    def _top_logprobs_needs_logprobs(self) -> CompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self

    @field_validator("logit_bias")
    @classmethod
    def _bias_range(cls, bias: dict[str, int] | None) -> dict[str, int] | None:
        if bias and any(not -100 <= v <= 100 for v in bias.values()):
            raise ValueError("logit_bias values must be between -100 and 100")
        return bias

    @field_validator("messages")
    @classmethod
    def _not_all_empty(cls, messages: list[Message]) -> list[Message]:
        if not any(m.text().strip() or m.has_image() or m.tool_calls for m in messages):
            raise ValueError("messages must contain some text")
        return messages

    def required_capabilities(self) -> set[str]:
        needed = set(self.capabilities)
        if any(m.has_image() for m in self.messages):
            needed.add("vision")
        if isinstance(self.response_format, JsonSchemaFormat):
            needed.add("json")  # any model can do JSON-in-text; native schema is preferred, not required
        if self.tools or has_tool_turns(self.messages):
            needed.add("tools")
        return needed

    def is_deterministic(self) -> bool:
        return self.temperature == 0.0


class Usage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cached_input_tokens=self.cached_input_tokens + other.cached_input_tokens,
        )


class ProviderRequest(BaseModel):
    """What an adapter receives: one concrete model, parameters already resolved."""

    model: str  # the provider's own model id
    messages: list[Message]
    max_tokens: int
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    seed: int | None = None
    response_format: ResponseFormat | None = None
    native_structured: bool = False  # use the provider's structured-output mode for response_format
    n: int = 1  # > 1 only for adapters with native choices (Provider.native_n); others get parallel calls
    logprobs: bool = False
    top_logprobs: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, int] | None = None
    top_k: int | None = None
    user: str | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None


class Choice(BaseModel):
    """One more answer to the same request (``n`` > 1); the first is the response's own content."""

    content: str
    finish_reason: FinishReason
    logprobs: dict[str, Any] | None = None  # OpenAI's per-choice shape: {"content": [...], "refusal": None}
    tool_calls: list[ToolCall] | None = None


class ProviderResponse(BaseModel):
    """What an adapter returns: provider-neutral."""

    content: str
    finish_reason: FinishReason
    usage: Usage
    tool_calls: list[ToolCall] | None = None
    provider_request_id: str | None = None
    raw_model: str | None = None
    logprobs: dict[str, Any] | None = None  # the first choice's, when asked for
    alternatives: list[Choice] = Field(default_factory=list)  # choices 2..n
    # What the answer's rate-limit headers said of the deployment's quota (quotas/model.py); None: nothing.
    rate_limits: RateLimitSnapshot | None = Field(default=None, exclude=True)


# truncated: a stream the provider broke after its first event; cancelled: a stream the caller left;
# blocked: a guardrail refused the request's input, no provider was called (guardrails/pipeline.py).
Outcome = Literal["success", "error", "skipped", "truncated", "cancelled", "blocked"]


class Attempt(BaseModel):
    """One provider call (or a decision not to call), as reported to the caller and the ledger."""

    provider: str
    model: str
    outcome: Outcome
    deployment: str | None = None  # which of the model's deployments (quotas/); None: not known
    error_class: str | None = None
    error_code: str | None = None
    status_code: int | None = None
    duration_ms: float = 0.0
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float = 0.0


class CompletionResult(BaseModel):
    id: str = Field(default_factory=lambda: f"gw-{uuid.uuid4().hex}")
    created: int = Field(default_factory=lambda: int(time.time()))
    content: str
    tool_calls: list[ToolCall] | None = None
    provider: str
    model: str
    finish_reason: FinishReason
    usage: Usage
    cost_usd: float
    latency_ms: float
    attempts: list[Attempt]
    cached: bool = False
    metadata: dict[str, str] = Field(default_factory=dict)
    logprobs: dict[str, Any] | None = None  # the first choice's, when asked for
    alternatives: list[Choice] = Field(default_factory=list)  # choices 2..n, when n > 1
