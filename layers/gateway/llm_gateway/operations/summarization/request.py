"""The summarization request and result: what callers send and get back, and its validation."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llm_gateway.documents.chunking import MIN_CHUNK_TOKENS
from llm_gateway.guardrails.policy import GuardrailsField
from llm_gateway.models import Attempt, CacheControl, Tier, Usage
from llm_gateway.operations.extraction import DocumentRef

Strategy = Literal["stuff", "map_reduce", "refine"]
Style = Literal["paragraph", "bullets"]

MAX_TEXT_CHARS = 2_000_000  # inline text; larger documents go through S3


class SummaryLength(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sentences: int | None = Field(default=None, ge=1, le=100)
    words: int | None = Field(default=None, ge=10, le=5_000)

    @model_validator(mode="after")
    def _one_unit(self) -> SummaryLength:
        if (self.sentences is None) == (self.words is None):
            raise ValueError("give exactly one of 'sentences' or 'words'")
        return self

    def describe(self) -> str:
        if self.sentences is not None:
            return f"at most {self.sentences} sentence{'s' if self.sentences > 1 else ''}"
        return f"at most {self.words} words"

    def answer_tokens(self) -> int:
        """Room for the final answer (generous: a truncated summary is useless and never cached)."""
        if self.sentences is not None:
            return 64 + 48 * self.sentences
        assert self.words is not None
        return 64 + 2 * self.words


class SummaryRequest(BaseModel):
    """``POST /v1/summaries`` and the ``summarization`` operation's payload."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(default=None, min_length=1, max_length=MAX_TEXT_CHARS)
    s3: DocumentRef | None = None  # the extraction operation's reference, and its access rules
    content_type: Literal["text", "markdown", "html"] = "text"  # for ``text``; S3 objects are sniffed
    length: SummaryLength = Field(default_factory=lambda: SummaryLength(sentences=5))
    focus: str | None = Field(default=None, min_length=1, max_length=2_000)
    style: Style = "paragraph"
    strategy: Literal["auto", "stuff", "map_reduce", "refine"] = "auto"
    model: str | None = Field(default=None, min_length=1, max_length=128)
    tier: Tier | None = None
    fallback: list[str] | None = Field(default=None, max_length=8)
    # map_reduce/refine chunk size; auto's choice of stuff depends on the model's window, not on this
    chunk_tokens: int | None = Field(default=None, ge=MIN_CHUNK_TOKENS, le=200_000)
    concurrency: int | None = Field(default=None, ge=1, le=64)
    allow_degraded: bool = False
    cache: CacheControl | None = None
    metadata: dict[str, str] = Field(default_factory=dict, max_length=16)
    guardrails: GuardrailsField = None  # read by the edge (http/guardrails.py)

    @model_validator(mode="after")
    def _consistent(self) -> SummaryRequest:
        if (self.text is None) == (self.s3 is None):
            raise ValueError("give exactly one of 'text' or 's3' ({\"key\": ...})")
        if self.model is not None and self.tier is not None:
            raise ValueError("give either 'model' or 'tier', not both")
        return self


class SummaryResult(BaseModel):
    id: str = Field(default_factory=lambda: f"sum-{uuid.uuid4().hex}")
    object: str = "summary"
    summary: str
    strategy: Literal["stuff", "map_reduce", "refine", "extractive"]
    degraded: bool = False
    degraded_reason: str | None = None  # the error code that forced the extractive fallback
    chunks: int
    calls: int  # model calls made (each may be several provider attempts)
    cached_calls: int = 0
    collapse_rounds: int = 0
    provider: str | None
    model: str | None
    models: list[str] = Field(default_factory=list)  # every provider/model that answered a call
    document_tokens: int  # estimated
    usage: Usage
    cost_usd: float
    attempts: list[Attempt]
    latency_ms: float
    prompt_version: str
    source: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, str] = Field(default_factory=dict)
