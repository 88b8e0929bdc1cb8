"""Streams that do not simply run to their end, over the local stack (issue 14): a provider that cuts or
stalls its stream mid-way (an explicit error event, never ``[DONE]``, a truncated attempt in the ledger),
a cached stream replayed, chunks reaching the client while the provider is still generating, and a
caller who leaves (the provider call stops, the ledger says cancelled).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from llm_gateway import wiring
from local.simulator import ProviderSimulator
from local.stack import LocalStack
from tests.support.accounting import api_key_for, ledger_items, unique
from tests.support.clients import openai_client
from tests.support.sse import CHAT, DONE, MODELS, parse_events, prompt, read_stream
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_real_aws")]

KEY = "key-a"  # tests/conftest.py


@pytest.fixture
def client(local_stack: LocalStack) -> openai.OpenAI:
    return openai_client(local_stack, KEY)


@pytest.fixture
def api(local_stack: LocalStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=local_stack.api_url or "", timeout=60, headers={"x-api-key": KEY}) as http:
        yield http


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Change the functions' environment for one test; the gateway re-reads it before and after."""
    wiring.reset()
    yield monkeypatch
    monkeypatch.undo()
    wiring.reset()


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def streamed_calls(simulator: ProviderSimulator, provider: str) -> list[dict[str, Any]]:
    return [c for c in simulator.calls(provider) if c.get("stream")]


# --------------------------------------------------------------------------- broken mid-way


# (provider, fault, events before it, the attempt's error code in the ledger). Anthropic's first three
# events (message_start, content_block_start, ping) carry no text: a cut there is before the first event,
# retried and fallen back from, so its cut comes after two text deltas.
BROKEN = [
    ("openai", "stream_cut", 3, "provider_connection_error"),
    ("anthropic", "stream_cut", 5, "provider_connection_error"),
    ("anthropic", "stream_error", 5, "provider_unavailable"),
    ("gemini", "stream_malformed", 3, "malformed_response"),
    ("bedrock", "stream_cut", 3, "provider_connection_error"),
]


@pytest.mark.parametrize(("provider", "fault", "after", "code"), BROKEN)
def test_a_stream_broken_mid_way_raises_in_the_client(
    local_stack: LocalStack, simulator: ProviderSimulator, provider: str, fault: str, after: int, code: str
) -> None:
    simulator.add_fault(fault, provider=provider, after=after)
    tenant = unique()
    received: list[str] = []
    with api_key_for(local_stack, tenant) as key:
        stream = openai_client(local_stack, key).chat.completions.create(
            model=MODELS[provider], messages=user(prompt()), stream=True
        )
        with pytest.raises(openai.APIError) as caught:
            for chunk in stream:
                received.extend(c.delta.content or "" for c in chunk.choices)
    assert "".join(received).startswith("[sim ")  # some content came before the failure
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "stream_interrupted"
    [call] = streamed_calls(simulator, provider)
    assert call["stream"]["outcome"] in ("cut", "malformed", "error_event")
    [record] = ledger_items(local_stack, tenant)
    assert record["outcome"]["S"] == "truncated" and record["provider"]["S"] == provider
    assert int(record["output_tokens"]["N"]) > 0  # the tokens seen are counted
    assert record["error_code"]["S"] == code  # what the provider did; the caller was told stream_interrupted


def test_the_raw_bytes_of_a_cut_stream_end_with_the_error_event(
    api: httpx.Client, simulator: ProviderSimulator
) -> None:
    simulator.add_fault("stream_cut", provider="openai", after=3)
    stream = read_stream(api, CHAT, {"model": MODELS["openai"], "messages": user(prompt()), "stream": True})
    assert stream.status == 200 and stream.error is None  # the gateway ends its answer properly, with the error
    assert b"[DONE]" not in stream.raw and DONE not in stream.data
    *chunks, last = stream.chunks()
    assert any(c["choices"][0]["delta"].get("content") for c in chunks)
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)  # no finish_reason before the error
    error = last["error"]
    assert error["code"] == "stream_interrupted" and error["message"] and error["type"]
    assert set(last) == {"error"}


