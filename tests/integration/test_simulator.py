"""The provider simulator over real sockets: wire shapes, faults, scripting and the control API."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from local.simulator import MESSAGE_OVERHEAD_TOKENS, ProviderSimulator, schema_instance

pytestmark = pytest.mark.integration

PROVIDERS = ("openai", "anthropic", "gemini")
ALL_PROVIDERS = (*PROVIDERS, "compat")


@pytest.fixture(scope="module")
def sim() -> Iterator[ProviderSimulator]:
    with ProviderSimulator() as simulator:
        yield simulator


@pytest.fixture(autouse=True)
def _fresh(sim: ProviderSimulator) -> None:
    sim.reset()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as c:
        yield c


# --------------------------------------------------------------------------- request helpers


def ask(
    sim: ProviderSimulator,
    client: httpx.Client,
    provider: str,
    prompt: str = "Hello there",
    *,
    model: str | None = None,
    max_tokens: int | None = None,
    system: str | None = None,
    key: str | None = "test-key",
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
    timeout: float | None = None,
) -> httpx.Response:
    """Send a minimal chat request in ``provider``'s native format."""
    base = sim.base_urls()[provider]
    hdrs = dict(headers or {})
    kwargs: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
    if provider in ("openai", "compat"):
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        body: dict[str, Any] = {"model": model or "gpt-4o-mini", "messages": messages}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if key is not None:
            hdrs["Authorization"] = f"Bearer {key}"
        body.update(extra or {})
        return client.post(f"{base}/chat/completions", json=body, headers=hdrs, **kwargs)
    if provider == "anthropic":
        body = {
            "model": model or "claude-3-5-haiku-latest",
            "max_tokens": max_tokens or 1024,
            "messages": [{"role": "user", "content": prompt}],
        }
        if system:
            body["system"] = system
        hdrs.setdefault("anthropic-version", "2023-06-01")
        if key is not None:
            hdrs["x-api-key"] = key
        body.update(extra or {})
        return client.post(f"{base}/v1/messages", json=body, headers=hdrs, **kwargs)
    body = {"contents": [{"role": "user", "parts": [{"text": prompt}]}]}
    if system:
        body["systemInstruction"] = {"parts": [{"text": system}]}
    if max_tokens is not None:
        body["generationConfig"] = {"maxOutputTokens": max_tokens}
    if key is not None:
        hdrs["x-goog-api-key"] = key
    body.update(extra or {})
    url = f"{base}/v1beta/models/{model or 'gemini-2.0-flash'}:generateContent"
    return client.post(url, json=body, headers=hdrs, **kwargs)


def text_of(provider: str, data: dict[str, Any]) -> str:
    if provider in ("openai", "compat"):
        return str(data["choices"][0]["message"]["content"])
    if provider == "anthropic":
        return "".join(b["text"] for b in data["content"] if b["type"] == "text")
    return "".join(p["text"] for p in data["candidates"][0]["content"]["parts"])


def finish_of(provider: str, data: dict[str, Any]) -> str:
    if provider in ("openai", "compat"):
        return str(data["choices"][0]["finish_reason"])
    if provider == "anthropic":
        return str(data["stop_reason"])
    return str(data["candidates"][0]["finishReason"])


def usage_of(provider: str, data: dict[str, Any]) -> tuple[int, int]:
    if provider in ("openai", "compat"):
        return data["usage"]["prompt_tokens"], data["usage"]["completion_tokens"]
    if provider == "anthropic":
        return data["usage"]["input_tokens"], data["usage"]["output_tokens"]
    return data["usageMetadata"]["promptTokenCount"], data["usageMetadata"]["candidatesTokenCount"]


