"""The real adapters and the gateway against the provider simulator, over real sockets."""

import pytest

from llm_gateway.config import Settings
from llm_gateway.errors import AllProvidersFailedError, ProviderAuthError, ProviderBadRequestError
from llm_gateway.interfaces import RequestContext
from llm_gateway.models import CompletionRequest
from llm_gateway.routing.deadline import Deadline
from llm_gateway.routing.retry import RetryPolicy
from llm_gateway.runtime import run_sync
from llm_gateway.wiring import build_gateway

pytestmark = pytest.mark.integration


def gateway_for(sim, *, providers=("openai", "anthropic", "gemini"), timeout_s=5.0, attempts=2, keys=None):
    urls = sim.base_urls()
    settings = Settings(
        openai_base_url=urls["openai"],
        anthropic_base_url=urls["anthropic"],
        gemini_base_url=urls["gemini"],
        **{f"{p}_api_key": key for p, key in (keys or {p: "sim-key" for p in providers}).items()},
        request_timeout_s=timeout_s,
    )
    retry = RetryPolicy(max_attempts=attempts, base_delay_s=0.01, max_delay_s=0.05)
    return build_gateway(settings, retry=retry)


def complete(gateway, deadline_s=20.0, **kw):
    kw.setdefault("messages", [{"role": "user", "content": "Say hello to the gateway."}])
    ctx = RequestContext(tenant="t1", request_id="r1", deadline=Deadline(deadline_s))
    return run_sync(gateway.complete(CompletionRequest.model_validate(kw), ctx))


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-3-5-haiku-latest", "gemini-2.0-flash"])
def test_each_adapter_round_trips(simulator, model):
    result = complete(gateway_for(simulator), model=model, fallback=[], max_tokens=200)
    provider = result.provider
    assert result.content.startswith(f"[sim {provider}/")
    assert result.finish_reason == "stop"
    assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0
    assert result.cost_usd > 0
    [call] = simulator.calls()
    assert call["provider"] == provider and call["model"] == model


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-3-5-haiku-latest", "gemini-2.0-flash"])
def test_truncation_is_reported_as_length(simulator, model):
    result = complete(gateway_for(simulator), model=model, fallback=[], max_tokens=3)
    assert result.finish_reason == "length"
    assert result.usage.output_tokens <= 3


@pytest.mark.parametrize("fault", ["rate_limit", "overloaded", "server_error", "malformed", "drop"])
def test_fallback_to_next_provider_reports_both(simulator, fault):
    simulator.add_fault(fault, provider="openai", retry_after=0)
    result = complete(gateway_for(simulator, attempts=1), model="gpt-4o-mini", fallback=["claude-3-5-haiku-latest"])
    assert result.provider == "anthropic"
    assert [(a.provider, a.outcome) for a in result.attempts] == [("openai", "error"), ("anthropic", "success")]
    assert result.attempts[0].error_class is not None


def test_retry_then_success_on_same_model(simulator):
    simulator.add_fault("overloaded", provider="gemini", times=1)
    result = complete(gateway_for(simulator, attempts=3), model="gemini-2.0-flash", fallback=[])
    assert [a.outcome for a in result.attempts] == ["error", "success"]
    assert len(simulator.calls("gemini")) == 2


def test_retry_after_is_honoured_on_the_wire(simulator):
    simulator.add_fault("rate_limit", provider="anthropic", times=1, retry_after=1)
    result = complete(gateway_for(simulator, attempts=2), model="claude-3-5-haiku-latest", fallback=[])
    first, second = simulator.calls("anthropic")
    assert second["ts"] - first["ts"] >= 0.95
    assert result.attempts[0].error_code == "rate_limited"


@pytest.mark.parametrize(("fault", "error"), [("auth", ProviderAuthError), ("bad_request", ProviderBadRequestError)])
def test_no_retry_on_401_or_400(simulator, fault, error):
    simulator.add_fault(fault, provider="openai")
    gateway = gateway_for(simulator, providers=("openai",), attempts=5)
    with pytest.raises((error, AllProvidersFailedError)):
        complete(gateway, model="gpt-4o-mini", fallback=[])
    assert len(simulator.calls("openai")) == 1


