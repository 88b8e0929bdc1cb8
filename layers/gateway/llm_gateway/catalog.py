"""The model catalog: prices, context windows and capabilities, read once from ``shared/catalog.json``."""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from llm_gateway.errors import UnknownModelError
from llm_gateway.models import Usage
from llm_gateway.resources import shared_dir


class EmbeddingLimits(BaseModel):
    """What an embedding model produces and takes per call (the ``embedding`` of a catalog entry)."""

    dimensions: int = Field(gt=0)  # the vector length when none is asked for
    # The lengths ``dimensions`` may ask for: explicit choices, or any in [min_dimensions, dimensions].
    # Neither: only the default (the model takes no dimension parameter).
    allowed_dimensions: tuple[int, ...] = ()
    min_dimensions: int | None = Field(default=None, gt=0)
    max_inputs_per_call: int = Field(gt=0)
    max_tokens_per_input: int = Field(gt=0)
    max_tokens_per_call: int | None = Field(default=None, gt=0)  # all inputs of one call (OpenAI: 300k)

    def accepts(self, dimensions: int) -> bool:
        if dimensions == self.dimensions:
            return True
        if self.allowed_dimensions:
            return dimensions in self.allowed_dimensions
        return self.min_dimensions is not None and self.min_dimensions <= dimensions <= self.dimensions

    def choices(self) -> str:
        if self.allowed_dimensions:
            return ", ".join(str(d) for d in sorted({*self.allowed_dimensions, self.dimensions}))
        if self.min_dimensions is not None:
            return f"{self.min_dimensions} to {self.dimensions}"
        return str(self.dimensions)


class ModelSpec(BaseModel):
    id: str
    provider: str
    provider_model: str = ""
    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)
    cached_input_per_mtok: float = Field(ge=0)
    context_window: int = Field(gt=0)
    max_output_tokens: int = Field(ge=0)  # 0 for an embedding model (it writes no tokens)
    capabilities: frozenset[str] = frozenset()
    tiers: frozenset[str] = frozenset()
    aliases: tuple[str, ...] = ()  # other names for this model (dated snapshots), resolved by Catalog.get
    # Request parameters this model refuses although its provider takes them (routing/params.py).
    unsupported_params: frozenset[str] = frozenset()
    # "embeddings": served by /v1/embeddings only (``embedding`` says how); never routed for a completion.
    kind: Literal["chat", "embeddings"] = "chat"
    embedding: EmbeddingLimits | None = None

    @model_validator(mode="after")
    def _kind_fits(self) -> ModelSpec:
        if (self.kind == "embeddings") != (self.embedding is not None):
            raise ValueError(f"{self.id}: an 'embeddings' model, and only one, has an 'embedding' entry")
        if self.kind == "chat" and self.max_output_tokens <= 0:
            raise ValueError(f"{self.id}: a chat model needs max_output_tokens > 0")
        return self

    @property
    def wire_model(self) -> str:
        """The id the provider's API expects."""
        return self.provider_model or self.id

    def supports(self, capabilities: set[str]) -> bool:
        # "json" is satisfiable by every model (JSON-in-text), so it never excludes one.
        return (capabilities - {"json"}) <= self.capabilities

    def cost(self, usage: Usage) -> float:
        uncached = max(usage.input_tokens - usage.cached_input_tokens, 0)
        dollars = (
            uncached * self.input_per_mtok
            + usage.cached_input_tokens * self.cached_input_per_mtok
            + usage.output_tokens * self.output_per_mtok
        ) / 1_000_000
        return round(dollars, 10)

    def worst_case_cost(self, input_tokens: int, max_output_tokens: int) -> float:
        return self.cost(Usage(input_tokens=input_tokens, output_tokens=max_output_tokens))


class Catalog(BaseModel):
    version: str
    models: list[ModelSpec]

    @property
    def fingerprint(self) -> str:
        """The hand-kept version plus a hash of the content: changes whenever a price, window,
        capability or wire model does, even if nobody bumped ``version`` (cache keys use it).
        Computed on each use (not cached: a model_copy would carry a stale value along)."""
        # default=sorted: capabilities and tiers are sets, sorted so every process gets the same hash.
        content = json.dumps(
            [m.model_dump() for m in self.models], sort_keys=True, separators=(",", ":"), default=sorted
        )
        return f"{self.version}+{hashlib.sha256(content.encode('utf-8')).hexdigest()[:16]}"

    def get(self, model_id: str) -> ModelSpec:
        """The model a name resolves to (see :meth:`resolve`); ``model_not_found`` when none does."""
        spec = self.resolve(model_id)
        if spec is None:
            raise UnknownModelError(
                f"model '{model_id}' is not in the catalog",
                details={"param": "model", "known": [m.id for m in self.models]},
            )
        return spec

    def find(self, model_id: str) -> ModelSpec | None:
        return next((m for m in self.models if m.id == model_id), None)

    def resolve(self, name: str) -> ModelSpec | None:
        """A catalog id, an alias the catalog declares, or either prefixed by its provider
        (``openai/gpt-4o-mini``, ``anthropic/claude-3-5-haiku-20241022``); None for anything else."""
        direct = self._by_name(name)
        if direct is not None:
            return direct
        provider, slash, rest = name.partition("/")
        if not slash:
            return None
        spec = self._by_name(rest)
        return spec if spec is not None and provider == spec.provider else None

    def _by_name(self, name: str) -> ModelSpec | None:
        return next((m for m in self.models if m.id == name or name in m.aliases), None)

    @property
    def chat_models(self) -> list[ModelSpec]:
        return [m for m in self.models if m.kind == "chat"]

    def in_tier(self, tier: str) -> list[ModelSpec]:
        return [m for m in self.models if tier in m.tiers]


def load_catalog(path: Path) -> Catalog:
    return Catalog.model_validate(json.loads(path.read_text(encoding="utf-8")))


@cache
def default_catalog() -> Catalog:
    """The bundled catalog, parsed once per process (not at import time)."""
    return load_catalog(shared_dir() / "catalog.json")