def ceil4(text: str) -> int:
    return -(-len(text) // 4)


# --------------------------------------------------------------------------- normal answers


def test_openai_answer_shape_and_usage(sim: ProviderSimulator, client: httpx.Client) -> None:
    r = ask(sim, client, "openai", "What is up?", system="Be brief.")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert "x-request-id" in r.headers and "x-ratelimit-remaining-requests" in r.headers
    data = r.json()
    assert data["object"] == "chat.completion" and data["id"].startswith("chatcmpl-")
    assert data["model"] == "gpt-4o-mini"
    choice = data["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"].startswith("[sim openai/gpt-4o-mini] ")
    assert choice["finish_reason"] == "stop"
    usage = data["usage"]
    expected_in = ceil4("Be brief.") + ceil4("What is up?") + 2 * MESSAGE_OVERHEAD_TOKENS
    assert usage["prompt_tokens"] == expected_in
    assert usage["completion_tokens"] == ceil4(choice["message"]["content"])
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == 0


def test_anthropic_answer_shape_and_usage(sim: ProviderSimulator, client: httpx.Client) -> None:
    r = ask(sim, client, "anthropic", "What is up?", system="Be brief.")
    assert r.status_code == 200
    assert r.headers["request-id"].startswith("req_")
    data = r.json()
    assert data["type"] == "message" and data["role"] == "assistant" and data["id"].startswith("msg_")
    assert data["stop_reason"] == "end_turn" and data["stop_sequence"] is None
    assert data["content"][0]["type"] == "text"
    text = data["content"][0]["text"]
    assert text.startswith("[sim anthropic/claude-3-5-haiku-latest] ")
    usage = data["usage"]
    assert usage["input_tokens"] == ceil4("Be brief.") + ceil4("What is up?") + 2 * MESSAGE_OVERHEAD_TOKENS
    assert usage["output_tokens"] == ceil4(text)
    assert usage["cache_read_input_tokens"] == 0 and usage["cache_creation_input_tokens"] == 0


@pytest.mark.parametrize("key_in", ["header", "query"])
def test_gemini_answer_shape_and_usage(sim: ProviderSimulator, client: httpx.Client, key_in: str) -> None:
    url = f"{sim.base_urls()['gemini']}/v1beta/models/gemini-2.0-flash:generateContent"
    body = {
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "contents": [{"role": "user", "parts": [{"text": "What is up?"}]}],
    }
    if key_in == "header":
        r = client.post(url, json=body, headers={"x-goog-api-key": "k"})
    else:
        r = client.post(url, params={"key": "secret-in-query"}, json=body)
    assert r.status_code == 200
    data = r.json()
    cand = data["candidates"][0]
    assert cand["finishReason"] == "STOP" and cand["content"]["role"] == "model"
    text = cand["content"]["parts"][0]["text"]
    assert text.startswith("[sim gemini/gemini-2.0-flash] ")
    meta = data["usageMetadata"]
    assert meta["promptTokenCount"] == ceil4("Be brief.") + ceil4("What is up?") + 2 * MESSAGE_OVERHEAD_TOKENS
    assert meta["candidatesTokenCount"] == ceil4(text)
    assert meta["totalTokenCount"] == meta["promptTokenCount"] + meta["candidatesTokenCount"]
    assert "cachedContentTokenCount" not in meta  # omitted when zero, like the real API
    assert data["modelVersion"] == "gemini-2.0-flash"
    # The key never reaches the call log (the query string is dropped from the path).
    assert "secret-in-query" not in json.dumps(sim.calls())


def test_compat_needs_no_key_but_rejects_invalid(sim: ProviderSimulator, client: httpx.Client) -> None:
    r = ask(sim, client, "compat", key=None)
    assert r.status_code == 200
    assert text_of("compat", r.json()).startswith("[sim compat/")
    assert ask(sim, client, "compat", key="invalid").status_code == 401


def test_answers_are_deterministic(sim: ProviderSimulator, client: httpx.Client) -> None:
    for provider in PROVIDERS:
        a = text_of(provider, ask(sim, client, provider, "same prompt").json())
        b = text_of(provider, ask(sim, client, provider, "same prompt").json())
        c = text_of(provider, ask(sim, client, provider, "another prompt entirely").json())
        assert a == b
        assert a != c
        assert a.split("] ", 1)[1].endswith(".")


@pytest.mark.parametrize(
    ("provider", "reason"), [("openai", "length"), ("anthropic", "max_tokens"), ("gemini", "MAX_TOKENS")]
)
def test_max_tokens_truncates(sim: ProviderSimulator, client: httpx.Client, provider: str, reason: str) -> None:
    data = ask(sim, client, provider, "truncate me", max_tokens=5).json()
    assert finish_of(provider, data) == reason
    assert len(text_of(provider, data)) == 20
    assert usage_of(provider, data)[1] == 5
    roomy = ask(sim, client, provider, "truncate me", max_tokens=4000).json()
    assert finish_of(provider, roomy) in ("stop", "end_turn", "STOP")


def test_openai_max_completion_tokens(sim: ProviderSimulator, client: httpx.Client) -> None:
    data = ask(sim, client, "openai", extra={"max_completion_tokens": 3}).json()
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["usage"]["completion_tokens"] == 3


def test_keep_alive_reuses_one_connection(sim: ProviderSimulator) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=5)
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    for _ in range(3):
        conn.request("POST", "/compat/v1/chat/completions", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200
        assert json.loads(resp.read())["object"] == "chat.completion"
    conn.close()


# --------------------------------------------------------------------------- auth, validation, routing


@pytest.mark.parametrize(
    ("provider", "missing_status", "invalid_status"),
    [("openai", 401, 401), ("anthropic", 401, 401), ("gemini", 403, 400)],
)
def test_auth_errors(
    sim: ProviderSimulator, client: httpx.Client, provider: str, missing_status: int, invalid_status: int
) -> None:
    missing = ask(sim, client, provider, key=None)
    invalid = ask(sim, client, provider, key="invalid")
    assert missing.status_code == missing_status
    assert invalid.status_code == invalid_status
    if provider == "openai":
        assert invalid.json()["error"]["code"] == "invalid_api_key"
        assert set(missing.json()["error"]) == {"message", "type", "param", "code"}
    elif provider == "anthropic":
        assert missing.json()["type"] == "error"
        assert invalid.json()["error"]["type"] == "authentication_error"
    else:
        assert missing.json()["error"]["status"] == "PERMISSION_DENIED"
        err = invalid.json()["error"]
        assert err["status"] == "INVALID_ARGUMENT"
        assert err["details"][0]["reason"] == "API_KEY_INVALID"


def test_anthropic_requires_version_header(sim: ProviderSimulator, client: httpx.Client) -> None:
    r = client.post(
        f"{sim.base_urls()['anthropic']}/v1/messages",
        json={"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
        headers={"x-api-key": "k"},
    )
    assert r.status_code == 400
    assert r.json()["error"] == {"type": "invalid_request_error", "message": "anthropic-version: header is required"}


@pytest.mark.parametrize(
    ("provider", "body"),
    [
        ("openai", {"messages": [{"role": "user", "content": "x"}]}),
        ("openai", {"model": "m", "messages": []}),
        ("anthropic", {"model": "m", "messages": [{"role": "user", "content": "x"}]}),
        ("anthropic", {"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
        ("anthropic", {"model": "m", "max_tokens": 5}),
        ("gemini", {"generationConfig": {}}),
        ("gemini", {"contents": []}),
    ],
)
def test_request_validation(sim: ProviderSimulator, client: httpx.Client, provider: str, body: dict[str, Any]) -> None:
    base = sim.base_urls()[provider]
    if provider == "openai":
        r = client.post(f"{base}/chat/completions", json=body, headers={"Authorization": "Bearer k"})
        assert r.json()["error"]["type"] == "invalid_request_error"
    elif provider == "anthropic":
        headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
        r = client.post(f"{base}/v1/messages", json=body, headers=headers)
        assert r.json()["error"]["type"] == "invalid_request_error"
    else:
        r = client.post(f"{base}/v1beta/models/g:generateContent", json=body, headers={"x-goog-api-key": "k"})
        assert r.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert r.status_code == 400


def test_invalid_json_body(sim: ProviderSimulator, client: httpx.Client) -> None:
    r = client.post(
        f"{sim.base_urls()['openai']}/chat/completions",
        content=b"{not json",
        headers={"Authorization": "Bearer k", "Content-Type": "application/json"},
    )
    assert r.status_code == 400
    assert "parse the JSON body" in r.json()["error"]["message"]


def test_unknown_routes_404(sim: ProviderSimulator, client: httpx.Client) -> None:
    r = client.get(f"{sim.url}/nowhere")
    assert r.status_code == 404 and "error" in r.json()
    r = client.post(f"{sim.url}/openai/v1/moderations", json={})
    assert r.status_code == 404 and r.json()["error"]["message"] == "Invalid URL (POST /v1/moderations)"
    # /v1/embeddings is served (local/simulator/embeddings.py): without a key it is refused like chat
    r = client.post(f"{sim.url}/openai/v1/embeddings", json={})
    assert r.status_code == 401
    r = client.post(f"{sim.url}/gemini/v1beta/models/g:countTokens", json={})
    assert r.status_code == 404 and r.json()["error"]["status"] == "NOT_FOUND"
    # streamGenerateContent is served (test_simulator_streams.py): it validates like generateContent
    r = client.post(f"{sim.url}/gemini/v1beta/models/g:streamGenerateContent", json={}, headers={"x-goog-api-key": "k"})
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"


# --------------------------------------------------------------------------- faults

ERROR_FAULTS = {
    # fault: {provider: status}
    "rate_limit": {"openai": 429, "anthropic": 429, "gemini": 429, "compat": 429},
    "server_error": {"openai": 500, "anthropic": 500, "gemini": 500, "compat": 500},
    "overloaded": {"openai": 503, "anthropic": 529, "gemini": 503, "compat": 503},
    "auth": {"openai": 401, "anthropic": 401, "gemini": 401, "compat": 401},
    "bad_request": {"openai": 400, "anthropic": 400, "gemini": 400, "compat": 400},
    "context_length": {"openai": 400, "anthropic": 400, "gemini": 400, "compat": 400},
}
ANTHROPIC_TYPES = {
    "rate_limit": "rate_limit_error",
    "server_error": "api_error",
    "overloaded": "overloaded_error",
    "auth": "authentication_error",
    "bad_request": "invalid_request_error",
    "context_length": "invalid_request_error",
}
GEMINI_STATUS = {
    "rate_limit": "RESOURCE_EXHAUSTED",
    "server_error": "INTERNAL",
    "overloaded": "UNAVAILABLE",
    "auth": "UNAUTHENTICATED",
    "bad_request": "INVALID_ARGUMENT",
    "context_length": "INVALID_ARGUMENT",
}


@pytest.mark.parametrize("fault", sorted(ERROR_FAULTS))
@pytest.mark.parametrize("provider", ALL_PROVIDERS)
def test_error_faults(sim: ProviderSimulator, client: httpx.Client, provider: str, fault: str) -> None:
    r = ask(sim, client, provider, headers={"x-sim-fault": fault})
    assert r.status_code == ERROR_FAULTS[fault][provider]
    err = r.json()
    if provider in ("openai", "compat"):
        assert set(err["error"]) == {"message", "type", "param", "code"}
        if fault == "context_length":
            assert err["error"]["code"] == "context_length_exceeded"
        if fault == "rate_limit":
            assert err["error"]["code"] == "rate_limit_exceeded"
            assert r.headers["x-ratelimit-remaining-requests"] == "0"
    elif provider == "anthropic":
        assert err["type"] == "error"
        assert err["error"]["type"] == ANTHROPIC_TYPES[fault]
        if fault == "context_length":
            assert err["error"]["message"].startswith("prompt is too long: ")
            assert err["error"]["message"].endswith("tokens > 200000 maximum")
    else:
        assert err["error"]["code"] == r.status_code
        assert err["error"]["status"] == GEMINI_STATUS[fault]
        if fault == "context_length":
            assert "exceeds the maximum number of tokens allowed (1048576)" in err["error"]["message"]
    if fault == "rate_limit":
        assert r.headers["retry-after"] == "1"
    assert sim.calls()[-1]["fault"] == fault
    assert sim.calls()[-1]["status"] == r.status_code


@pytest.mark.parametrize("provider", PROVIDERS)
def test_drop_closes_connection(sim: ProviderSimulator, client: httpx.Client, provider: str) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        ask(sim, client, provider, headers={"x-sim-fault": "drop"})
    call = sim.calls()[-1]
    assert call["fault"] == "drop" and call["status"] is None
    # The server keeps serving afterwards.
    assert ask(sim, client, provider).status_code == 200


def test_slow_exceeds_client_timeout_then_answers(sim: ProviderSimulator, client: httpx.Client) -> None:
    with pytest.raises(httpx.ReadTimeout):
        ask(sim, client, "openai", headers={"x-sim-fault": "slow", "x-sim-delay": "1"}, timeout=0.2)
    start = time.monotonic()
    r = ask(sim, client, "anthropic", "[[sim:fault=slow,delay=0.3]] hi")
    assert time.monotonic() - start >= 0.3
    assert r.status_code == 200 and r.json()["stop_reason"] == "end_turn"


@pytest.mark.parametrize("provider", ALL_PROVIDERS)
def test_malformed_bodies(sim: ProviderSimulator, client: httpx.Client, provider: str) -> None:
    r = ask(sim, client, provider, headers={"x-sim-fault": "malformed"})
    assert r.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.content)
    shape = ask(sim, client, provider, headers={"x-sim-fault": "malformed_shape"})
    assert shape.status_code == 200
    data = shape.json()
    assert "choices" not in data and "content" not in data and "candidates" not in data


def test_content_filter(sim: ProviderSimulator, client: httpx.Client) -> None:
    marker = "[[sim:fault=content_filter]] tell me"
    o = ask(sim, client, "openai", marker).json()
    assert o["choices"][0]["finish_reason"] == "content_filter"
    assert o["choices"][0]["message"]["content"] == ""
    a = ask(sim, client, "anthropic", marker).json()
    assert a["stop_reason"] == "refusal" and a["content"] == []
    g = ask(sim, client, "gemini", marker).json()
    assert g["promptFeedback"]["blockReason"] == "SAFETY"
    assert "candidates" not in g


def test_marker_parameters_and_header_retry_after(sim: ProviderSimulator, client: httpx.Client) -> None:
    r = ask(sim, client, "anthropic", "please [[sim:fault=rate_limit,retry_after=2]] now")
    assert r.status_code == 429 and r.headers["retry-after"] == "2"
    assert r.headers["x-should-retry"] == "true"
    r = ask(sim, client, "gemini", headers={"x-sim-fault": "rate_limit", "x-sim-retry-after": "3"})
    assert r.status_code == 429 and r.headers["retry-after"] == "3"
    assert r.json()["error"]["details"][0]["retryDelay"] == "3s"
    r = ask(sim, client, "openai", "[[sim:fault=no_such_fault]]")
    assert r.status_code == 400 and "no_such_fault" in r.json()["error"]["message"]


def test_markers_can_name_the_provider_that_fails(sim: ProviderSimulator, client: httpx.Client) -> None:
    only_openai = "[[sim:fault=server_error,provider=openai]] hi"
    assert ask(sim, client, "openai", only_openai).status_code == 500
    assert ask(sim, client, "anthropic", only_openai).status_code == 200
    assert ask(sim, client, "gemini", only_openai).status_code == 200
    two = "[[sim:fault=rate_limit,provider=anthropic,retry_after=4]] [[sim:fault=overloaded,provider=gemini]] hi"
    limited = ask(sim, client, "anthropic", two)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "4"
    assert ask(sim, client, "gemini", two).status_code == 503
    assert ask(sim, client, "openai", two).status_code == 200


def test_fault_rules_with_times_provider_and_model(sim: ProviderSimulator, client: httpx.Client) -> None:
    sim.add_fault("server_error", provider="openai", times=2)
    sim.add_fault("overloaded", provider="anthropic", model="claude-special")
    assert ask(sim, client, "anthropic").status_code == 200  # other model
    assert ask(sim, client, "gemini").status_code == 200  # other provider
    assert [ask(sim, client, "openai").status_code for _ in range(3)] == [500, 500, 200]
    assert [ask(sim, client, "anthropic", model="claude-special").status_code for _ in range(2)] == [529, 529]
    assert len(sim.faults()) == 1
    sim.clear_faults()
    assert ask(sim, client, "anthropic", model="claude-special").status_code == 200


def test_fault_rules_over_http(sim: ProviderSimulator, client: httpx.Client) -> None:
    r = client.post(
        f"{sim.url}/_sim/faults", json={"fault": "rate_limit", "provider": "*", "times": 1, "retry_after": 4}
    )
    assert r.status_code == 200
    assert client.get(f"{sim.url}/_sim/faults").json()[0]["fault"] == "rate_limit"
    r = ask(sim, client, "gemini")
    assert r.status_code == 429 and r.headers["retry-after"] == "4"
    assert ask(sim, client, "gemini").status_code == 200
    client.post(f"{sim.url}/_sim/faults", json={"fault": "auth"})
    assert ask(sim, client, "openai").status_code == 401
    assert client.delete(f"{sim.url}/_sim/faults").status_code == 200
    assert ask(sim, client, "openai").status_code == 200
    bad = client.post(f"{sim.url}/_sim/faults", json={"fault": "nope"})
    assert bad.status_code == 400


def test_add_fault_validates() -> None:
    sim = ProviderSimulator()
    with pytest.raises(ValueError):
        sim.add_fault("nope")
    with pytest.raises(ValueError):
        sim.add_fault("drop", provider="vertex")


# --------------------------------------------------------------------------- call log and control API


def test_call_log(sim: ProviderSimulator, client: httpx.Client) -> None:
    ask(sim, client, "openai", "one", key="sk-very-secret")
    ask(sim, client, "anthropic", "two", key="sk-ant-secret")
    ask(sim, client, "gemini", "three", headers={"x-sim-fault": "overloaded"})
    calls = sim.calls()
    assert [c["provider"] for c in calls] == ["openai", "anthropic", "gemini"]
    assert set(calls[0]) == {"provider", "model", "path", "body", "fault", "status", "ts", "deployment"}
    assert calls[0]["model"] == "gpt-4o-mini" and calls[0]["path"] == "/openai/v1/chat/completions"
    assert calls[0]["body"]["messages"][0]["content"] == "one"
    assert calls[2]["model"] == "gemini-2.0-flash" and calls[2]["fault"] == "overloaded"
    assert calls[2]["status"] == 503
    assert "secret" not in json.dumps(calls)
    assert [c["provider"] for c in sim.calls("anthropic")] == ["anthropic"]
    calls[0]["provider"] = "mutated"
    assert sim.calls()[0]["provider"] == "openai"  # a copy

    over_http = client.get(f"{sim.url}/_sim/calls", params={"provider": "gemini"}).json()
    assert [c["provider"] for c in over_http] == ["gemini"]
    assert client.delete(f"{sim.url}/_sim/calls").status_code == 200
    assert sim.calls() == []


def test_latency_and_reset_over_http(sim: ProviderSimulator, client: httpx.Client) -> None:
    assert client.post(f"{sim.url}/_sim/config", json={"latency_ms": 150}).status_code == 200
    start = time.monotonic()
    assert ask(sim, client, "compat").status_code == 200
    assert time.monotonic() - start >= 0.15
    sim.add_fault("server_error")
    sim.script("*", ["x"])
    assert client.post(f"{sim.url}/_sim/reset").status_code == 200
    start = time.monotonic()
    r = ask(sim, client, "compat")
    assert time.monotonic() - start < 0.15
    assert r.status_code == 200 and text_of("compat", r.json()) != "x"
    assert len(sim.calls()) == 1
    health = client.get(f"{sim.url}/_sim/health").json()
    assert health["ok"] is True and health["base_urls"] == sim.base_urls()


def test_set_latency_python_api(sim: ProviderSimulator, client: httpx.Client) -> None:
    sim.set_latency(100)
    start = time.monotonic()
    ask(sim, client, "gemini")
    assert time.monotonic() - start >= 0.1


# --------------------------------------------------------------------------- scripted replies


def test_scripted_replies_fifo_per_provider(sim: ProviderSimulator, client: httpx.Client) -> None:
    sim.script("openai", ["{not json", '{"ok": true}'])
    sim.script("gemini", [{"content": "cut short", "finish_reason": "length"}])
    assert text_of("gemini", (g := ask(sim, client, "gemini").json())) == "cut short"
    assert finish_of("gemini", g) == "MAX_TOKENS"
    first = ask(sim, client, "openai").json()
    assert text_of("openai", first) == "{not json"
    assert first["usage"]["completion_tokens"] == ceil4("{not json")
    assert json.loads(text_of("openai", ask(sim, client, "openai").json())) == {"ok": True}
    assert text_of("openai", ask(sim, client, "openai").json()).startswith("[sim openai/")


def test_scripted_finish_reasons_map_per_provider(sim: ProviderSimulator, client: httpx.Client) -> None:
    expected = {
        "openai": ("stop", "length", "content_filter"),
        "anthropic": ("end_turn", "max_tokens", "refusal"),
        "gemini": ("STOP", "MAX_TOKENS", "SAFETY"),
    }
    for provider, reasons in expected.items():
        sim.script(provider, [{"content": "a", "finish_reason": f} for f in ("stop", "length", "content_filter")])
        got = []
        for _ in reasons:
            data = ask(sim, client, provider).json()
            got.append(finish_of(provider, data))
        assert tuple(got) == reasons


def test_scripted_wildcard_and_http(sim: ProviderSimulator, client: httpx.Client) -> None:
    r = client.post(f"{sim.url}/_sim/script", json={"provider": "*", "replies": ["first", "second"]})
    assert r.status_code == 200
    assert text_of("anthropic", ask(sim, client, "anthropic").json()) == "first"
    assert text_of("compat", ask(sim, client, "compat").json()) == "second"
    bad = client.post(f"{sim.url}/_sim/script", json={"provider": "openai", "replies": [{"text": "x"}]})
    assert bad.status_code == 400
    with pytest.raises(ValueError):
        sim.script("openai", [{"content": "x", "finish_reason": "exploded"}])


def test_scripted_reply_not_consumed_by_faults(sim: ProviderSimulator, client: httpx.Client) -> None:
    sim.script("openai", ["kept"])
    assert ask(sim, client, "openai", headers={"x-sim-fault": "rate_limit"}).status_code == 429
    assert text_of("openai", ask(sim, client, "openai").json()) == "kept"


def test_scripted_cached_tokens(sim: ProviderSimulator, client: httpx.Client) -> None:
    for provider in PROVIDERS:
        sim.script(provider, [{"content": "cached", "cached_tokens": 3}])
    o = ask(sim, client, "openai", "abcdefgh").json()
    assert o["usage"]["prompt_tokens_details"]["cached_tokens"] == 3
    assert o["usage"]["prompt_tokens"] == 2 + MESSAGE_OVERHEAD_TOKENS
    a = ask(sim, client, "anthropic", "abcdefgh").json()
    assert a["usage"]["cache_read_input_tokens"] == 3
    assert a["usage"]["input_tokens"] == 2 + MESSAGE_OVERHEAD_TOKENS - 3
    g = ask(sim, client, "gemini", "abcdefgh").json()
    assert g["usageMetadata"]["cachedContentTokenCount"] == 3


# --------------------------------------------------------------------------- structured output

PERSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 3},
        "age": {"type": "integer", "minimum": 18},
        "email": {"type": "string", "format": "email"},
        "born": {"type": "string", "format": "date"},
        "role": {"type": "string", "enum": ["admin", "user"]},
        "score": {"type": ["number", "null"]},
        "address": {"$ref": "#/$defs/Address"},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
        "nickname": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "active": {"type": "boolean"},
    },
    "required": ["name", "age", "email", "born", "role", "score", "address", "tags", "nickname", "active"],
    "additionalProperties": False,
    "$defs": {
        "Address": {
            "type": "object",
            "properties": {"street": {"type": "string"}, "zip": {"type": "string", "maxLength": 5}},
            "required": ["street", "zip"],
            "additionalProperties": False,
        }
    },
}

