"""Tool calling over the local stack with the official ``openai`` client: the API Gateway bridge, the
real completion handler, moto, and the provider simulator speaking each provider's wire format.

A two-step conversation (the model calls tools, the caller answers, the model continues) on each
provider, with parallel calls; the same conversation continued on Anthropic and Gemini after OpenAI is
rate-limited; the native route; caching; usage and the ledger; a model that cannot call tools.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel

from llm_gateway.accounting.budgets import DynamoDBBudgetGuard
from local.simulator import ProviderSimulator
from local.stack import LocalStack
from tests.support.accounting import api_key_for, ledger_items, unique
from tests.support.clients import openai_client

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_real_aws")]

KEY, TENANT = "key-a", "tenant-a"  # tests/conftest.py
WEATHER_PARAMS = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "at": {"type": "object", "properties": {"day": {"type": "integer", "minimum": 1}}, "required": ["day"]},
    },
    "required": ["city", "unit", "at"],
}
TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": WEATHER_PARAMS}},
    {"type": "function", "function": {"name": "get_time", "description": "The time now"}},
]
MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-3-5-haiku-latest", "gemini": "gemini-2.0-flash"}


@pytest.fixture
def client(local_stack: LocalStack) -> openai.OpenAI:
    return openai_client(local_stack, KEY)


@pytest.fixture
def api(local_stack: LocalStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=local_stack.api_url or "", timeout=60, headers={"x-api-key": KEY}) as http:
        yield http


def question(text: str) -> list[Any]:
    return [{"role": "user", "content": f"{text} ({uuid.uuid4().hex[:8]})"}]


def continued(messages: list[Any], answer: Any, results: dict[str, str]) -> list[Any]:
    """The conversation with the model's tool calls and the caller's results appended."""
    assistant = answer.choices[0].message.model_dump(exclude_none=True, include={"role", "content", "tool_calls"})
    tool_turns = [
        {"role": "tool", "tool_call_id": call.id, "content": results[call.function.name]}
        for call in answer.choices[0].message.tool_calls
    ]
    return [*messages, assistant, *tool_turns]


def last_wire_body(simulator: ProviderSimulator, provider: str) -> dict[str, Any]:
    body: dict[str, Any] = simulator.calls(provider)[-1]["body"]
    return body


# --------------------------------------------------------------------------- each provider


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_a_two_step_tool_conversation(provider: str, client: openai.OpenAI, simulator: ProviderSimulator) -> None:
    messages = question("What is the weather in Oslo? Use get_weather and get_time.")
    first = client.chat.completions.create(model=MODELS[provider], messages=messages, tools=TOOLS)
    choice = first.choices[0]
    assert first.model_extra and first.model_extra["x_gateway"]["provider"] == provider
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]  # parallel calls
    jsonschema.validate(json.loads(calls[0].function.arguments), WEATHER_PARAMS)
    assert json.loads(calls[1].function.arguments) == {}
    assert len({c.id for c in calls}) == 2 and all(c.id for c in calls)
    assert first.usage and first.usage.prompt_tokens > 0 and first.usage.completion_tokens > 0
    assert first.model_extra["x_gateway"]["cost_usd"] > 0

    results = {"get_weather": '{"temp_c": 3}', "get_time": "12:00"}
    second = client.chat.completions.create(
        model=MODELS[provider], messages=continued(messages, first, results), tools=TOOLS
    )
    assert second.choices[0].finish_reason == "stop"
    assert second.model_extra and second.model_extra["x_gateway"]["provider"] == provider
    text = second.choices[0].message.content or ""
    assert "2 tool result(s)" in text and "12:00" in text and "temp_c" in text  # the results reached the model
    _check_wire_turns(provider, last_wire_body(simulator, provider))


def _check_wire_turns(provider: str, body: dict[str, Any]) -> None:
    """The results of one turn's calls travel as that provider wants them: in one message or turn."""
    if provider == "anthropic":
        results = body["messages"][-1]
        assert results["role"] == "user" and [b["type"] for b in results["content"]] == ["tool_result"] * 2
        assert [t["name"] for t in body["tools"]] == ["get_weather", "get_time"]
    elif provider == "gemini":
        results = body["contents"][-1]
        assert [p["functionResponse"]["name"] for p in results["parts"]] == ["get_weather", "get_time"]
        assert len(body["tools"]) == 1 and len(body["tools"][0]["functionDeclarations"]) == 2
    else:
        assert [m["role"] for m in body["messages"][-3:]] == ["assistant", "tool", "tool"]


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_a_named_tool_choice_without_parallel_calls(provider: str, client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model=MODELS[provider],
        messages=question("Use get_weather and get_time please"),
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
    )
    assert [c.function.name for c in answer.choices[0].message.tool_calls or []] == ["get_weather"]


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_tool_choice_none_answers_in_text(provider: str, client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model=MODELS[provider], messages=question("Use get_weather"), tools=TOOLS, tool_choice="none"
    )
    assert answer.choices[0].finish_reason == "stop" and not answer.choices[0].message.tool_calls
    assert answer.choices[0].message.content


