"""Gateway keys end to end: the official ``openai`` client against the local stack's bridge and the
functions' own edge (the same code path as deployed: API Gateway checks no key, the edge verifies it
against the keys table, admits the request against the key's policy and limits, settles its tokens).
Keys live in the local stack's keys table; the providers are the simulator."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest

from llm_gateway import keys, wiring
from llm_gateway.keys.admin import KeyAdmin, KeySpec
from llm_gateway.keys.store import KeyStore
from llm_gateway.models import CompletionRequest
from local.stack import LocalStack
from tests.support.accounting import ledger_items, unique
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_real_aws")]

HELLO = [{"role": "user", "content": "Hello"}]
RACERS = 50


@pytest.fixture
def admin(local_stack: LocalStack) -> KeyAdmin:
    return KeyAdmin(KeyStore(local_stack.physical["KeysTable"]))


@pytest.fixture
def short_ttl(monkeypatch: pytest.MonkeyPatch) -> Iterator[float]:
    """The functions' verified-key cache at 1 s for one test (the deployed default is 30 s)."""
    monkeypatch.setenv("GATEWAY_KEY_CACHE_TTL", "1")
    wiring.reset()
    yield 1.0
    monkeypatch.undo()
    wiring.reset()


def client(stack: LocalStack, api_key: str, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.api_url}/v1", api_key=api_key, max_retries=0, timeout=60, **kw)


def inside_one_minute(seconds_needed: float) -> None:
    """Start a per-minute race where it cannot straddle a window boundary."""
    now = time.time()
    if now % 60 > 60 - seconds_needed:
        time.sleep(60 - now % 60 + 0.2)


def race(n: int, call: Any) -> list[Any]:
    barrier = threading.Barrier(n)

    def one(_: int) -> Any:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(one, range(n)))


def test_the_openai_client_with_only_api_key_set(local_stack, admin, capfd, caplog) -> None:
    caplog.set_level("DEBUG")
    secret, record = admin.create(KeySpec(tenant=unique(), allowed_models=["tier:fast", "gpt-4o-mini"]))
    sdk = client(local_stack, secret)  # Authorization: Bearer, nothing else
    answer = sdk.chat.completions.create(model="tier:fast", messages=HELLO)  # type: ignore[arg-type]
    assert answer.choices[0].message.content
    assert any(m.id for m in sdk.models.list())  # GET routes take the key too
    anthropic_style = client(local_stack, "unused", default_headers={"x-api-key": secret})
    assert anthropic_style.chat.completions.create(model="gpt-4o-mini", messages=HELLO).choices  # type: ignore[arg-type]
    ledger = ledger_items(local_stack, record.policy.tenant)
    assert ledger and {item["key_id"]["S"] for item in ledger} == {record.key_id}  # the tenant came from the key

    with pytest.raises(openai.AuthenticationError) as wrong:
        client(local_stack, secret[:-3] + "zzz").chat.completions.create(model="tier:fast", messages=HELLO)  # type: ignore[arg-type]
    assert wrong.value.code == "invalid_api_key"
    # The SDK will not send a request without a key: a plain HTTP client sends one.
    missing = httpx.post(
        f"{local_stack.api_url}/v1/chat/completions", json={"model": "tier:fast", "messages": HELLO}, timeout=30
    )
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "missing_api_key"
    assert missing.json()["error"]["type"] == "authentication_error"
    with pytest.raises(openai.PermissionDeniedError) as refused:
        sdk.chat.completions.create(model="gpt-4o", messages=HELLO)  # type: ignore[arg-type]
    assert refused.value.code == "model_not_allowed"
    out, err = capfd.readouterr()
    for text in (out, err, caplog.text):
        assert secret not in text
        assert secret[4:] not in text  # not even without its prefix