GEMINI_SCHEMA: dict[str, Any] = {
    "type": "OBJECT",
    "properties": {
        "title": {"type": "STRING"},
        "count": {"type": "INTEGER", "minimum": 3},
        "ratio": {"type": "NUMBER"},
        "when": {"type": "STRING", "format": "date-time"},
        "items": {"type": "ARRAY", "items": {"type": "OBJECT", "properties": {"ok": {"type": "BOOLEAN"}}}},
        "maybe": {"type": "STRING", "nullable": True},
        "kind": {"type": "STRING", "enum": ["a", "b"]},
    },
    "required": ["title", "count", "ratio", "when", "items", "maybe", "kind"],
}


def _lower_types(schema: Any) -> Any:
    """Gemini's OpenAPI-subset schema to JSON Schema (lower-case types, nullable) for validation."""
    if isinstance(schema, list):
        return [_lower_types(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _lower_types(v) for k, v in schema.items() if k != "nullable"}
    if isinstance(out.get("type"), str):
        out["type"] = out["type"].lower()
        if schema.get("nullable"):
            out["type"] = [out["type"], "null"]
    if "properties" in schema:
        out["properties"] = {k: _lower_types(v) for k, v in schema["properties"].items()}
    return out


def _validate(instance: Any, schema: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(instance)


def test_openai_json_schema_mode(sim: ProviderSimulator, client: httpx.Client) -> None:
    # Not strict: PERSON_SCHEMA uses minLength/maxLength, which strict mode refuses (see below).
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON_SCHEMA, "strict": False}}
    data = ask(sim, client, "openai", "Who?", extra={"response_format": fmt}).json()
    content = json.loads(data["choices"][0]["message"]["content"])
    _validate(content, PERSON_SCHEMA)
    assert content["email"] == "user@example.com" and content["born"] == "2024-01-01"
    assert content["role"] == "admin" and content["age"] == 18 and len(content["tags"]) == 2
    obj = ask(sim, client, "openai", "Who?", extra={"response_format": {"type": "json_object"}}).json()
    assert isinstance(json.loads(obj["choices"][0]["message"]["content"]), dict)


