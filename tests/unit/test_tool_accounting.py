"""Tool calling around the calls: the cache key and entry, the budget's worst case, and routing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llm_gateway.accounting.cache import cache_key, decode_entry, encode_entry, is_cacheable_result
from llm_gateway.catalog import default_catalog
from llm_gateway.documents.tokens import estimate_text_tokens
from llm_gateway.errors import InvalidRequestError
from llm_gateway.models import CompletionRequest, CompletionResult, ProviderRequest, Usage
from llm_gateway.routing.router import Router
from llm_gateway.routing.wire import worst_case_input as _worst_case_input
from llm_gateway.tool_models import ToolCall

USER = [{"role": "user", "content": "Weather in Oslo?"}]
PARAMS = {"type": "object", "properties": {"city": {"type": "string", "description": "x" * 400}}}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": PARAMS}}]
CALL = ToolCall.model_validate({"id": "call_1", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}})


def request(**fields: Any) -> CompletionRequest:
    return CompletionRequest.model_validate({"messages": USER, "temperature": 0, **fields})


def key(**fields: Any) -> str:
    return cache_key("t", request(**fields), catalog_version="c")


def test_the_cache_key_covers_tools_and_how_to_choose() -> None:
    keys = {
        key(),
        key(tools=TOOLS),
        key(tools=TOOLS, tool_choice="required"),
        key(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_weather"}}),
        key(tools=TOOLS, parallel_tool_calls=False),
        key(tools=[{"type": "function", "function": {"name": "get_weather"}}]),
    }
    assert len(keys) == 6
    assert key(tools=TOOLS) == key(tools=TOOLS)


def tool_result(**changes: Any) -> CompletionResult:
    values: dict[str, Any] = {
        "content": "",
        "tool_calls": [CALL],
        "provider": "openai",
        "model": "gpt-4o-mini",
        "finish_reason": "tool_calls",
        "usage": Usage(input_tokens=10, output_tokens=3),
        "cost_usd": 0.001,
        "latency_ms": 1.0,
        "attempts": [],
    }
    return CompletionResult(**{**values, **changes})


def test_a_tool_call_answer_is_cached_with_its_calls() -> None:
    req = request(tools=TOOLS)
    assert is_cacheable_result(req, tool_result())
    assert not is_cacheable_result(req, tool_result(tool_calls=None))  # "tool_calls" with no calls: broken
    cached, cost = decode_entry(encode_entry(tool_result()), req)
    assert cached.tool_calls == [CALL] and cached.finish_reason == "tool_calls" and cost == 0.001


def wire(**fields: Any) -> ProviderRequest:
    req = request(**fields)
    return ProviderRequest(model="m", messages=req.messages, max_tokens=10, tools=req.tools)


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_the_budget_counts_tool_definitions_as_input(provider: str) -> None:
    definitions = estimate_text_tokens(json.dumps(TOOLS))
    assert _worst_case_input(wire(tools=TOOLS), provider) - _worst_case_input(wire(), provider) >= definitions


def test_the_budget_counts_tool_call_arguments_in_history() -> None:
    arguments = json.dumps({"city": "x" * 2000})
    call = {"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
    history = [
        *USER,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c", "content": "3"},
    ]
    assert _worst_case_input(wire(messages=history, tools=TOOLS), "openai") > estimate_text_tokens(arguments)


def router() -> Router:
    return Router(default_catalog(), {"openai", "anthropic", "gemini", "openai_compatible"})


def test_routing_skips_models_that_cannot_call_tools() -> None:
    catalog = default_catalog()
    for tier in ("fast", "balanced", "best"):
        plan = router().plan(request(tools=TOOLS, tier=tier))
        assert plan.candidates and all("tools" in c.spec.capabilities for c in plan.candidates)
    # The request without tools may use them: the filter is the tools', not a change of routing.
    assert any("tools" not in m.capabilities for m in catalog.models)


def test_naming_a_model_that_cannot_call_tools_is_a_400() -> None:
    with pytest.raises(InvalidRequestError) as info:
        router().plan(request(tools=TOOLS, model="local-llama"))
    assert info.value.http_status == 400 and info.value.details["param"] == "model"
    assert "cannot call tools" in info.value.message
    assert router().plan(request(model="local-llama")).primary.spec.id == "local-llama"