def test_bad_request_does_not_fall_back(simulator):
    simulator.add_fault("bad_request", provider="openai")
    with pytest.raises(ProviderBadRequestError):
        complete(gateway_for(simulator), model="gpt-4o-mini", fallback=["claude-3-5-haiku-latest"])
    assert simulator.calls("anthropic") == []


def test_auth_failure_falls_back_to_another_provider(simulator):
    simulator.add_fault("auth", provider="openai")
    result = complete(gateway_for(simulator, attempts=3), model="gpt-4o-mini", fallback=["gemini-2.0-flash"])
    assert result.provider == "gemini"
    assert len(simulator.calls("openai")) == 1


def test_timeout_is_bounded_and_falls_back(simulator):
    simulator.add_fault("slow", provider="openai", delay_s=3)
    gateway = gateway_for(simulator, timeout_s=0.5, attempts=1)
    result = complete(gateway, model="gpt-4o-mini", fallback=["gemini-2.0-flash"])
    assert result.provider == "gemini"
    assert result.attempts[0].error_code == "provider_timeout"
    assert 400 <= result.attempts[0].duration_ms < 1500


def test_deadline_caps_the_whole_request(simulator):
    simulator.add_fault("slow", delay_s=3)
    gateway = gateway_for(simulator, timeout_s=10, attempts=3)
    with pytest.raises(AllProvidersFailedError) as info:
        complete(gateway, deadline_s=1.2, tier="fast")
    assert info.value.code == "provider_timeout"
    assert sum(a.duration_ms for a in info.value.attempts) < 2000


def test_all_providers_down_is_a_retryable_503(simulator):
    simulator.add_fault("overloaded")
    with pytest.raises(AllProvidersFailedError) as info:
        complete(gateway_for(simulator, attempts=1), tier="fast")
    assert info.value.http_status == 503 and info.value.retryable
    assert {a.provider for a in info.value.attempts} == {"openai", "anthropic", "gemini"}


def test_context_length_error_moves_to_a_larger_window(simulator):
    simulator.add_fault("context_length", provider="openai")
    result = complete(gateway_for(simulator), model="gpt-4o-mini", fallback=["gpt-4o", "gemini-2.0-flash"])
    assert result.model == "gemini-2.0-flash"
    assert [a.model for a in result.attempts] == ["gpt-4o-mini", "gemini-2.0-flash"]


def test_content_filter_is_not_retried_or_fallen_back(simulator):
    simulator.add_fault("content_filter", provider="gemini")
    with pytest.raises(Exception) as info:
        complete(gateway_for(simulator), model="gemini-2.0-flash")
    assert getattr(info.value, "code", "") == "content_filtered"
    assert len(simulator.calls()) == 1


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-3-5-haiku-latest", "gemini-2.0-flash"])
def test_native_structured_output_reaches_the_wire(simulator, model):
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}},
        "required": ["name"],
        "additionalProperties": False,
    }
    result = complete(
        gateway_for(simulator),
        model=model,
        fallback=[],
        temperature=0,
        response_format={"type": "json_schema", "name": "person", "schema": schema},
    )
    import json

    assert isinstance(json.loads(result.content)["name"], str)
    body = simulator.calls()[0]["body"]
    if result.provider == "openai":
        assert body["response_format"]["type"] == "json_schema"
        assert body["response_format"]["json_schema"]["schema"] == schema
    elif result.provider == "anthropic":
        assert body["tool_choice"] == {"type": "tool", "name": "person"}
        assert body["tools"][0]["input_schema"] == schema
    else:
        assert body["generationConfig"]["responseMimeType"] == "application/json"
        assert body["generationConfig"]["responseSchema"]["required"] == ["name"]


# --------------------------------------------------------------------------- structured output, strict providers

MODELS = ["gpt-4o-mini", "claude-3-5-haiku-latest", "gemini-2.0-flash", "gemini-2.0-flash-lite"]