def test_anthropic_forced_tool_mode(sim: ProviderSimulator, client: httpx.Client) -> None:
    extra = {
        "tools": [{"name": "emit_person", "description": "Return a person", "input_schema": PERSON_SCHEMA}],
        "tool_choice": {"type": "tool", "name": "emit_person"},
    }
    data = ask(sim, client, "anthropic", "Who?", extra=extra).json()
    assert data["stop_reason"] == "tool_use"
    block = data["content"][0]
    assert block["type"] == "tool_use" and block["name"] == "emit_person" and block["id"].startswith("toolu_")
    _validate(block["input"], PERSON_SCHEMA)
    assert data["usage"]["output_tokens"] == ceil4(json.dumps(block["input"]))

    # Scripted: a JSON object becomes the tool input, anything else comes back as text.
    sim.script("anthropic", ['{"name": "Ada"}', "not json at all"])
    first = ask(sim, client, "anthropic", "Who?", extra=extra).json()
    assert first["content"][0]["input"] == {"name": "Ada"} and first["stop_reason"] == "tool_use"
    second = ask(sim, client, "anthropic", "Who?", extra=extra).json()
    assert second["content"] == [{"type": "text", "text": "not json at all"}]

    unknown = ask(sim, client, "anthropic", extra={**extra, "tool_choice": {"type": "tool", "name": "nope"}})
    assert unknown.status_code == 400


