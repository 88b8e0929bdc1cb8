"""The completion function over real sockets: the API Gateway bridge, the provider simulator, moto.

Bad input on either route is a 4xx with a code and a message (never a 500); the official ``openai``
client gets typed answers and errors; a slow or failing provider falls back well before API Gateway's
29 seconds; provider keys are re-read when their cache expires; a provider answer trickling in slowly
cannot outlast the call's timeout.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import openai
import pytest

from llm_gateway import aws, wiring
from llm_gateway.errors import ProviderTimeoutError
from llm_gateway.models import Message, ProviderRequest
from llm_gateway.providers.openai import OpenAIProvider
from local.simulator import MESSAGE_OVERHEAD_TOKENS, ProviderSimulator
from local.stack import LocalStack
from tests.support.clients import openai_client

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_real_aws")]

KEY = "key-a"  # tests/conftest.py: key-a -> tenant-a
CHAT = "/v1/chat/completions"
NATIVE = "/v1/completions"
ROUTES = (CHAT, NATIVE)


@pytest.fixture
def api(local_stack: LocalStack) -> Iterator[httpx.Client]:
    assert local_stack.api_url
    with httpx.Client(base_url=local_stack.api_url, timeout=60, headers={"x-api-key": KEY}) as client:
        yield client


@pytest.fixture
def client(local_stack: LocalStack) -> openai.OpenAI:
    return openai_client(local_stack, KEY)


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Change the functions' environment for one test; the gateway re-reads it before and after."""
    wiring.reset()
    yield monkeypatch
    monkeypatch.undo()
    wiring.reset()


def prompt(text: str = "Say hello") -> str:
    return f"{text} ({uuid.uuid4().hex[:8]})"  # unique: never a cache hit


def nested(levels: int) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "object"}
    for _ in range(levels - 1):
        node = {"type": "object", "properties": {"a": node}}
    return node


def body_for(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt()}]}
    return {**base, **fields}


def schema_format(route: str, schema: Any, name: str = "thing") -> dict[str, Any]:
    if route == CHAT:
        return {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}
    return {"type": "json_schema", "name": name, "schema": schema}


# --------------------------------------------------------------------------- bad input, both routes

# (case, body or raw bytes per route, expected status, code, param on the chat route or None)
Case = tuple[str, Any, int, str, str | None]


def bad_inputs(route: str) -> list[Case]:
    user = {"role": "user", "content": "hi"}
    return [
        ("invalid JSON", b'{"model": "gpt-4o-mini", "messages": [', 400, "invalid_request", "body"),
        ("non-object body", b'["gpt-4o-mini"]', 400, "invalid_request", "body"),
        ("empty body", b"", 400, "invalid_request", "body"),
        (
            "invalid UTF-8",
            b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "\xff"}]}',
            400,
            "invalid_request",
            "body",
        ),
        ("wrong types", body_for(messages="hello"), 400, "invalid_request", "messages"),
        ("temperature type", body_for(temperature="warm"), 400, "invalid_request", "temperature"),
        ("unknown model", body_for(model="gpt-9-imaginary"), 404, "model_not_found", None),
        ("empty messages", body_for(messages=[]), 400, "invalid_request", "messages"),
        (
            "oversized body",
            body_for(messages=[{"role": "user", "content": "x" * 1_100_000}]),
            413,
            "payload_too_large",
            None,
        ),
        (
            "bogus role",
            body_for(messages=[{"role": "bogus", "content": "x"}]),
            400,
            "invalid_request",
            "messages.0.role",
        ),
        (
            "tool result without a call",
            body_for(messages=[user, {"role": "tool", "content": "42", "tool_call_id": "c1"}]),
            400,
            "invalid_request",
            "messages.1.tool_call_id",
        ),
        (
            "integer content",
            body_for(messages=[{"role": "user", "content": 7}]),
            400,
            "invalid_request",
            "messages.0.content",
        ),
        ("missing content", body_for(messages=[{"role": "user"}]), 400, "invalid_request", "messages.0.content"),
        (
            "object content",
            body_for(messages=[{"role": "user", "content": {"t": 1}}]),
            400,
            "invalid_request",
            "messages.0.content",
        ),
        ("five stops", body_for(stop=["a", "b", "c", "d", "e"]), 400, "invalid_request", "stop"),
        (
            "bad schema name",
            body_for(response_format=schema_format(route, {"type": "object"}, "bad name!")),
            400,
            "invalid_request",
            "response_format.json_schema.name",
        ),
        (
            "schema 300 levels deep",
            body_for(response_format=schema_format(route, nested(300))),
            400,
            "invalid_request",
            "body",
        ),
        (
            "schema 80 levels deep",
            body_for(response_format=schema_format(route, nested(40))),
            400,
            "invalid_schema",
            "response_format.json_schema.schema",
        ),
    ]