def test_a_revoked_key_is_refused_after_the_cache_ttl(local_stack, admin, short_ttl) -> None:
    secret, record = admin.create(KeySpec(tenant=unique()))
    sdk = client(local_stack, secret)
    sdk.chat.completions.create(model="tier:fast", messages=HELLO)  # type: ignore[arg-type]
    admin.revoke(record.key_id)
    time.sleep(short_ttl + 0.3)  # the edge's cache TTL: after it, the revoked key is refused
    with pytest.raises(openai.AuthenticationError) as refused:
        sdk.chat.completions.create(model="tier:fast", messages=HELLO)  # type: ignore[arg-type]
    assert refused.value.code == "invalid_api_key"


def test_a_key_limited_to_the_fast_tier_cannot_call_gpt_4o(local_stack, admin) -> None:
    secret, _ = admin.create(KeySpec(tenant=unique(), allowed_models=["tier:fast"]))
    sdk = client(local_stack, secret)
    assert sdk.chat.completions.create(model="tier:fast", messages=HELLO).choices  # type: ignore[arg-type]
    for model in ("gpt-4o", "gpt-4o-mini"):  # by name, even a model of the fast tier
        with pytest.raises(openai.PermissionDeniedError) as refused:
            sdk.chat.completions.create(model=model, messages=HELLO)  # type: ignore[arg-type]
        assert refused.value.code == "model_not_allowed"
    # An explicit fallback (the native route's) is checked too.
    native = httpx.post(
        f"{local_stack.api_url}/v1/completions",
        json={"tier": "fast", "messages": HELLO, "fallback": ["gpt-4o"]},
        headers={"Authorization": f"Bearer {secret}"},
        timeout=60,
    )
    assert native.status_code == 403 and native.json()["error"]["code"] == "model_not_allowed"


def test_automatic_fallbacks_stay_within_the_keys_models(local_stack, admin, simulator) -> None:
    secret, _ = admin.create(KeySpec(tenant=unique(), allowed_models=["gpt-4o-mini"]))
    simulator.add_fault("server_error", provider="openai")
    with pytest.raises(openai.APIStatusError) as failed:
        client(local_stack, secret).chat.completions.create(model="gpt-4o-mini", messages=HELLO)  # type: ignore[arg-type]
    assert failed.value.status_code >= 500
    assert simulator.calls("openai")
    assert {c["provider"] for c in simulator.calls()} == {"openai"}  # no other provider's model was tried
    # Another key, same request: the router falls back to another provider's model as before.
    other, _ = admin.create(KeySpec(tenant=unique()))
    served = client(local_stack, other).chat.completions.create(model="gpt-4o-mini", messages=HELLO)  # type: ignore[arg-type]
    assert served.model != "gpt-4o-mini"


def test_fifty_concurrent_requests_on_a_key_limited_to_ten_a_minute(local_stack, admin) -> None:
    secret, _ = admin.create(KeySpec(tenant=unique(), requests_per_minute=10))
    inside_one_minute(25)

    def call() -> httpx.Response:
        return httpx.post(
            f"{local_stack.api_url}/v1/chat/completions",
            json={"model": "tier:fast", "messages": HELLO},
            headers={"Authorization": f"Bearer {secret}"},
            timeout=60,
        )

    answers = race(RACERS, call)
    statuses = sorted(r.status_code for r in answers)
    assert statuses.count(200) == 10, statuses
    refused = [r for r in answers if r.status_code != 200]
    assert len(refused) == RACERS - 10
    for response in refused:
        assert response.status_code == 429
        assert response.json()["error"]["code"] == "rate_limited"
        assert response.json()["error"]["type"] == "rate_limit_error"  # openai.RateLimitError
        assert 1 <= int(response.headers["retry-after"]) <= 60
    with pytest.raises(openai.RateLimitError):
        client(local_stack, secret).chat.completions.create(model="tier:fast", messages=HELLO)  # type: ignore[arg-type]


