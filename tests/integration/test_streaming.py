"""Streamed chat completions end to end over the local stack (issue 14): the official ``openai`` client
(sync and async) and raw Server-Sent Events read with httpx, through the API Gateway bridge's streaming
path, the real completion handler under the streaming Lambda runtime loop, moto, and the provider
simulator streaming in each provider's wire format.

Text and tool-call streams on every provider, ``include_usage`` against the ledger, fallback before the
first byte. Failures mid-stream, the cache, pass-through timing and callers leaving are in
``test_streaming_failures.py``; non-streamed answers and errors on the streaming routes and the native
event shape in ``test_streaming_routes.py``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from local.simulator import ProviderSimulator
from local.stack import LocalStack
from tests.support.accounting import api_key_for, ledger_items, unique
from tests.support.clients import openai_client
from tests.support.sse import CHAT, DONE, MODELS, prompt, read_stream

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_real_aws")]

KEY = "key-a"  # tests/conftest.py
PROVIDERS = list(MODELS)
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
                "required": ["city", "days"],
            },
        },
    },
    {"type": "function", "function": {"name": "get_time", "description": "The time now"}},
]


@pytest.fixture
def client(local_stack: LocalStack) -> openai.OpenAI:
    return openai_client(local_stack, KEY)


@pytest.fixture
def api(local_stack: LocalStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=local_stack.api_url or "", timeout=60, headers={"x-api-key": KEY}) as http:
        yield http


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def tool_question() -> list[Any]:
    return user(prompt("What is the weather in Oslo? Use get_weather and get_time."))


# --------------------------------------------------------------------------- text


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_text_stream_reassembles_the_non_streamed_answer(
    provider: str, client: openai.OpenAI, simulator: ProviderSimulator
) -> None:
    messages = user(prompt())
    expected = client.chat.completions.create(model=MODELS[provider], messages=messages)
    answer = expected.choices[0].message.content or ""
    assert answer.startswith("[sim ")

    chunks = list(client.chat.completions.create(model=MODELS[provider], messages=messages, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 3  # the answer came in pieces, not in one
    assert "".join(pieces) == answer
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert {c.model for c in chunks} == {expected.model}
    assert all(c.usage is None for c in chunks)  # no include_usage: no usage anywhere
    gateway = (chunks[-1].model_extra or {})["x_gateway"]
    assert gateway["provider"] == provider and gateway["cost_usd"] > 0
    streamed = [c for c in simulator.calls(provider) if c.get("stream")]
    assert len(streamed) == 1 and streamed[0]["stream"]["outcome"] == "completed"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_raw_event_stream_ends_with_done_and_keeps_one_id(provider: str, api: httpx.Client) -> None:
    stream = read_stream(api, CHAT, {"model": MODELS[provider], "messages": user(prompt()), "stream": True})
    assert stream.status == 200 and stream.error is None
    assert stream.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert stream.headers["cache-control"] == "no-cache"
    assert stream.headers["x-gateway-provider"] == provider and stream.headers["x-gateway-cache"] == "miss"
    assert stream.headers["x-gateway-model"] == MODELS[provider] and stream.headers["x-request-id"]
    assert stream.data[-1] == DONE and stream.data.count(DONE) == 1  # nothing after [DONE]
    assert stream.raw.endswith(b"data: [DONE]\n\n")
    chunks = stream.chunks()
    assert len(chunks) >= 5 and {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1 and len({c["created"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert all("error" not in c for c in chunks)


# --------------------------------------------------------------------------- tool calls


def _streamed_calls(chunks: list[Any]) -> dict[int, dict[str, Any]]:
    """Tool calls accumulated by index from the deltas, with what each call's first piece carried."""
    calls: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for delta in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            call = calls.get(delta.index)
            if call is None:
                calls[delta.index] = {"id": delta.id, "name": delta.function.name, "arguments": ""}
                assert delta.id and delta.function.name, "a call's first piece names it"
            else:
                assert delta.id is None and (delta.function.name or None) is None, "only the first piece names it"
            calls[delta.index]["arguments"] += delta.function.arguments or ""
    return calls


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_tool_call_stream_carries_two_parallel_calls(provider: str, client: openai.OpenAI) -> None:
    messages = tool_question()
    expected = client.chat.completions.create(model=MODELS[provider], messages=messages, tools=TOOLS)
    expected_calls = expected.choices[0].message.tool_calls or []
    assert [c.function.name for c in expected_calls] == ["get_weather", "get_time"]

    chunks = list(client.chat.completions.create(model=MODELS[provider], messages=messages, tools=TOOLS, stream=True))
    calls = _streamed_calls(chunks)
    assert sorted(calls) == [0, 1]
    assert [calls[i]["name"] for i in (0, 1)] == ["get_weather", "get_time"]
    assert len({calls[0]["id"], calls[1]["id"]}) == 2
    for index, call in enumerate(expected_calls):
        assert json.loads(calls[index]["arguments"]) == json.loads(call.function.arguments)
    assert json.loads(calls[0]["arguments"])["city"]  # a real argument object, not {}
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["tool_calls"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_stream_helper_builds_the_same_final_completion(provider: str, client: openai.OpenAI) -> None:
    messages = tool_question()
    expected = client.chat.completions.create(model=MODELS[provider], messages=messages, tools=TOOLS)
    with client.chat.completions.stream(model=MODELS[provider], messages=messages, tools=TOOLS) as stream:
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert final.choices[0].finish_reason == "tool_calls"
    got = [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls or []]
    want = [(c.function.name, json.loads(c.function.arguments)) for c in expected.choices[0].message.tool_calls or []]
    assert got == want and len(got) == 2
    assert all(c.id for c in message.tool_calls or [])


# --------------------------------------------------------------------------- include_usage


@pytest.mark.parametrize("provider", PROVIDERS)
def test_include_usage_adds_a_usage_chunk_matching_the_ledger(local_stack: LocalStack, provider: str) -> None:
    tenant = unique()
    with api_key_for(local_stack, tenant) as key:
        chunks = list(
            openai_client(local_stack, key).chat.completions.create(
                model=MODELS[provider],
                messages=user(prompt()),
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    *body, last = chunks
    assert last.choices == [] and last.usage is not None
    assert all(c.usage is None and c.choices for c in body)
    usage = last.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    gateway = (last.model_extra or {})["x_gateway"]
    assert gateway["cost_usd"] > 0 and gateway["usage_estimated"] is False
    assert [(a["provider"], a["outcome"]) for a in gateway["attempts"]] == [(provider, "success")]
    [record] = ledger_items(local_stack, tenant)
    assert record["outcome"]["S"] == "success" and record["provider"]["S"] == provider
    assert int(record["input_tokens"]["N"]) == usage.prompt_tokens
    assert int(record["output_tokens"]["N"]) == usage.completion_tokens
    assert float(record["cost_usd"]["N"]) == pytest.approx(gateway["cost_usd"], abs=1e-9)


def test_without_include_usage_there_is_no_usage_chunk(api: httpx.Client) -> None:
    stream = read_stream(api, CHAT, {"model": MODELS["gemini"], "messages": user(prompt()), "stream": True})
    chunks = stream.chunks()
    assert all(c["choices"] for c in chunks) and all("usage" not in c for c in chunks)
    assert "x_gateway" in chunks[-1] and chunks[-1]["choices"][0]["finish_reason"] == "stop"


# --------------------------------------------------------------------------- fallback before the first byte


def test_a_rate_limited_model_falls_back_before_the_first_byte(
    client: openai.OpenAI, simulator: ProviderSimulator
) -> None:
    simulator.add_fault("rate_limit", provider="openai", retry_after=0)
    raw = client.chat.completions.with_raw_response.create(
        model=MODELS["openai"], messages=user(prompt()), stream=True, stream_options={"include_usage": True}
    )
    served_by = raw.headers["x-gateway-provider"]
    assert served_by != "openai"
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith(f"[sim {served_by}")
    attempts = (chunks[-1].model_extra or {})["x_gateway"]["attempts"]
    assert attempts[0]["provider"] == "openai" and attempts[0]["error_code"] == "rate_limited"
    assert attempts[-1]["provider"] == served_by and attempts[-1]["outcome"] == "success"
    assert all(a["outcome"] == "error" for a in attempts[:-1])
    assert all(call["status"] == 429 for call in simulator.calls("openai"))


# --------------------------------------------------------------------------- async client


@pytest.fixture
def async_client(local_stack: LocalStack) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{local_stack.api_url}/v1",
        api_key="unused",
        default_headers={"x-api-key": KEY},
        max_retries=0,
        timeout=60,
    )


def test_the_async_client_streams_text(client: openai.OpenAI, async_client: openai.AsyncOpenAI) -> None:
    messages = user(prompt())
    expected = client.chat.completions.create(model=MODELS["openai"], messages=messages).choices[0].message.content

    async def stream() -> list[Any]:
        async with async_client:
            response = await async_client.chat.completions.create(
                model=MODELS["openai"], messages=messages, stream=True
            )
            return [chunk async for chunk in response]

    chunks = asyncio.run(stream())
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 3 and "".join(pieces) == expected
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_the_async_client_streams_tool_calls(client: openai.OpenAI, async_client: openai.AsyncOpenAI) -> None:
    messages = tool_question()
    expected = client.chat.completions.create(model=MODELS["gemini"], messages=messages, tools=TOOLS)

    async def final() -> Any:
        async with (
            async_client,
            async_client.chat.completions.stream(model=MODELS["gemini"], messages=messages, tools=TOOLS) as stream,
        ):
            return await stream.get_final_completion()

    completion = asyncio.run(final())
    got = [(c.function.name, json.loads(c.function.arguments)) for c in completion.choices[0].message.tool_calls]
    want = [(c.function.name, json.loads(c.function.arguments)) for c in expected.choices[0].message.tool_calls or []]
    assert got == want and [name for name, _ in got] == ["get_weather", "get_time"]
    assert completion.choices[0].finish_reason == "tool_calls"