# --------------------------------------------------------------------------- fallback mid-conversation


@pytest.mark.parametrize(("down", "expected"), [(("openai",), "gemini"), (("openai", "gemini"), "anthropic")])
def test_an_openai_conversation_continues_elsewhere_when_openai_is_rate_limited(
    down: tuple[str, ...], expected: str, client: openai.OpenAI, simulator: ProviderSimulator
) -> None:
    messages = question("Weather? Use get_weather and get_time.")
    first = client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=TOOLS)
    assert first.model_extra and first.model_extra["x_gateway"]["provider"] == "openai"
    assert all(c.id.startswith("call_") for c in first.choices[0].message.tool_calls or [])
    for provider in down:
        simulator.add_fault("rate_limit", provider=provider, retry_after=30)  # longer than the gateway waits
    results = {"get_weather": '{"temp_c": 3}', "get_time": "12:00"}
    second = client.chat.completions.create(
        model="gpt-4o-mini", messages=continued(messages, first, results), tools=TOOLS
    )
    gateway = second.model_extra["x_gateway"] if second.model_extra else {}
    assert gateway["provider"] == expected
    assert [a["outcome"] for a in gateway["attempts"]][-1] == "success"
    assert {a["provider"] for a in gateway["attempts"] if a["outcome"] == "error"} == set(down)
    assert "12:00" in (second.choices[0].message.content or "")
    _check_wire_turns(expected, last_wire_body(simulator, expected))


# --------------------------------------------------------------------------- native route, cache, ledger


def test_the_native_route_carries_tool_calls(api: httpx.Client) -> None:
    messages = question("Use get_time")
    body = {"model": "claude-3-5-haiku-latest", "messages": messages, "tools": TOOLS, "tool_choice": "required"}
    first = api.post("/v1/completions", json=body)
    assert first.status_code == 200, first.text
    data = first.json()
    assert data["finish_reason"] == "tool_calls" and data["provider"] == "anthropic"
    assert [c["function"]["name"] for c in data["tool_calls"]] == ["get_time"]
    assert data["usage"]["input_tokens"] > 0 and data["cost_usd"] > 0
    call = data["tool_calls"][0]
    assert isinstance(call["function"]["arguments"], str) and call["id"].startswith("toolu_")
    follow_up = {
        **body,
        "tool_choice": "auto",
        "messages": [
            *messages,
            {"role": "assistant", "content": data["content"], "tool_calls": data["tool_calls"]},
            {"role": "tool", "tool_call_id": call["id"], "content": "noon"},
        ],
    }
    second = api.post("/v1/completions", json=follow_up)
    assert second.status_code == 200, second.text
    assert second.json()["finish_reason"] == "stop" and "noon" in second.json()["content"]


