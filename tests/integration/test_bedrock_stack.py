"""Bedrock through the local stack with the official ``openai`` client: a fallback chain from Anthropic
direct to Claude on Bedrock, Bedrock by id with tools, and a Bedrock error seen by the client.

The stack points ``AWS_ENDPOINT_URL_BEDROCK_RUNTIME`` at the simulator, whose Converse dialect refuses
any call without a well-formed SigV4 ``Authorization`` header (so every success here was signed).
"""

from __future__ import annotations

import json
import uuid

import openai
import pytest

from local.simulator import ProviderSimulator
from local.stack import LocalStack
from tests.support.clients import openai_client

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_real_aws")]

KEY = "key-a"
CLAUDE_ON_BEDROCK = "anthropic.claude-3-5-haiku-20241022-v1:0"
WIRE_MODEL = "us.anthropic.claude-3-5-haiku-20241022-v1:0"  # the US inference profile (stack region us-east-1)


@pytest.fixture
def client(local_stack: LocalStack) -> openai.OpenAI:
    return openai_client(local_stack, KEY)


def prompt(text: str) -> str:
    return f"{text} ({uuid.uuid4().hex[:8]})"  # unique: never a cache hit


def test_stack_simulates_bedrock(local_stack: LocalStack) -> None:
    assert local_stack.providers["bedrock"] == "simulated"


@pytest.mark.parametrize(("fault", "code"), [("overloaded", "provider_unavailable"), ("rate_limit", "rate_limited")])
def test_fallback_chain_anthropic_then_claude_on_bedrock(
    client: openai.OpenAI, simulator: ProviderSimulator, fault: str, code: str
) -> None:
    """Chat completions have no ``fallback`` field: the chain is the automatic one (the cheapest peers of
    the model's tier on each other provider). OpenAI and Gemini refuse the key here, so the chain runs
    Anthropic direct -> ... -> Claude on Bedrock, which answers."""
    simulator.add_fault(fault, provider="anthropic", retry_after=0)
    simulator.add_fault("auth", provider="openai")
    simulator.add_fault("auth", provider="gemini")
    completion = client.chat.completions.create(
        model="claude-3-5-haiku-latest",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt("Say hello")}],
    )
    gateway = (completion.model_extra or {})["x_gateway"]
    attempts = gateway["attempts"]
    assert attempts[0]["provider"] == "anthropic" and attempts[0]["error_code"] == code
    assert {a["provider"] for a in attempts if a["outcome"] == "error"} == {"anthropic", "openai", "gemini"}
    assert attempts[-1]["provider"] == "bedrock" and attempts[-1]["outcome"] == "success"
    assert attempts[-1]["model"] == CLAUDE_ON_BEDROCK
    assert gateway["provider"] == "bedrock"
    assert completion.model == CLAUDE_ON_BEDROCK
    assert (completion.choices[0].message.content or "").startswith(f"[sim bedrock/{WIRE_MODEL}]")
    assert completion.usage is not None and completion.usage.prompt_tokens > 0
    [call] = simulator.calls("bedrock")
    assert call["model"] == WIRE_MODEL and call["status"] == 200
    assert call["body"]["system"] == [{"text": "Be brief."}]


def test_bedrock_model_by_id_with_a_tool_round_trip(client: openai.OpenAI, simulator: ProviderSimulator) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ]
    messages: list[dict] = [{"role": "user", "content": prompt("Call get_weather for Oslo")}]
    first = client.chat.completions.create(model="amazon.nova-lite-v1:0", messages=messages, tools=tools)
    assert first.choices[0].finish_reason == "tool_calls"
    [tool_call] = first.choices[0].message.tool_calls or []
    assert tool_call.function.name == "get_weather" and "city" in json.loads(tool_call.function.arguments)

    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": tool_call.id, "content": "-3C and snowing"},
    ]
    second = client.chat.completions.create(model="amazon.nova-lite-v1:0", messages=messages, tools=tools)
    assert second.choices[0].finish_reason == "stop"
    assert "-3C and snowing" in (second.choices[0].message.content or "")
    wire = simulator.calls("bedrock")
    assert [c["model"] for c in wire] == ["us.amazon.nova-lite-v1:0"] * 2
    assert "toolResult" in wire[1]["body"]["messages"][-1]["content"][0]


def test_bedrock_access_denied_is_a_provider_auth_error_and_falls_back(
    client: openai.OpenAI, simulator: ProviderSimulator
) -> None:
    simulator.add_fault("auth", provider="bedrock")
    completion = client.chat.completions.create(
        model=CLAUDE_ON_BEDROCK, messages=[{"role": "user", "content": prompt("Hello")}]
    )
    attempts = (completion.model_extra or {})["x_gateway"]["attempts"]
    assert (attempts[0]["provider"], attempts[0]["error_code"]) == ("bedrock", "provider_auth_error")
    assert attempts[-1]["outcome"] == "success" and attempts[-1]["provider"] != "bedrock"
    assert len(simulator.calls("bedrock")) == 1  # an auth failure is not retried
