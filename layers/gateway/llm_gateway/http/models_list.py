"""``GET /v1/models`` and ``GET /v1/models/{id}`` in OpenAI's shape, built from the catalog.

The list holds every catalog model, every declared alias and every tier (``tier:fast``...). OpenAI's
fields (``id``, ``object``, ``created``, ``owned_by``) come first; the catalog's own facts (context
window, output limit, prices, capabilities, tiers, aliases) are extra fields, which the official
client keeps on the object (``model.model_extra``). Retrieving accepts anything the router accepts:
an id, an alias, ``provider/id``, or a tier.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from llm_gateway.catalog import Catalog, ModelSpec
from llm_gateway.errors import UnknownModelError

LIST_PATH = "/v1/models"
CHAT_PATH = "/v1/chat/completions"
EMBEDDINGS_PATH = "/v1/embeddings"
TIER_PREFIX = "tier:"
GATEWAY_OWNER = "llm-gateway"


def openai_shaped(path: str) -> bool:
    """Routes the OpenAI clients call answer errors in OpenAI's shape (``type``, ``param``, ``code``)."""
    return (
        path.endswith(CHAT_PATH)
        or path.endswith(EMBEDDINGS_PATH)
        or path.endswith(LIST_PATH)
        or f"{LIST_PATH}/" in path
    )


def list_models(catalog: Catalog) -> dict[str, Any]:
    created = _created(catalog)
    data: list[dict[str, Any]] = []
    for spec in catalog.models:
        data.append(_model_entry(spec, spec.id, created))
        data.extend(_model_entry(spec, alias, created) for alias in spec.aliases)
    data.extend(_tier_entry(catalog, tier, created) for tier in _tiers(catalog))
    return {"object": "list", "data": data}


def retrieve_model(catalog: Catalog, name: str) -> dict[str, Any]:
    """One entry; 404 ``model_not_found`` (naming ``model``) for a name nothing resolves to."""
    created = _created(catalog)
    if name.startswith(TIER_PREFIX) and name.removeprefix(TIER_PREFIX) in _tiers(catalog):
        return _tier_entry(catalog, name.removeprefix(TIER_PREFIX), created)
    spec = catalog.resolve(name)
    if spec is None:
        raise UnknownModelError(
            f"The model '{name[:160]}' does not exist in this gateway's catalog", details={"param": "model"}
        )
    return _model_entry(spec, name, created)


def _model_entry(spec: ModelSpec, name: str, created: int) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": name,
        "object": "model",
        "created": created,
        "owned_by": spec.provider,
        "provider": spec.provider,
        "context_window": spec.context_window,
        "max_output_tokens": spec.max_output_tokens,
        "pricing": {
            "currency": "USD",
            "input_per_mtok": spec.input_per_mtok,
            "output_per_mtok": spec.output_per_mtok,
            "cached_input_per_mtok": spec.cached_input_per_mtok,
        },
        "capabilities": sorted(spec.capabilities),
        "tiers": sorted(spec.tiers),
        "aliases": list(spec.aliases),
        "unsupported_params": sorted(spec.unsupported_params),
        "kind": spec.kind,  # "chat" (completion routes) or "embeddings" (/v1/embeddings)
    }
    if spec.embedding is not None:
        entry["embedding"] = spec.embedding.model_dump()
    if name != spec.id:
        entry["alias_of"] = spec.id  # the catalog model that serves (and names itself in answers)
    return entry


def _tier_entry(catalog: Catalog, tier: str, created: int) -> dict[str, Any]:
    members = sorted(catalog.in_tier(tier), key=lambda m: (m.input_per_mtok, m.output_per_mtok))
    return {
        "id": f"{TIER_PREFIX}{tier}",
        "object": "model",
        "created": created,
        "owned_by": GATEWAY_OWNER,
        "tier": tier,
        "models": [m.id for m in members],
        "context_window": max((m.context_window for m in members), default=0),
    }


def _tiers(catalog: Catalog) -> list[str]:
    order = ("fast", "balanced", "best")
    present = {t for m in catalog.models for t in m.tiers}
    return [t for t in order if t in present] + sorted(present - set(order))


def _created(catalog: Catalog) -> int:
    """OpenAI's ``created`` is a Unix time; the catalog's version is its date (00:00 UTC), else 0."""
    try:
        day = dt.date.fromisoformat(catalog.version)
    except ValueError:
        return 0
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())