def chat_only_inputs() -> list[Case]:
    image = {"type": "image_url", "image_url": "https://example.com/cat.png"}
    return [
        ("unknown tier", body_for(model="tier:ultra"), 400, "invalid_request", "model"),
        (
            "image_url as a string",
            body_for(messages=[{"role": "user", "content": [image]}]),
            400,
            "invalid_request",
            "messages.0.content.0.image_url",
        ),
        (
            "function role",
            body_for(messages=[{"role": "function", "name": "f", "content": "1"}]),
            400,
            "invalid_request",
            "messages.0.role",
        ),
        (
            "non-function tool",
            body_for(tools=[{"type": "web_search"}]),
            400,
            "invalid_request",
            "tools.0.type",
        ),
    ]


CASES = [(route, *case) for route in ROUTES for case in bad_inputs(route)] + [(CHAT, *c) for c in chat_only_inputs()]


@pytest.mark.parametrize(
    ("route", "case", "body", "status", "code", "param"),
    CASES,
    ids=[f"{'chat' if r == CHAT else 'native'}-{c}" for r, c, *_ in CASES],
)
def test_bad_input_is_a_4xx_with_a_code_and_a_message(
    api: httpx.Client,
    simulator: ProviderSimulator,
    route: str,
    case: str,
    body: Any,
    status: int,
    code: str,
    param: str | None,
) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = api.post(route, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    if route == CHAT:  # the OpenAI error shape, which the openai client turns into typed exceptions
        assert error["type"] == ("invalid_request_error" if status < 500 else "api_error")
        if param is not None:
            assert error["param"] == param
    elif param is not None and param != "body" and not param.startswith("response_format"):
        assert error["details"]["param"] == param
    assert simulator.calls() == []  # refused before any provider was called


@pytest.mark.parametrize("route", ["/v1/extractions", "/v1/summaries", "/v1/jobs"])
def test_other_routes_refuse_a_body_that_is_not_utf8(api: httpx.Client, route: str) -> None:
    response = api.post(route, content=b'{"text": "\xff"}', headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_request"
    assert "UTF-8" in response.json()["error"]["message"]


# --------------------------------------------------------------------------- the official openai client


def test_openai_client_gets_a_chat_completion_with_usage(client: openai.OpenAI, simulator: ProviderSimulator) -> None:
    text = prompt("Name a colour")
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": text}])
    answer = completion.choices[0].message.content
    assert answer and completion.choices[0].finish_reason == "stop"
    usage = completion.usage
    assert usage is not None
    # The simulator's documented accounting, passed through by the gateway.
    assert usage.prompt_tokens == math.ceil(len(text) / 4) + MESSAGE_OVERHEAD_TOKENS
    assert usage.completion_tokens == math.ceil(len(answer) / 4)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens == 0
    extra = completion.model_extra or {}
    assert extra["x_gateway"]["provider"] == "openai"
    assert [a["outcome"] for a in extra["x_gateway"]["attempts"]] == ["success"]
    assert len(simulator.calls("openai")) == 1


def test_openai_client_gets_typed_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-9-imaginary", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.status_code == 404
    assert isinstance(missing.value.body, dict) and missing.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "tool", "content": "42", "tool_call_id": "call_1"}],
        )
    assert isinstance(bad.value.body, dict)
    assert (bad.value.body["code"], bad.value.body["param"]) == ("invalid_request", "messages.0.tool_call_id")
    assert "must answer a tool call" in bad.value.body["message"]


