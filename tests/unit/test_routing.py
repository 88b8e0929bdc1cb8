import pytest

from llm_gateway.catalog import Catalog, ModelSpec, default_catalog
from llm_gateway.errors import InvalidRequestError, NoEligibleModelError, UnknownModelError
from llm_gateway.models import CompletionRequest, Usage
from llm_gateway.routing.router import Router, provider_diverse

ALL = {"openai", "anthropic", "gemini"}


def spec(id, provider, price_in, price_out, window=100_000, tiers=("fast",), caps=("json_schema",)):
    return ModelSpec(
        id=id,
        provider=provider,
        input_per_mtok=price_in,
        output_per_mtok=price_out,
        cached_input_per_mtok=price_in / 2,
        context_window=window,
        max_output_tokens=4096,
        capabilities=frozenset(caps),
        tiers=frozenset(tiers),
    )


CATALOG = Catalog(
    version="t",
    models=[
        spec("cheap-a", "a", 0.1, 0.4, window=8_000),
        spec("cheap-a2", "a", 0.2, 0.8),
        spec("mid-b", "b", 0.5, 1.0, caps=("vision", "json_schema")),
        spec("big-c", "c", 1.0, 4.0, window=1_000_000, tiers=("best",)),
        spec("hidden", "a", 0.0, 0.0, tiers=()),
    ],
)


def req(**kw):
    kw.setdefault("messages", [{"role": "user", "content": "hello"}])
    return CompletionRequest.model_validate(kw)


def test_tier_picks_cheapest_then_other_providers():
    plan = Router(CATALOG, {"a", "b", "c"}).plan(req(tier="fast"))
    assert [c.spec.id for c in plan.candidates] == ["cheap-a", "mid-b", "cheap-a2"]


def test_unconfigured_providers_are_skipped():
    plan = Router(CATALOG, {"b"}).plan(req(tier="fast"))
    assert [c.spec.id for c in plan.candidates] == ["mid-b"]


def test_explicit_model_then_explicit_fallbacks():
    plan = Router(CATALOG, {"a", "b", "c"}).plan(req(model="cheap-a2", fallback=["big-c"]))
    assert [c.spec.id for c in plan.candidates] == ["cheap-a2", "big-c"]


def test_explicit_model_auto_fallback_prefers_other_providers():
    plan = Router(CATALOG, {"a", "b", "c"}).plan(req(model="cheap-a2"))
    assert [c.spec.id for c in plan.candidates] == ["cheap-a2", "mid-b", "cheap-a"]


def test_empty_fallback_list_disables_fallback():
    plan = Router(CATALOG, {"a", "b", "c"}).plan(req(model="cheap-a2", fallback=[]))
    assert [c.spec.id for c in plan.candidates] == ["cheap-a2"]


def test_unknown_model_is_a_404():
    with pytest.raises(UnknownModelError) as info:
        Router(CATALOG, ALL).plan(req(model="gpt-9"))
    assert info.value.http_status == 404


def test_capabilities_filter():
    image = [
        {"role": "user", "content": [{"type": "image_url", "url": "https://x/y.png"}, {"type": "text", "text": "?"}]}
    ]
    plan = Router(CATALOG, {"a", "b", "c"}).plan(req(tier="fast", messages=image))
    assert [c.spec.id for c in plan.candidates] == ["mid-b"]
    with pytest.raises(NoEligibleModelError):
        Router(CATALOG, {"a"}).plan(req(tier="fast", messages=image))


def test_long_prompt_moves_to_a_larger_window():
    long_text = "word " * 40_000  # ~50k tokens: too big for cheap-a (8k)
    plan = Router(CATALOG, {"a", "b", "c"}).plan(
        req(model="cheap-a", fallback=[], messages=[{"role": "user", "content": long_text}])
    )
    ids = [c.spec.id for c in plan.candidates]
    assert "cheap-a" not in ids
    assert ids[0] in {"cheap-a2", "mid-b"}