def test_a_stalled_stream_ends_at_the_idle_timeout(
    local_stack: LocalStack, simulator: ProviderSimulator, environment: pytest.MonkeyPatch
) -> None:
    environment.setenv("GATEWAY_STREAM_IDLE_TIMEOUT", "0.5")
    simulator.add_fault("stream_stall", provider="anthropic", after=5, delay_s=10)
    tenant = unique()
    received: list[str] = []
    started = time.monotonic()
    with api_key_for(local_stack, tenant) as key:
        stream = openai_client(local_stack, key).chat.completions.create(
            model=MODELS["anthropic"], messages=user(prompt()), stream=True
        )
        with pytest.raises(openai.APIError) as caught:
            for chunk in stream:
                received.extend(c.delta.content or "" for c in chunk.choices)
    assert time.monotonic() - started < 5  # the idle timeout, not the stall's 10 s
    assert "".join(received).startswith("[sim ")
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "stream_interrupted"
    [record] = ledger_items(local_stack, tenant)
    assert record["outcome"]["S"] == "truncated" and int(record["output_tokens"]["N"]) > 0
    # The gateway hung up on the stalled provider, which sees its client gone well before the 10 s.
    call = wait_for(lambda: [c for c in streamed_calls(simulator, "anthropic") if "outcome" in c["stream"]], timeout=8)
    assert call[0]["stream"]["outcome"] == "client_closed"


# --------------------------------------------------------------------------- the cache


def test_a_cached_stream_is_replayed_as_a_stream(
    local_stack: LocalStack, api: httpx.Client, simulator: ProviderSimulator
) -> None:
    body = {"model": MODELS["openai"], "messages": user(prompt()), "temperature": 0, "stream": True}
    first = read_stream(api, CHAT, body)
    second = read_stream(api, CHAT, body)
    assert first.headers["x-gateway-cache"] == "miss" and second.headers["x-gateway-cache"] == "hit"
    assert second.headers["content-type"].startswith("text/event-stream") and second.data[-1] == DONE

    def text(chunks: list[dict[str, Any]]) -> str:
        return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])

    assert text(second.chunks()) == text(first.chunks()) and text(first.chunks()).startswith("[sim openai/")
    assert second.chunks()[-1]["x_gateway"]["cached"] is True
    assert first.chunks()[-1]["x_gateway"]["cached"] is False
    assert len(simulator.calls("openai")) == 1

    chunks = list(openai_client(local_stack, KEY).chat.completions.create(**{**body, "stream": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text(first.chunks())
    assert len(simulator.calls("openai")) == 1


# --------------------------------------------------------------------------- pass-through timing


def test_the_first_chunk_arrives_while_the_provider_is_still_generating(
    client: openai.OpenAI, simulator: ProviderSimulator
) -> None:
    simulator.set_chunk_delay(150)
    started = time.monotonic()
    arrivals: list[float] = []
    stream = client.chat.completions.create(model=MODELS["openai"], messages=user(prompt()), stream=True)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - started)
    total = time.monotonic() - started
    assert len(arrivals) >= 10  # enough pieces for the delay to add up
    assert total >= 0.15 * (len(arrivals) - 1)
    assert arrivals[0] < 0.4 * total, f"first content after {arrivals[0]:.2f}s of {total:.2f}s: buffered?"
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert sorted(gaps)[len(gaps) // 2] > 0.08  # the pieces arrive spread out, as generated


# --------------------------------------------------------------------------- the caller leaves


def test_a_caller_who_leaves_stops_the_provider_call(local_stack: LocalStack, simulator: ProviderSimulator) -> None:
    simulator.set_chunk_delay(300)
    tenant = unique()
    body = {"model": MODELS["openai"], "messages": user(prompt()), "stream": True}
    with api_key_for(local_stack, tenant) as key, httpx.Client(base_url=local_stack.api_url or "", timeout=30) as http:
        with http.stream("POST", CHAT, json=body, headers={"x-api-key": key}) as response:
            assert response.status_code == 200
            lines = (line for line in response.iter_lines())
            events = parse_events(lines)
            first, second = next(events), next(events)
            assert json.loads(first.data)["choices"][0]["delta"]["role"] == "assistant"
            assert json.loads(second.data)["choices"][0]["delta"]["content"]
        left = time.monotonic()

    def provider_saw_it_go() -> list[dict[str, Any]]:
        return [c for c in streamed_calls(simulator, "openai") if c["stream"].get("outcome") == "client_closed"]

    [call] = wait_for(provider_saw_it_go, timeout=5, what="the simulator to see the gateway hang up")
    assert time.monotonic() - left < 5
    assert call["stream"]["events_sent"] < 8  # stopped early, not read to the end
    [record] = wait_for(lambda: ledger_items(local_stack, tenant), timeout=5, what="the cancelled attempt")
    assert record["outcome"]["S"] == "cancelled" and record["provider"]["S"] == "openai"