def test_openai_client_gets_a_rate_limit_error_when_every_provider_is_limited(
    client: openai.OpenAI, simulator: ProviderSimulator
) -> None:
    simulator.add_fault("rate_limit", retry_after=30)  # longer than the gateway waits: fall back at once
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": prompt()}])
    assert isinstance(info.value, openai.APIStatusError) and info.value.status_code == 429
    assert isinstance(info.value.body, dict) and info.value.body["code"] == "rate_limited"
    assert info.value.response.headers["retry-after"] == "30"
    assert {c["provider"] for c in simulator.calls()} >= {"openai", "anthropic", "gemini"}


@pytest.mark.parametrize(("fault", "code"), [("rate_limit", "rate_limited"), ("overloaded", "provider_unavailable")])
def test_openai_client_sees_a_fallback_with_both_attempts(
    client: openai.OpenAI, simulator: ProviderSimulator, fault: str, code: str
) -> None:
    simulator.add_fault(fault, provider="openai", retry_after=30)
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": prompt()}])
    gateway = (completion.model_extra or {})["x_gateway"]
    attempts = gateway["attempts"]
    assert attempts[0]["provider"] == "openai" and attempts[0]["outcome"] == "error"
    assert attempts[0]["error_code"] == code
    assert attempts[-1]["outcome"] == "success" and attempts[-1]["provider"] != "openai"
    assert gateway["provider"] == attempts[-1]["provider"]
    assert completion.choices[0].message.content
    assert len(simulator.calls("openai")) == sum(1 for a in attempts if a["provider"] == "openai")


# --------------------------------------------------------------------------- deadlines


def test_a_hung_provider_falls_back_before_api_gateway_gives_up(
    api: httpx.Client, simulator: ProviderSimulator
) -> None:
    """The default settings: a 60 s function and 30 s per call would have waited on openai past 29 s (504)."""
    simulator.add_fault("slow", provider="openai", delay_s=45)
    body = body_for(fallback=["claude-3-5-haiku-latest"])
    response = api.post(NATIVE, json=body)
    assert response.status_code == 200, response.text  # the bridge answers 504 at 29 s, like API Gateway
    attempts = response.json()["attempts"]
    assert [(a["provider"], a["outcome"], a["error_code"]) for a in attempts] == [
        ("openai", "error", "provider_timeout"),
        ("anthropic", "success", None),
    ]


class _DripHandler(BaseHTTPRequestHandler):
    """An OpenAI-shaped answer sent one byte at a time: each read is quick, the whole takes seconds."""

    total_s = 5.0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        reply = {
            "id": "chatcmpl-drip",
            "object": "chat.completion",
            "model": "gpt-4o-mini",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "slow " * 20}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 25},
        }
        body = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        for i in range(len(body)):
            try:
                self.wfile.write(body[i : i + 1])
                self.wfile.flush()
            except OSError:
                return  # the client gave up
            time.sleep(self.total_s / len(body))

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def drip_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _DripHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_a_slow_drip_answer_cannot_outlast_the_call_timeout(drip_server: str) -> None:
    provider = OpenAIProvider(base_url=drip_server, api_key="k")
    request = ProviderRequest(model="gpt-4o-mini", messages=[Message(role="user", content="hi")], max_tokens=50)

    async def call() -> Any:
        async with httpx.AsyncClient() as http:
            return await provider.complete(request, client=http, timeout_s=1.0)

    # httpx's read timeout (1 s) restarts with every byte: without a bound on the whole call this
    # answer arrives complete after about 5 s and is returned.
    with pytest.raises(ProviderTimeoutError, match=r"did not answer within 1\.0s"):
        asyncio.run(call())


# --------------------------------------------------------------------------- provider keys


def _keys_from_secret(aws_clients: Any, environment: pytest.MonkeyPatch, value: dict[str, str]) -> str:
    """Take openai's key from a new secret instead of the environment."""
    name = f"provider-keys-{uuid.uuid4().hex[:8]}"
    aws_clients("secretsmanager").create_secret(Name=name, SecretString=json.dumps(value))
    environment.delenv("OPENAI_API_KEY", raising=False)
    environment.setenv("PROVIDER_KEYS_SECRET", name)
    wiring.reset()
    return name


def _openai_only(api: httpx.Client) -> httpx.Response:
    return api.post(NATIVE, json=body_for(fallback=[]))