def test_gemini_response_schema_mode(sim: ProviderSimulator, client: httpx.Client) -> None:
    extra = {"generationConfig": {"responseMimeType": "application/json", "responseSchema": GEMINI_SCHEMA}}
    data = ask(sim, client, "gemini", "Stats?", extra=extra).json()
    value = json.loads(text_of("gemini", data))
    _validate(value, _lower_types(GEMINI_SCHEMA))
    assert value["count"] == 3 and value["kind"] == "a"
    plain = ask(sim, client, "gemini", extra={"generationConfig": {"responseMimeType": "application/json"}})
    assert isinstance(json.loads(text_of("gemini", plain.json())), dict)


def _gemini_schema_error(sim: ProviderSimulator, client: httpx.Client, schema: dict[str, Any]) -> httpx.Response:
    extra = {"generationConfig": {"responseMimeType": "application/json", "responseSchema": schema}}
    return ask(sim, client, "gemini", "Stats?", extra=extra)


def _obj(**properties: Any) -> dict[str, Any]:
    return {"type": "OBJECT", "properties": properties}


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        (_obj(d={"type": "STRING", "format": "date"}), "only 'enum' and 'date-time' are supported for STRING type"),
        (_obj(e={"type": "STRING", "format": "email"}), "properties[e].format: only 'enum' and 'date-time'"),
        ({**_obj(a={"type": "STRING"}), "additionalProperties": False}, 'Unknown name "additionalProperties"'),
        (_obj(a={"type": "STRING", "const": "x"}), 'Unknown name "const"'),
        (_obj(a={"allOf": [{"type": "STRING"}]}), 'Unknown name "allOf"'),
        (
            _obj(a={"type": ["STRING", "NUMBER"]}),
            "Invalid value at 'generation_config.response_schema.properties[a].type'",
        ),
        (_obj(n={"type": "INTEGER", "enum": ["1", "2"]}), "properties[n].enum: only allowed for STRING type"),
        (_obj(o={"type": "OBJECT", "properties": {}}), "properties[o].properties: should be non-empty for OBJECT"),
        (_obj(o={"type": "OBJECT"}), "should be non-empty for OBJECT type"),
        (_obj(a={"type": "ARRAY"}), "properties[a].items: missing field"),
        (_obj(a={"description": "anything"}), "properties[a].type: must be specified"),
        ({**_obj(a={"type": "STRING"}), "required": ["b"]}, "required[0]: property is not defined"),
    ],
)
def test_gemini_refuses_response_schemas_outside_its_subset(
    sim: ProviderSimulator, client: httpx.Client, schema: dict[str, Any], fragment: str
) -> None:
    response = _gemini_schema_error(sim, client, schema)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT" and error["code"] == 400
    assert fragment in error["message"]