# What callers typically write: optional properties, open objects, formats Gemini lacks, a union type,
# a const, an integer enum, a reference.
LOOSE = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "email": {"type": "string", "format": "email"},
        "born": {"type": "string", "format": "date"},
        "id": {"type": ["string", "integer"]},
        "kind": {"const": "person"},
        "stars": {"type": "integer", "enum": [1, 2, 3]},
        "home": {"$ref": "#/$defs/place"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name"],
    "$defs": {"place": {"type": "object", "properties": {"city": {"type": "string"}}}},
}


def _structured(simulator, model, schema, name="result"):
    from llm_gateway.structured.reask import complete_structured

    request = CompletionRequest.model_validate(
        {"messages": [{"role": "user", "content": "Extract."}], "model": model, "fallback": [], "max_tokens": 2000}
    )
    ctx = RequestContext(tenant="t1", request_id="r1", deadline=Deadline(20))
    return run_sync(complete_structured(gateway_for(simulator), request, ctx, schema=schema, name=name))


@pytest.mark.parametrize("schema_name", ["invoice", "contact", "entities"])
@pytest.mark.parametrize("model", MODELS)
def test_shipped_schemas_are_accepted_by_every_native_mode(simulator, model, schema_name):
    """The simulator refuses what each real provider refuses (Gemini formats, OpenAI strict rules)."""
    from llm_gateway.structured.schemas import named_schema, validation_problems

    schema = named_schema(schema_name)
    result = _structured(simulator, model, schema, schema_name)
    assert validation_problems(schema, result.data) == [] and result.asks == 1
    [call] = simulator.calls()
    assert call["status"] == 200
    if call["provider"] == "gemini":
        assert "responseSchema" in call["body"]["generationConfig"]
    if call["provider"] == "openai":
        assert call["body"]["response_format"]["json_schema"]["strict"] is True


@pytest.mark.parametrize("model", MODELS)
def test_typical_inline_schemas_use_each_native_mode(simulator, model):
    from llm_gateway.structured.schemas import validation_problems

    result = _structured(simulator, model, LOOSE)
    assert validation_problems(LOOSE, result.data) == []
    [call] = simulator.calls()
    assert call["status"] == 200
    if call["provider"] == "openai":  # rewritten into strict form, not sent non-strict
        fmt = call["body"]["response_format"]["json_schema"]
        assert fmt["strict"] is True and fmt["schema"]["required"] == list(LOOSE["properties"])
        assert fmt["schema"]["additionalProperties"] is False
        assert fmt["schema"]["properties"]["born"] == {"type": ["string", "null"], "format": "date"}
    elif call["provider"] == "gemini":
        wire = call["body"]["generationConfig"]["responseSchema"]
        assert wire["properties"]["born"]["description"] == "format: date"
        assert wire["properties"]["kind"] == {"type": "string", "enum": ["person"]}
        assert wire["properties"]["id"] == {"anyOf": [{"type": "string"}, {"type": "integer"}]}
        assert wire["properties"]["home"]["properties"] == {"city": {"type": "string"}}


def test_openai_gets_strict_false_only_for_a_schema_without_a_strict_form(simulator):
    schema = {"type": "object", "properties": {"code": {"type": "string", "minLength": 3}}, "required": ["code"]}
    result = _structured(simulator, "gpt-4o-mini", schema)
    assert len(result.data["code"]) >= 3
    fmt = simulator.calls()[0]["body"]["response_format"]["json_schema"]
    assert fmt["strict"] is False and fmt["schema"] == schema


@pytest.mark.parametrize("model", ["gemini-2.0-flash", "gemini-2.0-flash-lite"])
def test_gemini_falls_back_to_json_in_text_for_a_schema_it_cannot_express(simulator, model):
    free_form = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "attributes": {"type": "object"}},
        "required": ["name", "attributes"],
    }
    simulator.script("gemini", ['{"name": "Ada", "attributes": {"born": 1815}}'])
    result = _structured(simulator, model, free_form)
    assert result.data == {"name": "Ada", "attributes": {"born": 1815}}
    config = simulator.calls()[0]["body"]["generationConfig"]
    assert config["responseMimeType"] == "application/json" and "responseSchema" not in config
    instruction = simulator.calls()[0]["body"]["systemInstruction"]["parts"][0]["text"]
    assert '"attributes":{"type":"object"}' in instruction  # the full schema, in the prompt
