"""The provider simulator's tool calling, spoken to directly in each wire format: it calls tools with
arguments valid against their schema, continues after the results, and refuses what the real API
refuses (so a gateway that translates tool turns wrongly fails its tests)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest

from local.simulator import ProviderSimulator

pytestmark = pytest.mark.integration

PARAMS = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 3}},
    "required": ["city", "days"],
}


@pytest.fixture(scope="module")
def sim() -> Iterator[ProviderSimulator]:
    with ProviderSimulator() as simulator:
        yield simulator


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as client:
        yield client


def openai(sim: ProviderSimulator, http: httpx.Client, **body: Any) -> httpx.Response:
    headers = {"Authorization": "Bearer k"}
    return http.post(f"{sim.base_urls()['openai']}/chat/completions", json={"model": "m", **body}, headers=headers)


def anthropic(sim: ProviderSimulator, http: httpx.Client, **body: Any) -> httpx.Response:
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    url = f"{sim.base_urls()['anthropic']}/v1/messages"
    return http.post(url, json={"model": "m", "max_tokens": 100, **body}, headers=headers)


def gemini(sim: ProviderSimulator, http: httpx.Client, **body: Any) -> httpx.Response:
    url = f"{sim.base_urls()['gemini']}/v1beta/models/m:generateContent"
    return http.post(url, json=body, headers={"x-goog-api-key": "k"})


OPENAI_TOOLS = [
    {"type": "function", "function": {"name": "forecast", "parameters": PARAMS}},
    {"type": "function", "function": {"name": "clock"}},
]
CALL = {"id": "call_1", "type": "function", "function": {"name": "forecast", "arguments": "{}"}}


# --------------------------------------------------------------------------- OpenAI


def test_openai_calls_the_named_tools_and_continues(sim: ProviderSimulator, http: httpx.Client) -> None:
    asked = [{"role": "user", "content": "forecast and clock, please"}]
    first = openai(sim, http, messages=asked, tools=OPENAI_TOOLS).json()["choices"][0]
    assert first["finish_reason"] == "tool_calls" and first["message"]["content"] is None
    calls = first["message"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["forecast", "clock"]
    jsonschema.validate(json.loads(calls[0]["function"]["arguments"]), PARAMS)
    results = [{"role": "tool", "tool_call_id": c["id"], "content": f"result {i}"} for i, c in enumerate(calls)]
    second = openai(sim, http, messages=[*asked, first["message"], *results], tools=OPENAI_TOOLS).json()["choices"][0]
    assert second["finish_reason"] == "stop" and "result 0 | result 1" in second["message"]["content"]


@pytest.mark.parametrize(
    ("messages", "extra", "words"),
    [
        (
            [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "call_1", "content": "1"}],
            {},
            "preceeding",
        ),
        (
            [
                {"role": "user", "content": "x"},
                {"role": "assistant", "tool_calls": [CALL]},
                {"role": "user", "content": "y"},
            ],
            {},
            "did not have response messages: call_1",
        ),
        ([{"role": "user", "content": "x"}], {"tool_choice": "auto"}, "only allowed when 'tools'"),
    ],
)
def test_openai_refuses_misplaced_tool_turns(
    sim: ProviderSimulator, http: httpx.Client, messages: list[Any], extra: dict[str, Any], words: str
) -> None:
    response = openai(sim, http, messages=messages, **extra)
    assert response.status_code == 400 and words in response.json()["error"]["message"]


# --------------------------------------------------------------------------- Anthropic

ANTHROPIC_TOOLS = [{"name": "forecast", "input_schema": PARAMS}, {"name": "clock", "input_schema": {"type": "object"}}]
USE = {"type": "tool_use", "id": "toolu_1", "name": "forecast", "input": {"city": "Oslo", "days": 3}}
RESULT = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}


def test_anthropic_answers_tool_use_and_continues(sim: ProviderSimulator, http: httpx.Client) -> None:
    asked = [{"role": "user", "content": "forecast please"}]
    first = anthropic(sim, http, messages=asked, tools=ANTHROPIC_TOOLS).json()
    assert first["stop_reason"] == "tool_use"
    (block,) = first["content"]
    assert block["type"] == "tool_use" and block["name"] == "forecast"
    jsonschema.validate(block["input"], PARAMS)
    result = {"type": "tool_result", "tool_use_id": block["id"], "content": "sunny"}
    messages = [*asked, {"role": "assistant", "content": first["content"]}, {"role": "user", "content": [result]}]
    second = anthropic(sim, http, messages=messages, tools=ANTHROPIC_TOOLS).json()
    assert second["stop_reason"] == "end_turn" and "sunny" in second["content"][0]["text"]


def test_anthropic_disable_parallel_tool_use_gives_one_call(sim: ProviderSimulator, http: httpx.Client) -> None:
    asked = [{"role": "user", "content": "forecast and clock"}]
    both = anthropic(sim, http, messages=asked, tools=ANTHROPIC_TOOLS).json()["content"]
    one = anthropic(
        sim,
        http,
        messages=asked,
        tools=ANTHROPIC_TOOLS,
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
    ).json()["content"]
    assert [b["name"] for b in both] == ["forecast", "clock"] and [b["name"] for b in one] == ["forecast"]


@pytest.mark.parametrize(
    ("messages", "tools", "words"),
    [
        (  # the result a turn late
            [
                {"role": "user", "content": "x"},
                {"role": "assistant", "content": [USE]},
                {"role": "user", "content": "wait"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": [RESULT]},
            ],
            ANTHROPIC_TOOLS,
            "without `tool_result` blocks immediately after",
        ),
        (
            [
                {"role": "user", "content": "x"},
                {"role": "assistant", "content": [USE]},
                {"role": "user", "content": [RESULT]},
            ],
            None,
            "must define tools",
        ),
        (
            [
                {"role": "user", "content": "x"},
                {"role": "assistant", "content": [USE]},
                {"role": "user", "content": [{"type": "text", "text": "here"}, RESULT]},
            ],
            ANTHROPIC_TOOLS,
            "must come first",
        ),
    ],
)
def test_anthropic_refuses_misplaced_tool_results(
    sim: ProviderSimulator, http: httpx.Client, messages: list[Any], tools: Any, words: str
) -> None:
    response = anthropic(sim, http, messages=messages, **({"tools": tools} if tools else {}))
    assert response.status_code == 400 and words in response.json()["error"]["message"]


# --------------------------------------------------------------------------- Gemini

GEMINI_TOOLS = [{"functionDeclarations": [{"name": "forecast", "parameters": PARAMS}, {"name": "clock"}]}]
TWO_CALLS = {
    "role": "model",
    "parts": [{"functionCall": {"name": "forecast", "args": {}}}, {"functionCall": {"name": "clock"}}],
}


def response_part(name: str) -> dict[str, Any]:
    return {"functionResponse": {"name": name, "response": {"output": name}}}


def test_gemini_answers_function_calls_and_continues(sim: ProviderSimulator, http: httpx.Client) -> None:
    asked = [{"role": "user", "parts": [{"text": "forecast and clock"}]}]
    first = gemini(sim, http, contents=asked, tools=GEMINI_TOOLS).json()["candidates"][0]
    assert first["finishReason"] == "STOP"
    calls = [p["functionCall"] for p in first["content"]["parts"]]
    assert [c["name"] for c in calls] == ["forecast", "clock"] and all("id" not in c for c in calls)
    jsonschema.validate(calls[0]["args"], PARAMS)
    merged = {"role": "user", "parts": [response_part("forecast"), response_part("clock")]}
    second = gemini(sim, http, contents=[*asked, first["content"], merged], tools=GEMINI_TOOLS).json()
    assert "2 tool result(s)" in second["candidates"][0]["content"]["parts"][0]["text"]


@pytest.mark.parametrize(
    ("contents", "config", "words"),
    [
        (  # one user turn per result: Gemini wants them in one
            [
                {"role": "user", "parts": [{"text": "x"}]},
                TWO_CALLS,
                {"role": "user", "parts": [response_part("forecast")]},
                {"role": "user", "parts": [response_part("clock")]},
            ],
            None,
            "number of function response parts is equal",
        ),
        ([{"role": "user", "parts": [response_part("clock")]}], None, "immediately after a function call turn"),
        (
            [
                {"role": "user", "parts": [{"text": "x"}]},
                TWO_CALLS,
                {"role": "user", "parts": [response_part("a"), response_part("b")]},
            ],
            None,
            "matches no call",
        ),
        ([{"role": "user", "parts": [{"text": "x"}]}], {"responseMimeType": "application/json"}, "mime type"),
    ],
)
def test_gemini_refuses_what_it_refuses(
    sim: ProviderSimulator, http: httpx.Client, contents: list[Any], config: Any, words: str
) -> None:
    body: dict[str, Any] = {"contents": contents, "tools": GEMINI_TOOLS}
    if config:
        body["generationConfig"] = config
    response = gemini(sim, http, **body)
    assert response.status_code == 400 and words in response.json()["error"]["message"]


def test_a_forced_choice_keeps_calling_after_results(sim: ProviderSimulator, http: httpx.Client) -> None:
    """``required`` after tool results calls a function not called yet (an agent's output tool)."""
    asked = [{"role": "user", "content": "forecast please"}]
    first = openai(sim, http, messages=asked, tools=OPENAI_TOOLS, tool_choice="required").json()["choices"][0]
    (call,) = first["message"]["tool_calls"]
    result = {"role": "tool", "tool_call_id": call["id"], "content": "sunny"}
    messages = [*asked, first["message"], result]
    forced = openai(sim, http, messages=messages, tools=OPENAI_TOOLS, tool_choice="required").json()["choices"][0]
    assert [c["function"]["name"] for c in forced["message"]["tool_calls"]] == ["clock"]
    free = openai(sim, http, messages=messages, tools=OPENAI_TOOLS).json()["choices"][0]
    assert free["finish_reason"] == "stop" and "sunny" in free["message"]["content"]
