"""The simulator's per-deployment quotas and its Azure OpenAI dialect, over real sockets (httpx and the
official ``openai`` client)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import httpx
import openai
import pytest

from local.simulator import ProviderSimulator

pytestmark = pytest.mark.integration

API_VERSION = "2024-10-21"
ASK = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
ASK_TOKENS = 15  # what the quota counts: 1 token of text + 4 per message, plus max_tokens


def openai_call(sim: ProviderSimulator, key: str, **extra: Any) -> httpx.Response:
    return httpx.post(
        f"{sim.base_urls()['openai']}/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={**ASK, "model": "gpt-4o-mini", **extra},
    )


def anthropic_call(sim: ProviderSimulator, key: str) -> httpx.Response:
    return httpx.post(
        f"{sim.base_urls()['anthropic']}/v1/messages",
        headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
        json={**ASK, "model": "claude-3-5-haiku-latest"},
    )


def azure_call(
    sim: ProviderSimulator, deployment: str, key: str | None = "az-key", version: str | None = API_VERSION
) -> httpx.Response:
    query = f"?api-version={version}" if version else ""
    headers = {"api-key": key} if key else {}
    return httpx.post(
        f"{sim.base_urls()['azure']}/openai/deployments/{deployment}/chat/completions{query}", headers=headers, json=ASK
    )


def test_two_keys_are_two_deployments_each_with_its_own_requests_per_window(simulator: ProviderSimulator) -> None:
    simulator.set_quota("sk-a", rpm=2, window_s=30)
    simulator.set_quota("sk-b", rpm=3, window_s=30)
    statuses_a = [openai_call(simulator, "sk-a").status_code for _ in range(4)]
    statuses_b = [openai_call(simulator, "sk-b").status_code for _ in range(4)]
    assert statuses_a == [200, 200, 429, 429]
    assert statuses_b == [200, 200, 200, 429]
    stats = simulator.quota_stats()
    assert stats["sk-a"] == {"requests": 4, "refused": 2, "rate_limited": 2, "tokens": 2 * ASK_TOKENS}
    assert stats["sk-b"]["requests"] == 4 and stats["sk-b"]["refused"] == 1
    refused = [c for c in simulator.calls("openai") if c["fault"] == "quota"]
    assert [c["deployment"] for c in refused] == ["sk-a", "sk-a", "sk-b"]


def test_openai_headers_count_down_and_the_window_resets(simulator: ProviderSimulator) -> None:
    simulator.set_quota("sk-a", rpm=2, tpm=1000, window_s=1.0)
    first = openai_call(simulator, "sk-a")
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert first.headers["x-ratelimit-limit-tokens"] == "1000"
    assert first.headers["x-ratelimit-remaining-tokens"] == str(1000 - ASK_TOKENS)
    assert first.headers["x-ratelimit-reset-requests"].endswith("ms")  # under a second left in the window
    openai_call(simulator, "sk-a")
    refused = openai_call(simulator, "sk-a")
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
    assert "on requests per min (RPM): Limit 2, Used 2, Requested 1" in error["message"]
    assert refused.headers["x-ratelimit-remaining-requests"] == "0" and refused.headers["retry-after"] == "1"
    time.sleep(float(refused.headers["x-ratelimit-reset-requests"].removesuffix("ms")) / 1000 + 0.05)
    again = openai_call(simulator, "sk-a")
    assert again.status_code == 200 and again.headers["x-ratelimit-remaining-requests"] == "1"


def test_a_request_whose_tokens_do_not_fit_is_refused_on_tokens(simulator: ProviderSimulator) -> None:
    simulator.set_quota("sk-a", tpm=40, window_s=30)
    assert openai_call(simulator, "sk-a").status_code == 200  # 15 of 40
    assert openai_call(simulator, "sk-a").status_code == 200  # 30 of 40
    refused = openai_call(simulator, "sk-a")
    assert refused.status_code == 429 and refused.json()["error"]["type"] == "tokens"
    assert "tokens per min (TPM): Limit 40, Used 30, Requested 15" in refused.json()["error"]["message"]
    assert refused.headers["x-ratelimit-remaining-tokens"] == "10"
    assert "x-ratelimit-limit-requests" not in refused.headers  # no RPM declared: not stated


def test_anthropic_answers_with_its_own_headers_and_rfc3339_resets(simulator: ProviderSimulator) -> None:
    simulator.set_quota("sk-ant-a", rpm=1, tpm=5000, window_s=30)
    ok = anthropic_call(simulator, "sk-ant-a")
    assert ok.status_code == 200
    assert ok.headers["anthropic-ratelimit-requests-limit"] == "1"
    assert ok.headers["anthropic-ratelimit-requests-remaining"] == "0"
    reset = datetime.fromisoformat(ok.headers["anthropic-ratelimit-requests-reset"])
    assert 0 < reset.timestamp() - time.time() <= 31
    assert ok.headers["anthropic-ratelimit-tokens-remaining"] == str(5000 - ASK_TOKENS)
    refused = anthropic_call(simulator, "sk-ant-a")
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert 1 <= int(refused.headers["retry-after"]) <= 30
    assert simulator.quota_stats()["sk-ant-a"]["refused"] == 1


def test_a_key_without_a_quota_is_counted_and_never_refused(simulator: ProviderSimulator) -> None:
    statuses = [openai_call(simulator, "sk-free").status_code for _ in range(5)]
    assert statuses == [200] * 5
    [(label, counts)] = simulator.quota_stats().items()
    assert counts == {"requests": 5, "refused": 0, "rate_limited": 0, "tokens": 0}
    assert label.startswith("key-") and "sk-free" not in label  # keys are not recorded in clear
    assert {c["deployment"] for c in simulator.calls()} == {label}


def test_an_injected_rate_limit_counts_as_a_429_but_not_as_a_refusal(simulator: ProviderSimulator) -> None:
    simulator.set_quota("sk-a", rpm=10, window_s=30)
    simulator.add_fault("rate_limit", provider="openai", times=1)
    faulted = openai_call(simulator, "sk-a")
    assert faulted.status_code == 429
    assert faulted.headers["x-ratelimit-limit-requests"] == "10"  # the deployment's real standing, not a fixed one
    assert simulator.quota_stats()["sk-a"] == {"requests": 1, "refused": 0, "rate_limited": 1, "tokens": ASK_TOKENS}


# --------------------------------------------------------------------------- Azure OpenAI


def test_azure_deployments_have_their_own_quota_and_azure_s_headers(simulator: ProviderSimulator) -> None:
    simulator.add_azure_deployment("mini-east", model="gpt-4o-mini", api_key="az-key")
    simulator.add_azure_deployment("mini-west", model="gpt-4o-mini", api_key="az-key")
    simulator.set_quota("azure/mini-east", rpm=1, tpm=1000, window_s=30)
    ok = azure_call(simulator, "mini-east")
    assert ok.status_code == 200 and ok.json()["model"] == "gpt-4o-mini"
    assert ok.headers["x-ratelimit-remaining-requests"] == "0"
    assert ok.headers["x-ratelimit-remaining-tokens"] == str(1000 - ASK_TOKENS)
    assert "x-ratelimit-limit-requests" not in ok.headers  # Azure states only what remains
    refused = azure_call(simulator, "mini-east")
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "429" and "Please retry after" in refused.json()["error"]["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 30
    assert 0 < int(refused.headers["retry-after-ms"]) <= 30_000
    assert azure_call(simulator, "mini-west").status_code == 200  # another deployment, another quota
    stats = simulator.quota_stats()
    assert stats["azure/mini-east"]["refused"] == 1 and stats["azure/mini-west"]["requests"] == 1


@pytest.mark.parametrize(
    ("deployment", "key", "version", "status", "code"),
    [
        ("mini", None, API_VERSION, 401, "401"),
        ("mini", "wrong", API_VERSION, 401, "401"),
        ("mini", "invalid", API_VERSION, 401, "401"),
        ("mini", "az-key", None, 404, "404"),
        ("mini", "az-key", "latest", 404, "404"),
        ("gpt-5-unknown", "az-key", API_VERSION, 404, "DeploymentNotFound"),
    ],
)
def test_azure_refuses_what_azure_refuses(
    simulator: ProviderSimulator, deployment: str, key: str | None, version: str | None, status: int, code: str
) -> None:
    simulator.add_azure_deployment("mini", model="gpt-4o-mini", api_key="az-key")
    response = azure_call(simulator, deployment, key, version)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


def test_azure_refuses_a_bearer_token_in_place_of_the_api_key_header(simulator: ProviderSimulator) -> None:
    simulator.add_azure_deployment("mini", model="gpt-4o-mini")
    response = httpx.post(
        f"{simulator.base_urls()['azure']}/openai/deployments/mini/chat/completions?api-version={API_VERSION}",
        headers={"authorization": "Bearer az-key"},
        json=ASK,
    )
    assert response.status_code == 401


def test_the_official_azure_client_talks_to_the_azure_route(simulator: ProviderSimulator) -> None:
    simulator.add_azure_deployment("mini", model="gpt-4o-mini", api_key="az-key")
    simulator.set_quota("azure/mini", rpm=2, window_s=30)
    client = openai.AzureOpenAI(
        azure_endpoint=simulator.base_urls()["azure"], api_key="az-key", api_version=API_VERSION, max_retries=0
    )
    messages: Any = [{"role": "user", "content": "hi"}]
    raw = client.chat.completions.with_raw_response.create(model="mini", messages=messages, max_tokens=10)
    assert raw.headers["x-ratelimit-remaining-requests"] == "1"
    assert raw.parse().choices[0].message.content
    stream = client.chat.completions.create(model="mini", messages=messages, max_tokens=10, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == raw.parse().choices[0].message.content
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="mini", messages=messages, max_tokens=10)
    assert refused.value.response.headers["retry-after-ms"]
    [call] = [c for c in simulator.calls("azure") if c["fault"] == "quota"]
    assert call["deployment"] == "azure/mini" and call["model"] == "gpt-4o-mini"


def test_quotas_over_the_control_api(simulator: ProviderSimulator) -> None:
    control = f"{simulator.url}/_sim"
    assert httpx.post(f"{control}/azure/deployments", json={"name": "mini", "model": "gpt-4o-mini"}).status_code == 200
    assert (
        httpx.post(f"{control}/quotas", json={"deployment": "azure/mini", "rpm": 1, "window_s": 5}).status_code == 200
    )
    assert httpx.post(f"{control}/quotas", json={"deployment": "sk-a", "rpm": 0}).status_code == 400
    assert httpx.post(f"{control}/quotas", json={"deployment": "sk-a"}).status_code == 400  # neither rpm nor tpm
    assert [azure_call(simulator, "mini", key="any").status_code for _ in range(2)] == [200, 429]
    assert httpx.get(f"{control}/quotas").json()["azure/mini"] == {
        "requests": 2,
        "refused": 1,
        "rate_limited": 1,
        "tokens": ASK_TOKENS,
    }
    assert httpx.delete(f"{control}/quotas").status_code == 200
    assert httpx.get(f"{control}/quotas").json() == {}
    assert azure_call(simulator, "mini", key="any").status_code == 200  # no quota any more