def test_a_tokens_per_minute_limit_holds_within_one_requests_worth(local_stack, admin, simulator) -> None:
    # Admitted calls wait 2 s at the provider: every admission of the race happens before the first
    # settlement gives back what an answer did not use (which lets more through later in the minute).
    simulator.set_latency(2000)
    body = {"model": "tier:fast", "messages": HELLO, "max_tokens": 100}
    estimate = keys.estimated_tokens(CompletionRequest.model_validate(body), 1024)
    limit = 6 * estimate + estimate // 2  # room for exactly six estimates
    secret, record = admin.create(KeySpec(tenant=unique(), tokens_per_minute=limit))
    inside_one_minute(25)

    def call() -> httpx.Response:
        return httpx.post(
            f"{local_stack.api_url}/v1/chat/completions",
            json=body,
            headers={"x-api-key": secret},
            timeout=60,
        )

    answers = race(RACERS, call)
    passed = [r for r in answers if r.status_code == 200]
    assert len(passed) == 6, sorted(r.status_code for r in answers)
    for response in answers:
        if response.status_code != 200:
            assert response.status_code == 429 and response.json()["error"]["code"] == "rate_limited"
            assert response.headers.get("retry-after")
    # Settled after each response (inline in tests): the minute holds the actual tokens, at most one
    # request's estimate over the limit.
    spent = sum(r.json()["usage"]["total_tokens"] for r in passed)
    window = int(time.time() // 60) * 60
    item = local_stack.client("dynamodb").get_item(
        TableName=local_stack.physical["KeysTable"], Key={"pk": {"S": f"RATE#{record.key_id}#{window}"}}
    )["Item"]
    assert int(item["tokens"]["N"]) == spent
    assert spent <= limit + estimate


@pytest.mark.parametrize("route", ["/v1/jobs", "/v1/completions"])
def test_jobs_carry_the_key_to_the_worker(local_stack, admin, route) -> None:
    secret, record = admin.create(KeySpec(tenant=unique(), allowed_models=["gpt-4o-mini"], requests_per_minute=100))
    headers = {"Authorization": f"Bearer {secret}"}
    completion = {"model": "gpt-4o-mini", "messages": HELLO, "cache": {"no_cache": True}}
    forbidden = completion | {"model": "gpt-4o"}
    if route == "/v1/jobs":
        body: dict[str, Any] = {"operation": "completion", "input": completion}
        forbidden = {"operation": "completion", "input": forbidden}
    else:
        body, headers = completion, {**headers, "Prefer": "respond-async"}
    # A job for a model the key may not use is refused when submitted, like the synchronous call.
    refused = httpx.post(
        f"{local_stack.api_url}{route}",
        json=forbidden,
        headers=headers,
        timeout=30,
    )
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_allowed"

    accepted = httpx.post(f"{local_stack.api_url}{route}", json=body, headers=headers, timeout=30)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]

    def finished() -> bool:
        answer = httpx.get(f"{local_stack.api_url}/v1/jobs/{job_id}", headers=headers, timeout=30)
        return bool(answer.status_code == 200 and answer.json()["status"] == "succeeded")

    wait_for(finished, timeout=60, what="the job succeeded")
    item = local_stack.client("dynamodb").get_item(
        TableName=local_stack.physical["JobsTable"], Key={"job_id": {"S": job_id}}
    )["Item"]
    assert item["tenant"]["S"] == record.policy.tenant and item["key_id"]["S"] == record.key_id
    # The worker's context carried the key: its ledger record names it, as a synchronous call's does.
    ledger = ledger_items(local_stack, record.policy.tenant)
    assert ledger and {entry["key_id"]["S"] for entry in ledger} == {record.key_id}


def test_an_identity_in_the_request_context_is_no_key(local_stack) -> None:
    """The tenant comes from a verified key only: API Gateway's identity fields (an API key id, as the
    usage-plan keys used to give) open nothing, and neither does a tenant in another header."""
    from local.stack import api_gateway_event

    match = local_stack.routes.match("POST", "/v1/chat/completions")
    event = api_gateway_event(
        match=match,
        method="POST",
        path="/v1/chat/completions",
        query="",
        headers=[("content-type", "application/json"), ("x-tenant", "tenant-a")],
        body=b'{"model": "tier:fast", "messages": [{"role": "user", "content": "Hello"}]}',
        source_ip="127.0.0.1",
        stage="prod",
        api_key="key-a",
        tenant="tenant-a",
    )
    answer = local_stack.invoke("CompletionFunction", event)
    assert answer["statusCode"] == 401
    assert '"missing_api_key"' in answer["body"]
