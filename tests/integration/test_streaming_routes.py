"""The streaming routes over the local stack (issue 14), beside the streams themselves: API Gateway picks
the transfer mode per route, so non-streamed requests on ``/v1/chat/completions`` and ``/v1/completions``
go through the streaming integration too and must answer exactly as the buffered function does; errors
before the first byte are JSON errors with their status, never an event stream; the native route streams
its own ``start`` / ``delta`` / ``tool_call`` / ``done`` events.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from local.simulator import ProviderSimulator
from local.stack import LocalStack, api_gateway_event, http_response
from tests.support.clients import openai_client
from tests.support.sse import CHAT, MODELS, NATIVE, prompt, read_stream

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_real_aws")]

KEY, TENANT = "key-a", "tenant-a"  # tests/conftest.py
# What differs between two answers to the same request: ids, clocks and timings.
VOLATILE = {"id", "created", "latency_ms", "duration_ms"}
GATEWAY_HEADERS = (
    "x-gateway-provider",
    "x-gateway-model",
    "x-gateway-cost-usd",
    "x-gateway-attempts",
    "x-gateway-cache",
)
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    },
    {"type": "function", "function": {"name": "get_time", "description": "The time now"}},
]


@pytest.fixture
def api(local_stack: LocalStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=local_stack.api_url or "", timeout=60, headers={"x-api-key": KEY}) as http:
        yield http


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def stable(value: Any) -> Any:
    """``value`` without what changes from one answer to the next."""
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


def buffered_answer(stack: LocalStack, path: str, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    """The same request answered by the buffered ``CompletionFunction`` (the managed runtime's path: the
    handler's proxy dict, as API Gateway's buffered integration turns it into a response)."""
    match = stack.routes.match("POST", path)
    assert match is not None
    event = api_gateway_event(
        match=match,
        method="POST",
        path=path,
        query="",
        headers=[("content-type", "application/json"), ("x-api-key", KEY)],
        body=json.dumps(body).encode(),
        source_ip="127.0.0.1",
        stage="v1",
        api_key=KEY,
        tenant=TENANT,
    )
    status, headers, raw = http_response(stack.invoke("CompletionFunction", event))
    return status, {k.lower(): v for k, v in headers}, raw


# --------------------------------------------------------------------------- non-streamed, as before


@pytest.mark.parametrize("path", [CHAT, NATIVE])
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_non_streamed_answer_on_a_streaming_route_is_the_buffered_answer(
    local_stack: LocalStack, api: httpx.Client, path: str, provider: str
) -> None:
    body = {"model": MODELS[provider], "messages": user(prompt()), "tools": TOOLS}
    if path == CHAT:
        body["messages"] = user(prompt("What is the weather in Oslo? Use get_weather"))
    streamed_route = api.post(path, json=body)
    status, headers, raw = buffered_answer(local_stack, path, body)
    assert streamed_route.status_code == status == 200
    assert streamed_route.headers["content-type"] == headers["content-type"] == "application/json"
    for name in GATEWAY_HEADERS:
        assert streamed_route.headers[name] == headers[name], name
    assert streamed_route.headers["x-request-id"] and headers["x-request-id"]
    assert stable(streamed_route.json()) == stable(json.loads(raw))
    assert "data:" not in streamed_route.text


def test_a_non_streamed_error_on_a_streaming_route_is_the_buffered_error(
    local_stack: LocalStack, api: httpx.Client, simulator: ProviderSimulator
) -> None:
    simulator.add_fault("bad_request", provider="openai")
    body = {"model": MODELS["openai"], "messages": user(prompt())}
    streamed_route = api.post(CHAT, json=body)
    status, headers, raw = buffered_answer(local_stack, CHAT, body)
    assert streamed_route.status_code == status and status >= 400
    assert streamed_route.headers["content-type"] == headers["content-type"] == "application/json"
    assert streamed_route.json() == json.loads(raw)


# --------------------------------------------------------------------------- errors before the first byte


def _assert_json_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code and error["message"]


@pytest.mark.parametrize("path", [CHAT, NATIVE])
def test_errors_before_the_first_byte_are_json_errors(
    local_stack: LocalStack, api: httpx.Client, simulator: ProviderSimulator, path: str
) -> None:
    messages = user(prompt())
    _assert_json_error(
        api.post(path, json={"model": "no-such-model", "messages": messages, "stream": True}), 404, "model_not_found"
    )
    anonymous = httpx.post(
        f"{local_stack.api_url}{path}", json={"model": MODELS["openai"], "messages": messages, "stream": True}
    )
    _assert_json_error(anonymous, 401, "missing_api_key")
    not_json = api.post(path, content=b'{"stream": true, "model": ', headers={"content-type": "application/json"})
    _assert_json_error(not_json, 400, "invalid_request")
    no_messages = api.post(path, json={"model": MODELS["openai"], "stream": True})
    _assert_json_error(no_messages, 400, "invalid_request")
    assert simulator.calls() == []


def test_every_provider_failing_before_the_first_byte_is_a_json_error(
    api: httpx.Client, simulator: ProviderSimulator
) -> None:
    simulator.add_fault("auth")  # every provider refuses the gateway's key: nothing to fall back to
    response = api.post(CHAT, json={"model": MODELS["openai"], "messages": user(prompt()), "stream": True})
    assert response.status_code >= 400 and response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] and "data:" not in response.text


@pytest.mark.parametrize(
    ("extra", "param"),
    [({"n": 2}, "n"), ({"logprobs": True}, "logprobs"), ({"stream_options": {"include_obfuscation": True}}, None)],
)
def test_what_a_stream_cannot_carry_is_a_400(
    local_stack: LocalStack, simulator: ProviderSimulator, extra: dict[str, Any], param: str | None
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client(local_stack, KEY).chat.completions.create(
            model=MODELS["openai"], messages=user(prompt()), stream=True, extra_body=extra
        )
    error = caught.value.body
    assert isinstance(error, dict) and error["code"] == "invalid_request" and error["message"]
    if param is not None:
        assert error["param"] == param
    assert simulator.calls() == []


def test_stream_options_without_stream_is_a_400(local_stack: LocalStack, simulator: ProviderSimulator) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client(local_stack, KEY).chat.completions.create(
            model=MODELS["openai"], messages=user(prompt()), stream_options={"include_usage": True}
        )
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "stream_options"
    assert simulator.calls() == []


# --------------------------------------------------------------------------- the native event shape


@pytest.mark.parametrize("provider", ["openai", "gemini"])
def test_the_native_route_streams_start_deltas_and_done(api: httpx.Client, provider: str) -> None:
    body = {"model": MODELS[provider], "messages": user(prompt())}
    expected = api.post(NATIVE, json=body).json()
    stream = read_stream(api, NATIVE, {**body, "stream": True})
    assert stream.status == 200 and stream.error is None
    assert stream.headers["content-type"] == "text/event-stream; charset=utf-8"
    names = [e.event for e in stream.events]
    assert names[0] == "start" and names[-1] == "done" and set(names[1:-1]) == {"delta"} and len(names) >= 5
    start, done = stream.events[0].json(), stream.events[-1].json()
    assert start["provider"] == provider and start["model"] == MODELS[provider] and start["cached"] is False
    assert done["id"] == start["id"]
    text = "".join(e.json()["text"] for e in stream.events[1:-1])
    assert text == done["content"] == expected["content"]
    assert done["usage"]["input_tokens"] > 0 and done["usage"]["output_tokens"] > 0
    assert done["cost_usd"] > 0 and done["usage_estimated"] is False
    assert [a["outcome"] for a in done["attempts"]] == ["success"]
    assert stable({k: v for k, v in done.items() if k != "usage_estimated"}) == stable(expected)
    assert b"[DONE]" not in stream.raw


def test_the_native_route_streams_tool_calls(api: httpx.Client) -> None:
    body = {"model": MODELS["anthropic"], "messages": user(prompt("Use get_weather and get_time")), "tools": TOOLS}
    expected = api.post(NATIVE, json=body).json()
    stream = read_stream(api, NATIVE, {**body, "stream": True})
    pieces = [e.json() for e in stream.events if e.event == "tool_call"]
    calls: dict[int, dict[str, Any]] = {}
    for piece in pieces:
        if piece["index"] not in calls:
            assert piece["id"] and piece["name"]
            calls[piece["index"]] = {"id": piece["id"], "name": piece["name"], "arguments": ""}
        else:
            assert piece["id"] is None and piece["name"] is None
        calls[piece["index"]]["arguments"] += piece["arguments"]
    done = stream.events[-1]
    assert done.event == "done"
    result = done.json()
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == [
        (c["function"]["name"], json.loads(c["function"]["arguments"])) for c in expected["tool_calls"]
    ]
    assert [c["name"] for c in calls.values()] == ["get_weather", "get_time"]
    assert [c["id"] for c in calls.values()] == [c["id"] for c in result["tool_calls"]]
    assert result["finish_reason"] == expected["finish_reason"] == "tool_calls"


def test_a_native_stream_broken_mid_way_ends_with_an_error_event(
    api: httpx.Client, simulator: ProviderSimulator
) -> None:
    simulator.add_fault("stream_cut", provider="gemini", after=3)
    stream = read_stream(api, NATIVE, {"model": MODELS["gemini"], "messages": user(prompt()), "stream": True})
    names = [e.event for e in stream.events]
    assert names[0] == "start" and "delta" in names and names[-1] == "error" and "done" not in names
    assert stream.events[-1].json()["error"]["code"] == "stream_interrupted"