def test_prompt_larger_than_every_window_fails_clearly():
    huge = "x" * 4_400_000  # 1.1M tokens
    with pytest.raises(NoEligibleModelError, match="fits no"):
        Router(CATALOG, {"a", "b", "c"}).plan(req(tier="fast", messages=[{"role": "user", "content": huge}]))


def test_tier_escalates_when_nothing_in_tier_fits():
    text = "x" * 600_000  # 150k tokens: only big-c (best) fits
    plan = Router(CATALOG, {"a", "b", "c"}).plan(req(tier="fast", messages=[{"role": "user", "content": text}]))
    assert [c.spec.id for c in plan.candidates] == ["big-c"]


def test_max_tokens_clamped_to_model_and_window():
    plan = Router(CATALOG, {"a"}, default_max_tokens=100_000).plan(req(model="cheap-a", fallback=[]))
    assert plan.primary.max_tokens == 4096


def test_no_configured_provider_is_a_clear_error():
    with pytest.raises(InvalidRequestError, match="no provider is configured"):
        Router(CATALOG, set()).plan(req(tier="fast"))


def test_unknown_tier():
    with pytest.raises(InvalidRequestError):
        Router(CATALOG, ALL, default_tier="turbo").plan(req())


def test_provider_diverse_ordering():
    ranked = sorted(CATALOG.models[:3], key=lambda m: m.input_per_mtok)
    assert [m.id for m in provider_diverse(ranked, after="a")] == ["mid-b", "cheap-a", "cheap-a2"]


def test_costs_from_catalog_prices():
    model = default_catalog().get("gpt-4o-mini")
    cost = model.cost(Usage(input_tokens=1_000_000, output_tokens=1_000_000, cached_input_tokens=500_000))
    assert cost == pytest.approx(0.5 * 0.15 + 0.5 * 0.075 + 0.60)


def test_bundled_catalog_tiers_are_served_by_every_provider():
    catalog = default_catalog()
    for tier in ("fast", "balanced", "best"):
        # Claude on Bedrock serves each tier too, as a fallback for Anthropic direct (same price).
        assert {m.provider for m in catalog.in_tier(tier)} == ALL | {"bedrock"}, tier


def test_bedrock_claude_ranks_after_its_direct_twin_and_nova_stays_opt_in():
    """Same price: direct Anthropic first, Claude on Bedrock after it; Nova and Llama (cheaper) in no
    tier, so a deployment that merely has a region never moves default traffic to Bedrock."""
    catalog = default_catalog()
    plan = Router(catalog, ALL | {"bedrock"}).plan(req(tier="fast"))
    ids = [c.spec.id for c in plan.candidates]
    assert ids.index("claude-3-5-haiku-latest") < ids.index("anthropic.claude-3-5-haiku-20241022-v1:0")
    assert plan.primary.spec.provider != "bedrock"
    for model_id in ("amazon.nova-micro-v1:0", "amazon.nova-lite-v1:0", "meta.llama3-3-70b-instruct-v1:0"):
        assert not catalog.get(model_id).tiers


def test_automatic_fallbacks_keep_to_the_callers_key_policy():
    from llm_gateway.keys.policy import KeyPolicy

    def plan(*allowed):
        policy = KeyPolicy(tenant="t", name="k", created_at=0, allowed=allowed)
        return [
            c.spec.id
            for c in Router(CATALOG, {"a", "b", "c"}).plan(req(model="cheap-a2"), policy.allows_model).candidates
        ]

    assert plan() == ["cheap-a2", "mid-b", "cheap-a"]  # no list: everything, as without a key
    assert plan("cheap-a2") == ["cheap-a2"]  # the key's one model: no automatic fallback elsewhere
    assert plan("cheap-*") == ["cheap-a2", "cheap-a"]
    assert plan("cheap-a2", "tier:fast") == ["cheap-a2", "mid-b", "cheap-a"]  # the tier allows its models
    assert plan("cheap-a2", "tier:best") == ["cheap-a2"]
