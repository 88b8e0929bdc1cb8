"""The simulator's streams are the providers' real wire formats: the official ``openai`` and ``anthropic``
clients read them (text, tool calls, usage, errors), requests the real APIs refuse are refused, and the
stream faults can be asked for every way the other faults can."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import anthropic
import httpx
import openai
import pytest

from local.simulator import ProviderSimulator

pytestmark = pytest.mark.integration

PROMPT = "Write two sentences about the sea."
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    },
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}},
]
ANTHROPIC_TOOLS: list[Any] = [
    {"name": t["function"]["name"], "input_schema": t["function"]["parameters"]} for t in TOOLS
]  # fmt: skip


ANTHROPIC_ASK = {
    "model": "claude-3-5-haiku-latest",
    "max_tokens": 300,
    "messages": [{"role": "user", "content": PROMPT}],
}


def openai_sdk(sim: ProviderSimulator) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.base_urls()["openai"], api_key="sim-key", max_retries=0)


def anthropic_sdk(sim: ProviderSimulator) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=sim.base_urls()["anthropic"], api_key="sim-key", max_retries=0)


def test_openai_client_reads_a_text_stream_with_usage(simulator):
    client = openai_sdk(simulator)
    messages: Any = [{"role": "user", "content": PROMPT}]
    whole = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=messages, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1


def test_openai_client_stream_without_include_usage_has_no_usage_chunk(simulator):
    chunks = list(
        openai_sdk(simulator).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}], stream=True
        )
    )
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)


def test_openai_client_reads_parallel_tool_calls_in_pieces(simulator):
    client = openai_sdk(simulator)
    messages: Any = [{"role": "user", "content": "Use get_weather and get_time."}]
    whole = client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=TOOLS)
    calls: dict[int, dict[str, str]] = {}
    pieces = 0
    for chunk in client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=TOOLS, stream=True):
        for piece in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            pieces += 1
            call = calls.setdefault(piece.index, {"id": piece.id or "", "name": "", "arguments": ""})
            assert piece.id is None or call["id"] == piece.id
            call["name"] += (piece.function.name or "") if piece.function else ""
            call["arguments"] += (piece.function.arguments or "") if piece.function else ""
    expected = whole.choices[0].message.tool_calls or []
    assert [calls[i]["name"] for i in sorted(calls)] == [c.function.name for c in expected]  # type: ignore[union-attr]
    assert [json.loads(calls[i]["arguments"]) for i in sorted(calls)] == [
        json.loads(c.function.arguments)  # type: ignore[union-attr]
        for c in expected
    ]
    assert pieces > len(calls) and all(c["id"].startswith("call_") for c in calls.values())


def test_openai_client_raises_on_an_error_chunk_and_on_a_cut_stream(simulator):
    client = openai_sdk(simulator)
    messages: Any = [{"role": "user", "content": PROMPT}]
    simulator.add_fault("stream_error", provider="openai", after=3, times=1)
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True))
    simulator.add_fault("stream_cut", provider="openai", after=3, times=1)
    with pytest.raises((httpx.RemoteProtocolError, openai.APIConnectionError)):
        list(client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True))


def test_openai_refuses_stream_options_without_stream(simulator):
    with pytest.raises(openai.BadRequestError) as raised:
        openai_sdk(simulator).chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": PROMPT}],
            stream_options={"include_usage": True},
        )
    assert raised.value.body["param"] == "stream_options"  # type: ignore[index]
    answer = httpx.post(
        f"{simulator.base_urls()['openai']}/chat/completions",
        headers={"authorization": "Bearer k"},
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "stream": "yes"},
    )
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "stream"


def test_anthropic_client_reads_a_text_stream(simulator):
    client = anthropic_sdk(simulator)
    ask: Any = ANTHROPIC_ASK
    whole = client.messages.create(**ask)
    with client.messages.stream(**ask) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 2
    assert "".join(pieces) == final.content[0].text == whole.content[0].text  # type: ignore[union-attr]
    assert final.stop_reason == whole.stop_reason == "end_turn"
    assert final.usage.input_tokens == whole.usage.input_tokens
    assert final.usage.output_tokens == whole.usage.output_tokens > 0


def test_anthropic_client_reads_parallel_tool_use_blocks(simulator):
    client = anthropic_sdk(simulator)
    ask: Any = {
        "model": "claude-3-5-haiku-latest",
        "max_tokens": 300,
        "tools": ANTHROPIC_TOOLS,
        "messages": [{"role": "user", "content": "Use get_weather and get_time."}],
    }
    whole = client.messages.create(**ask)
    with client.messages.stream(**ask) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [(b.name, b.input) for b in final.content] == [(b.name, b.input) for b in whole.content]  # type: ignore[union-attr]
    assert [b.name for b in final.content] == ["get_weather", "get_time"]  # type: ignore[union-attr]


def test_anthropic_client_raises_on_an_overloaded_error_event(simulator):
    simulator.add_fault("stream_error", provider="anthropic", after=4)
    ask: Any = ANTHROPIC_ASK
    with pytest.raises(anthropic.APIStatusError) as raised, anthropic_sdk(simulator).messages.stream(**ask) as stream:
        list(stream.text_stream)
    assert "overloaded_error" in str(raised.value)


def gemini_url(sim: ProviderSimulator, query: str = "?alt=sse") -> str:
    return f"{sim.base_urls()['gemini']}/v1beta/models/gemini-2.0-flash:streamGenerateContent{query}"


GEMINI_BODY = {"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]}


def test_gemini_streams_sse_with_crlf_and_a_json_array_without_alt_sse(simulator):
    headers = {"x-goog-api-key": "k"}
    whole = httpx.post(
        f"{simulator.base_urls()['gemini']}/v1beta/models/gemini-2.0-flash:generateContent",
        headers=headers,
        json=GEMINI_BODY,
    ).json()
    with httpx.stream("POST", gemini_url(simulator), headers=headers, json=GEMINI_BODY) as answer:
        assert answer.headers["content-type"].startswith("text/event-stream")
        assert answer.headers["transfer-encoding"] == "chunked"
        raw = answer.read().decode()
    assert raw.endswith("\r\n\r\n")
    chunks = [json.loads(line[6:]) for line in raw.split("\r\n") if line.startswith("data: ")]
    array = httpx.post(gemini_url(simulator, ""), headers=headers, json=GEMINI_BODY).json()
    for sequence in (chunks, array):
        assert len(sequence) > 2
        text = "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in sequence)
        assert text == whole["candidates"][0]["content"]["parts"][0]["text"]
        assert [c["candidates"][0].get("finishReason") for c in sequence][-1] == "STOP"
        assert sequence[-1]["usageMetadata"] == whole["usageMetadata"]


def test_stream_faults_come_from_markers_headers_and_the_control_api(simulator):
    def stream_of(prompt: str, **headers: str) -> str:
        body = {"contents": [{"role": "user", "parts": [{"text": prompt}]}]}
        with httpx.stream(
            "POST", gemini_url(simulator), headers={"x-goog-api-key": "k", **headers}, json=body
        ) as answer:
            try:
                return answer.read().decode()
            except httpx.RemoteProtocolError:
                return "cut"

    assert stream_of("[[sim:fault=stream_cut,after=2]] hi") == "cut"
    assert '"UNAVAILABLE"' in stream_of("hi", **{"x-sim-fault": "stream_error", "x-sim-after": "1"})
    control = httpx.post(f"{simulator.url}/_sim/faults", json={"fault": "stream_malformed", "after": 1, "times": 1})
    assert control.status_code == 200
    assert '"text": "trunc' in stream_of("hi")
    assert httpx.post(f"{simulator.url}/_sim/faults", json={"fault": "stream_cut", "after": -1}).status_code == 400
    records = [c["stream"] for c in simulator.calls("gemini")]
    assert [r["outcome"] for r in records] == ["cut", "error_event", "malformed"]


def test_chunk_delay_from_the_control_api_and_a_header(simulator):
    assert httpx.post(f"{simulator.url}/_sim/config", json={"chunk_delay_ms": 60}).status_code == 200
    started = time.monotonic()
    with httpx.stream("POST", gemini_url(simulator), headers={"x-goog-api-key": "k"}, json=GEMINI_BODY) as answer:
        arrivals = [time.monotonic() - started for _ in answer.iter_raw()]
    assert len(arrivals) > 3 and arrivals[-1] - arrivals[0] >= 0.15  # chunks came apart, as sent
    started = time.monotonic()
    headers = {"x-goog-api-key": "k", "x-sim-chunk-delay-ms": "0"}
    httpx.post(gemini_url(simulator), headers=headers, json=GEMINI_BODY)
    assert time.monotonic() - started < 0.5


def test_async_openai_client_reads_the_compatible_servers_stream(simulator):
    async def run() -> tuple[str, str]:
        client = openai.AsyncOpenAI(base_url=simulator.base_urls()["compat"], api_key="sim-key", max_retries=0)
        messages: Any = [{"role": "user", "content": PROMPT}]
        whole = await client.chat.completions.create(model="local-llama", messages=messages)
        stream = await client.chat.completions.create(model="local-llama", messages=messages, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        await client.close()
        return text, whole.choices[0].message.content or ""

    text, whole = asyncio.run(run())
    assert text == whole and text.startswith("[sim compat/")
