"""Choose which catalog models serve a request, in order: the first choice, then the fallbacks.

- An explicit ``model`` goes first; then the caller's ``fallback`` list, or (when none was given and
  auto fallback is on) the cheapest peers from the same tiers on other providers.
- A ``tier`` picks the cheapest eligible model of that tier, then the cheapest of each other provider,
  then the rest, so that the second choice never shares the first one's outage.
- Eligible means: the provider is configured, the model has the capabilities asked for, and the prompt
  plus the answer fit its context window. A prompt too long for the chosen model moves to a larger-window
  model (escalating to higher tiers when the tier has none).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

from llm_gateway.catalog import Catalog, ModelSpec
from llm_gateway.documents.tokens import estimate_message_tokens
from llm_gateway.errors import InvalidRequestError, NoEligibleModelError
from llm_gateway.models import CompletionRequest
from llm_gateway.routing.params import params_in_use, unsupported

TIER_ORDER = ("fast", "balanced", "best")


@dataclass(frozen=True)
class Candidate:
    spec: ModelSpec
    max_tokens: int


@dataclass(frozen=True)
class RoutePlan:
    candidates: list[Candidate]
    input_tokens: int  # estimated

    @property
    def primary(self) -> Candidate:
        return self.candidates[0]


class Router:
    def __init__(
        self,
        catalog: Catalog,
        available_providers: Collection[str],
        *,
        default_tier: str = "fast",
        default_max_tokens: int = 1024,
        auto_fallback: bool = True,
    ) -> None:
        self.catalog = catalog
        self.available = set(available_providers)
        self.default_tier = default_tier
        self.default_max_tokens = default_max_tokens
        self.auto_fallback = auto_fallback

    def plan(self, request: CompletionRequest, allows: Callable[[ModelSpec], bool] | None = None) -> RoutePlan:
        """``allows``: the caller's key policy; models the router adds by itself (automatic fallbacks,
        larger windows) must pass it. What the caller named was checked against the key already."""
        input_tokens = estimate_message_tokens(request.messages)
        needs = request.required_capabilities()
        if request.model is not None:
            ordered = self._explicit(request, allows)
        else:
            ordered = self._tier_chain(request.tier or self.default_tier)
        configured = [m for m in ordered if m.provider in self.available]
        if not configured:
            providers = sorted({m.provider for m in ordered})
            raise InvalidRequestError(
                f"no provider is configured for {', '.join(providers) or 'this request'}",
                details={"configured": sorted(self.available)},
            )
        _check_named_model_calls_tools(request, ordered, needs)
        capable = [m for m in configured if m.supports(needs)]
        if not capable:
            raise NoEligibleModelError(
                f"no configured model offers {sorted(needs - {'json'})}", details={"needs": sorted(needs)}
            )
        params = params_in_use(request)
        capable = _honouring(params, capable, named=ordered[0] if request.model is not None else None)
        fitting = [m for m in capable if self._fits(m, input_tokens, request.max_tokens)]
        if len(fitting) < len(capable) or not fitting:
            larger = self._larger_windows(fitting, capable, needs, input_tokens, request.max_tokens)
            larger = [m for m in larger if allows is None or allows(m)]
            fitting += [m for m in larger if not unsupported(params, m)]
        if not fitting:
            raise NoEligibleModelError(
                f"the prompt (about {input_tokens} tokens) fits no configured model's context window",
                details={"input_tokens": input_tokens},
            )
        return RoutePlan(
            candidates=[Candidate(m, self._max_tokens(m, input_tokens, request.max_tokens)) for m in fitting],
            input_tokens=input_tokens,
        )

    # --- ordering -------------------------------------------------------------------------------

    def _explicit(self, request: CompletionRequest, allows: Callable[[ModelSpec], bool] | None) -> list[ModelSpec]:
        assert request.model is not None
        first = self.catalog.get(request.model)
        if request.fallback is not None:
            rest = [self.catalog.get(model_id) for model_id in request.fallback]
        elif self.auto_fallback:
            peers = [
                m
                for m in self.catalog.models
                if m.tiers & first.tiers and m.id != first.id and m.kind == "chat" and (allows is None or allows(m))
            ]
            rest = provider_diverse(sorted(peers, key=_unit_price), after=first.provider)
        else:
            rest = []
        for spec in (first, *rest):
            _check_chat_model(spec, "model" if spec is first else "fallback")
        return _unique([first, *rest])

    def _tier_chain(self, tier: str) -> list[ModelSpec]:
        if tier not in TIER_ORDER:
            raise InvalidRequestError(f"unknown tier '{tier}'", details={"tiers": list(TIER_ORDER)})
        ranked = sorted(
            (m for m in self.catalog.in_tier(tier) if m.provider in self.available and m.kind == "chat"),
            key=_unit_price,
        )
        return provider_diverse(ranked)

    def _larger_windows(
        self,
        already: list[ModelSpec],
        capable: list[ModelSpec],
        needs: set[str],
        input_tokens: int,
        max_tokens: int | None,
    ) -> list[ModelSpec]:
        """Cheapest models, from any tier, whose window fits: the answer to 'prompt too long'."""
        reference = min((m.context_window for m in capable), default=0)
        pool = [
            m
            for m in self.catalog.models
            if m.provider in self.available
            and m.supports(needs)
            and m not in already
            and m.context_window > reference
            and self._fits(m, input_tokens, max_tokens)
            and m.tiers  # untiered models are opt-in only
            and m.kind == "chat"
        ]
        return provider_diverse(sorted(pool, key=_unit_price))

    # --- sizing ---------------------------------------------------------------------------------

    def _fits(self, spec: ModelSpec, input_tokens: int, max_tokens: int | None) -> bool:
        wanted = max_tokens if max_tokens is not None else min(self.default_max_tokens, spec.max_output_tokens)
        return input_tokens + min(wanted, spec.max_output_tokens) <= spec.context_window

    def _max_tokens(self, spec: ModelSpec, input_tokens: int, asked: int | None) -> int:
        wanted = asked if asked is not None else self.default_max_tokens
        room = spec.context_window - input_tokens
        return max(1, min(wanted, spec.max_output_tokens, room))


def _honouring(params: list[str], models: list[ModelSpec], *, named: ModelSpec | None) -> list[ModelSpec]:
    """The models whose provider honours every parameter in use; a model the caller named that cannot
    is a 400 naming the parameter (serving it without would silently drop the parameter)."""
    if not params:
        return models
    if named is not None and (missing := unsupported(params, named)):
        raise InvalidRequestError(
            f"'{missing[0]}' is not supported by {named.id} ({named.provider}); leave it out or choose another model",
            details={"param": missing[0], "model": named.id},
        )
    kept = [m for m in models if not unsupported(params, m)]
    if not kept:
        missing = unsupported(params, models[0])
        raise NoEligibleModelError(
            f"no candidate model supports '{missing[0]}'", details={"param": missing[0], "needs": params}
        )
    return kept


def _check_named_model_calls_tools(request: CompletionRequest, ordered: list[ModelSpec], needs: set[str]) -> None:
    """A model named for a request with tools must be able to call them: falling back silently to
    another model would answer from a model the caller did not choose, for a reason it cannot see."""
    if request.model is None or "tools" not in needs or "tools" in ordered[0].capabilities:
        return
    raise InvalidRequestError(
        f"model '{ordered[0].id}' cannot call tools (its catalog entry lacks the 'tools' capability); "
        "choose a model or tier that can, or send no tools",
        details={"param": "model", "needs": ["tools"]},
    )


def _check_chat_model(spec: ModelSpec, param: str) -> None:
    """An embedding model cannot answer a completion: a 400 naming the parameter, not a provider error."""
    if spec.kind != "chat":
        raise InvalidRequestError(
            f"'{spec.id}' is an {spec.kind} model: call it with POST /v1/embeddings, or choose a chat model",
            details={"param": param, "model": spec.id},
        )


def provider_diverse(ranked: list[ModelSpec], *, after: str | None = None) -> list[ModelSpec]:
    """Cheapest of each provider first (in price order), then the rest in price order."""
    seen: set[str] = {after} if after else set()
    heads: list[ModelSpec] = []
    for spec in ranked:
        if spec.provider not in seen:
            heads.append(spec)
            seen.add(spec.provider)
    return heads + [m for m in ranked if m not in heads]


def _unit_price(spec: ModelSpec) -> float:
    # Typical chat traffic reads about three tokens for each one it writes.
    return 3 * spec.input_per_mtok + spec.output_per_mtok


def _unique(specs: list[ModelSpec]) -> list[ModelSpec]:
    out: list[ModelSpec] = []
    for spec in specs:
        if spec not in out:
            out.append(spec)
    return out