def test_a_key_put_into_the_secret_after_a_cold_start_is_used_once_the_cache_expires(
    api: httpx.Client, aws_clients: Any, environment: pytest.MonkeyPatch, simulator: ProviderSimulator
) -> None:
    secret = _keys_from_secret(aws_clients, environment, {"openai": ""})
    before = _openai_only(api)
    assert before.status_code == 400 and "no provider is configured" in before.json()["error"]["message"]

    aws_clients("secretsmanager").put_secret_value(SecretId=secret, SecretString=json.dumps({"openai": "sim-key"}))
    assert _openai_only(api).status_code == 400  # still cached: no secret read per request
    aws.secrets().clear_cache()  # as when KEY_CACHE_SECONDS have passed
    after = _openai_only(api)
    assert after.status_code == 200, after.text
    assert after.json()["provider"] == "openai"
    assert len(simulator.calls("openai")) == 1


def test_an_unreadable_secret_is_a_retryable_503(
    api: httpx.Client, local_stack: LocalStack, environment: pytest.MonkeyPatch, simulator: ProviderSimulator
) -> None:
    environment.delenv("OPENAI_API_KEY", raising=False)
    environment.setenv("PROVIDER_KEYS_SECRET", f"no-such-secret-{uuid.uuid4().hex[:8]}")
    wiring.reset()
    response = _openai_only(api)
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "provider_keys_unavailable"
    chat = api.post(CHAT, json=body_for())
    assert chat.status_code == 503 and chat.json()["error"]["type"] == "api_error"
    with pytest.raises(Exception) as raised:  # Step Functions sees a named, retryable error
        local_stack.invoke("completion", {"messages": [{"role": "user", "content": "hi"}]})
    assert type(raised.value).__name__ == "ProviderKeysUnavailableError"
    assert json.loads(str(raised.value))["retryable"] is True
    assert simulator.calls() == []


def test_a_warm_gateway_keeps_its_keys_when_a_refresh_fails(aws_clients: Any, environment: pytest.MonkeyPatch) -> None:
    secret = _keys_from_secret(aws_clients, environment, {"openai": "sim-key"})
    first = wiring.services().gateway()
    assert "openai" in first.providers
    aws_clients("secretsmanager").delete_secret(SecretId=secret, ForceDeleteWithoutRecovery=True)
    aws.secrets().clear_cache()  # the cached keys expire: the next request reads the secret again
    assert wiring.services().gateway() is first  # a Secrets Manager outage does not fail warm requests


# --------------------------------------------------------------------------- direct invocation


@pytest.mark.parametrize("tenant", [42, "", ["a"], "x" * 300, "tab\there"])
def test_direct_invocation_validates_the_tenant(
    local_stack: LocalStack, simulator: ProviderSimulator, tenant: Any
) -> None:
    with pytest.raises(Exception) as raised:
        local_stack.invoke("completion", {"tenant": tenant, "messages": [{"role": "user", "content": "hi"}]})
    assert type(raised.value).__name__ == "InvalidRequestError"
    assert json.loads(str(raised.value))["details"]["param"] == "tenant"
    assert simulator.calls() == []


def test_direct_invocation_refuses_an_over_deep_event(local_stack: LocalStack) -> None:
    event = {
        "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_schema", "schema": nested(300)},
    }
    with pytest.raises(Exception) as raised:
        local_stack.invoke("completion", event)
    assert type(raised.value).__name__ == "InvalidRequestError"


def test_log_lines_carry_the_request_id(local_stack: LocalStack) -> None:
    import sys

    context = local_stack.new_context("completion")
    local_stack.invoke("completion", {"tenant": "t-logs", "messages": [{"role": "user", "content": prompt()}]}, context)
    module = sys.modules["gateway_fn_completion"]
    assert module.logger.get_current_keys()["function_request_id"] == context.aws_request_id


# --------------------------------------------------------------------------- local harness


def test_make_run_explains_local_api_keys_without_a_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import logging
    import signal

    from local import run

    monkeypatch.setattr(signal, "signal", lambda *args: None)  # keep pytest's own handlers
    monkeypatch.setattr(logging.getLogger("local"), "level", logging.getLogger("local").level)
    monkeypatch.setenv("LOCAL_API_KEYS", ":tenant-a")
    monkeypatch.setenv("LOCAL_PORT", "0")
    assert run.main([]) == 2  # before anything starts
    assert "LOCAL_API_KEYS names no API key" in capsys.readouterr().err