def test_a_deterministic_tool_call_answer_is_cached(
    client: openai.OpenAI, simulator: ProviderSimulator, local_stack: LocalStack
) -> None:
    messages = question("Use get_weather")
    ask = {"model": "gemini-2.0-flash", "messages": messages, "tools": TOOLS, "temperature": 0}
    first = client.chat.completions.with_raw_response.create(**ask)
    second = client.chat.completions.with_raw_response.create(**ask)
    assert (first.headers["x-gateway-cache"], second.headers["x-gateway-cache"]) == ("miss", "hit")
    one, two = first.parse(), second.parse()
    assert two.choices[0].finish_reason == "tool_calls"
    assert [c.model_dump() for c in two.choices[0].message.tool_calls or []] == [
        c.model_dump() for c in one.choices[0].message.tool_calls or []
    ]
    assert len(simulator.calls("gemini")) == 1
    # Other tools, another answer: the key covers them.
    other = client.chat.completions.with_raw_response.create(**{**ask, "tools": TOOLS[:1]})
    assert other.headers["x-gateway-cache"] == "miss"
    # The ledger has the call and the hit, like any other request (found by the requests' ids).
    ids = {first.headers["x-request-id"]: "success", second.headers["x-request-id"]: "cache_hit"}
    found = {
        item["request_id"]["S"]: item["outcome"]["S"]
        for item in ledger_items(local_stack, TENANT)
        if item.get("request_id", {}).get("S") in ids
    }
    assert found == ids


def test_a_model_that_cannot_call_tools_is_refused_by_name(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="local-llama", messages=question("Use get_time"), tools=TOOLS)
    assert info.value.status_code == 400
    body = info.value.body if isinstance(info.value.body, dict) else {}
    assert body.get("param") == "model" and "cannot call tools" in body.get("message", "")


def test_legacy_functions_are_refused_clearly(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=question("hi"),
            functions=[{"name": "get_time", "parameters": {"type": "object", "properties": {}}}],
        )
    body = info.value.body if isinstance(info.value.body, dict) else {}
    assert body.get("param") == "functions" and "send 'tools'" in body.get("message", "")


def test_the_budget_reserves_for_the_tool_definitions(local_stack: LocalStack, simulator: ProviderSimulator) -> None:
    """A budget that fits the question alone (~1e-5 USD reserved) but not with 2,000 tokens of tool
    definitions (~4e-4 USD): refused before any provider call."""
    tenant = unique()
    DynamoDBBudgetGuard(local_stack.physical["UsageTable"]).set_policy(tenant, 0.0001, "month")
    big = {"type": "function", "function": {"name": "lookup", "description": "d" * 8000, "parameters": WEATHER_PARAMS}}
    body = {"model": "gpt-4o-mini", "max_tokens": 10, "messages": question("Use lookup")}
    with api_key_for(local_stack, tenant) as key, httpx.Client(base_url=local_stack.api_url or "", timeout=30) as http:
        refused = http.post("/v1/chat/completions", json={**body, "tools": [big]}, headers={"x-api-key": key})
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exceeded"
        assert simulator.calls() == []
        served = http.post("/v1/chat/completions", json=body, headers={"x-api-key": key})
        assert served.status_code == 200, served.text


class Lookup(BaseModel):
    """Look a word up."""

    word: str
    senses: list[str]
    rank: int | None


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_strict_pydantic_tools_parse_with_the_openai_client(
    provider: str, client: openai.OpenAI, simulator: ProviderSimulator
) -> None:
    """The SDK's own strict tools (closed objects, nullable optionals) parse on every provider."""
    answer = client.chat.completions.parse(
        model=MODELS[provider], messages=question("Use Lookup"), tools=[openai.pydantic_function_tool(Lookup)]
    )
    (call,) = answer.choices[0].message.tool_calls or []
    assert isinstance(call.function.parsed_arguments, Lookup)
    sent = last_wire_body(simulator, provider)
    if provider == "openai":
        assert sent["tools"][0]["function"]["strict"] is True  # passed through
    elif provider == "anthropic":
        assert "strict" not in sent["tools"][0] and sent["tools"][0]["input_schema"]["additionalProperties"] is False
    else:
        assert "additionalProperties" not in json.dumps(sent["tools"])  # outside Gemini's subset