def test_gemini_accepts_its_subset_in_either_spelling(sim: ProviderSimulator, client: httpx.Client) -> None:
    subset = {
        "type": "object",
        "properties": {
            "when": {"type": "string", "format": "date-time", "nullable": True},
            "kind": {"type": "STRING", "format": "enum", "enum": ["a", "b"]},
            "n": {"type": "integer", "format": "int64", "minimum": 0},
            "either": {"anyOf": [{"type": "string"}, {"type": "number"}]},
            "list": {"type": "array", "items": {"type": "number"}, "max_items": 3},
        },
        "required": ["when", "kind"],
        "property_ordering": ["when", "kind", "n", "either", "list"],
    }
    assert _gemini_schema_error(sim, client, subset).status_code == 200


def _strict(schema: Any, name: str = "person") -> dict[str, Any]:
    return {"response_format": {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}}


def _closed(**properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def _chain(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = _closed(x=schema)
    return schema


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        ({"type": "array", "items": {"type": "string"}}, "schema must be a JSON Schema of 'type: \"object\"'"),
        (
            {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
            "In context=(), 'additionalProperties' is required to be supplied and to be false",
        ),
        (
            {**_closed(a={"type": "string"}, b={"type": "string"}), "required": ["a"]},
            "'required' is required to be supplied and to be an array including every key in properties. Missing 'b'",
        ),
        (
            _closed(inner={"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}),
            "In context=('properties', 'inner'), 'additionalProperties' is required",
        ),
        (_closed(a={"type": "string", "minLength": 1}), "In context=('properties', 'a'), 'minLength' is not permitted"),
        (_closed(a={"type": "string", "default": "x"}), "'default' is not permitted"),
        (_closed(a={"allOf": [{"type": "string"}]}), "'allOf' is not permitted"),
        (_closed(a={"type": "string", "format": "uri"}), "'uri' is not a valid format"),
        (_closed(a={"description": "any"}), "schema must have a 'type' key"),
        (_chain(11), "11 levels of nesting exceeds limit of 10"),
        (_closed(**{f"p{i}": {"type": "string"} for i in range(5_001)}), "5001 exceeds limit of 5000"),
        (
            {
                **_closed(a={"$ref": "#/$defs/A"}),
                "$defs": {"A": {"type": "object", "properties": {"b": {"type": "string"}}}},
            },
            "In context=('$defs', 'A'), 'additionalProperties' is required",
        ),
    ],
)
def test_openai_strict_mode_refuses_schemas_outside_its_rules(
    sim: ProviderSimulator, client: httpx.Client, schema: Any, fragment: str
) -> None:
    response = ask(sim, client, "openai", "Who?", extra=_strict(schema))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == "response_format"
    assert error["message"].startswith("Invalid schema for response_format 'person': ")
    assert fragment in error["message"]
    # The same schema without strict mode is accepted (a hint to the model, not a grammar).
    loose = {"response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": schema}}}
    assert ask(sim, client, "openai", "Who?", extra=loose).status_code == 200


def test_openai_strict_mode_accepts_its_subset(sim: ProviderSimulator, client: httpx.Client) -> None:
    schema = {
        **_closed(
            name={"type": "string", "pattern": "^[A-Z]"},
            born={"type": ["string", "null"], "format": "date"},
            kind={"anyOf": [{"enum": ["a", "b"]}, {"type": "null"}]},
            home={"$ref": "#/$defs/place"},
            tags={"type": "array", "items": {"type": "string"}, "minItems": 1},
        ),
        "$defs": {"place": _closed(city={"type": "string"})},
    }
    response = ask(sim, client, "openai", "Who?", extra=_strict(schema))
    assert response.status_code == 200, response.text
    assert ask(sim, client, "openai", "Who?", extra=_strict(_chain(10))).status_code == 200


@pytest.mark.parametrize(
    ("tool", "fragment"),
    [
        ({"name": "t"}, "tools.0.custom.input_schema: Field required"),
        ({"name": "t", "input_schema": {"type": "array", "items": {"type": "string"}}}, "Input should be 'object'"),
        ({"name": "t", "input_schema": {"properties": {"a": {"type": "string"}}}}, "Input should be 'object'"),
    ],
)
def test_anthropic_tool_input_schema_must_be_an_object_schema(
    sim: ProviderSimulator, client: httpx.Client, tool: dict[str, Any], fragment: str
) -> None:
    extra = {"tools": [tool], "tool_choice": {"type": "tool", "name": "t"}}
    response = ask(sim, client, "anthropic", "Who?", extra=extra)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert fragment in response.json()["error"]["message"]


def test_schema_instance_edge_cases() -> None:
    recursive = {
        "$ref": "#/definitions/Node",
        "definitions": {
            "Node": {
                "type": "object",
                "properties": {
                    "value": {"type": "integer", "exclusiveMinimum": 5},
                    "next": {"$ref": "#/definitions/Node"},
                },
                "required": ["value"],
            }
        },
    }
    assert schema_instance(recursive) == {"value": 6}
    assert schema_instance({"type": "object", "properties": {"a": {"type": "number", "maximum": 0}}}) == {"a": 0}
    assert schema_instance({"allOf": [{"$ref": "#/$defs/A"}], "$defs": {"A": {"const": 7}}}) == 7
    assert schema_instance({"type": "array", "items": {"type": "string"}, "maxItems": 0}) == []
    assert schema_instance({"oneOf": [{"type": "null"}, {"type": "boolean"}]}) is True


# --------------------------------------------------------------------------- official SDK


def test_official_openai_client(sim: ProviderSimulator) -> None:
    openai = pytest.importorskip("openai")
    with openai.OpenAI(base_url=sim.base_urls()["openai"], api_key="k", max_retries=0) as sdk:
        completion = sdk.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}], max_tokens=100
        )
        assert completion.choices[0].message.content.startswith("[sim openai/gpt-4o-mini] ")
        assert completion.choices[0].finish_reason == "stop"
        assert completion.usage is not None and completion.usage.total_tokens > 0
        sim.add_fault("rate_limit", provider="openai", times=1)
        with pytest.raises(openai.RateLimitError):
            sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
