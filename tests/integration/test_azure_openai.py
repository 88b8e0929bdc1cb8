"""The Azure OpenAI adapter and deployments against the simulator, over real sockets: buffered and streamed
answers, Azure's errors, and the rate-limit headers parsed end to end into ``rate_limits``."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from llm_gateway import errors
from llm_gateway.config import Settings
from llm_gateway.interfaces import RequestContext
from llm_gateway.models import CompletionRequest, Message, ProviderRequest
from llm_gateway.providers.azure_openai import AzureOpenAIProvider
from llm_gateway.providers.openai import OpenAIProvider
from llm_gateway.routing.deadline import Deadline
from llm_gateway.routing.retry import RetryPolicy
from llm_gateway.runtime import run_sync
from llm_gateway.streaming.events import StreamEnd, TextDelta
from llm_gateway.wiring import build_gateway
from local.simulator import ProviderSimulator
from tests.support.sim_streams import stream_record

pytestmark = pytest.mark.integration

API_VERSION = "2024-10-21"
REQUEST = ProviderRequest(model="gpt-4o-mini", messages=[Message(role="user", content="hi")], max_tokens=10)


def azure(sim: ProviderSimulator, key: str = "az-key", **extra: Any) -> AzureOpenAIProvider:
    return AzureOpenAIProvider(
        base_url=sim.base_urls()["azure"],
        api_key=key,
        api_version=extra.pop("api_version", API_VERSION),
        deployment_names=extra.pop("deployment_names", {"gpt-4o-mini": "mini-east"}),
        **extra,
    )


def complete(provider: Any, request: ProviderRequest = REQUEST) -> Any:
    async def go() -> Any:
        async with httpx.AsyncClient() as client:
            return await provider.complete(request, client=client, timeout_s=5.0)

    return run_sync(go())


def stream(provider: Any, request: ProviderRequest = REQUEST) -> list[Any]:
    async def go() -> list[Any]:
        async with httpx.AsyncClient() as client:
            events = provider.stream(request, client=client, timeout_s=5, first_byte_timeout_s=5, idle_timeout_s=5)
            return [event async for event in events]

    return run_sync(go())


@pytest.fixture
def east(simulator: ProviderSimulator) -> ProviderSimulator:
    simulator.add_azure_deployment("mini-east", model="gpt-4o-mini", api_key="az-key")
    return simulator


def test_a_buffered_answer_through_the_azure_url_with_its_quota_headers(east: ProviderSimulator) -> None:
    east.set_quota("azure/mini-east", rpm=5, tpm=1000, window_s=30)
    before = time.time()
    response = complete(azure(east))
    assert response.content.startswith("[sim azure/") and response.finish_reason == "length"  # 10 tokens asked
    assert response.raw_model == "gpt-4o-mini" and response.usage.input_tokens == 5
    [call] = east.calls("azure")
    assert call["path"] == "/azure/openai/deployments/mini-east/chat/completions"
    assert "model" not in call["body"]  # the deployment decides the model
    assert call["deployment"] == "azure/mini-east" and call["model"] == "gpt-4o-mini"
    snapshot = response.rate_limits
    assert snapshot is not None
    assert (snapshot.remaining_requests, snapshot.remaining_tokens) == (4, 1000 - 15)
    assert snapshot.limit_requests is None and snapshot.requests_reset_at is None  # Azure states only these
    assert snapshot.exhausted_until() is None and before <= time.time()


def test_a_streamed_answer_through_the_azure_url_ends_with_the_snapshot(east: ProviderSimulator) -> None:
    east.set_quota("azure/mini-east", rpm=1, window_s=30)
    events = stream(azure(east))
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.finish_reason == "length" and text.startswith("[sim azure/")
    assert end.usage is not None and end.usage.input_tokens == 5  # stream_options.include_usage is honoured
    assert end.rate_limits is not None and end.rate_limits.remaining_requests == 0
    [call] = east.calls("azure")
    # The simulator files the stream's outcome once its writer returns, which can trail the client's last read.
    assert call["body"]["stream"] is True and stream_record(east, "azure")["outcome"] == "completed"


@pytest.mark.parametrize("streamed", [False, True])
def test_past_the_quota_a_429_with_azure_s_retry_headers(east: ProviderSimulator, streamed: bool) -> None:
    east.set_quota("azure/mini-east", rpm=1, window_s=30)
    complete(azure(east))
    started = time.time()
    with pytest.raises(errors.RateLimitedError) as raised:
        stream(azure(east)) if streamed else complete(azure(east))
    error = raised.value
    assert error.status_code == 429 and error.provider == "azure_openai"
    assert error.retry_after is not None and 0 < error.retry_after <= 30  # from retry-after-ms
    snapshot = error.rate_limits
    assert snapshot is not None and snapshot.remaining_requests == 0
    until = snapshot.exhausted_until()
    assert until is not None and started < until <= started + 30.5
    assert east.quota_stats()["azure/mini-east"]["refused"] == 1


def test_openai_keys_as_two_deployments_and_their_headers_end_to_end(simulator: ProviderSimulator) -> None:
    simulator.set_quota("sk-a", rpm=1, tpm=500, window_s=30)
    provider = OpenAIProvider(base_url=simulator.base_urls()["openai"], api_key="sk-a")
    first = complete(provider)
    assert first.rate_limits is not None
    assert (first.rate_limits.limit_requests, first.rate_limits.remaining_requests) == (1, 0)
    assert first.rate_limits.remaining_tokens == 500 - 15
    reset_at = first.rate_limits.requests_reset_at
    assert reset_at is not None and time.time() < reset_at <= time.time() + 30
    assert first.rate_limits.exhausted_until() == reset_at  # "0 left": not to be called before the reset
    with pytest.raises(errors.RateLimitedError):
        complete(provider)
    other = complete(OpenAIProvider(base_url=simulator.base_urls()["openai"], api_key="sk-b"))
    assert other.content  # another key, another deployment


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ({"key": "wrong"}, errors.ProviderAuthError),
        ({"deployment_names": {"gpt-4o-mini": "not-deployed"}}, errors.ProviderBadRequestError),
        ({"api_version": "latest"}, errors.ProviderBadRequestError),
    ],
)
def test_azure_refusals_map_onto_the_error_tree(east: ProviderSimulator, setup: dict[str, Any], expected: type) -> None:
    with pytest.raises(expected) as raised:
        complete(azure(east, **setup))
    assert raised.value.status_code in (401, 404)


def test_a_filtered_prompt_is_content_filtered(east: ProviderSimulator) -> None:
    east.add_fault("content_filter", provider="azure", times=1)
    with pytest.raises(errors.ContentFilteredError) as raised:
        complete(azure(east))
    assert raised.value.status_code == 400


# --------------------------------------------------------------------------- through the gateway


def test_the_gateway_serves_a_model_from_an_azure_deployment(east: ProviderSimulator) -> None:
    deployments = [
        {
            "id": "azure-east",
            "provider": "openai",
            "kind": "azure_openai",
            "base_url": east.base_urls()["azure"],
            "api_version": API_VERSION,
            "azure_deployments": {"gpt-4o-mini": "mini-east"},
        }
    ]
    settings = Settings.from_env(
        {
            "GATEWAY_DEPLOYMENTS": json.dumps(deployments),
            "GATEWAY_DEPLOYMENT_KEYS": json.dumps({"azure-east": "az-key"}),
        }
    )
    gateway = build_gateway(settings, retry=RetryPolicy(max_attempts=1))
    assert [t.deployment.id for t in gateway.deployments.targets("openai", "gpt-4o-mini")] == ["azure-east"]
    ctx = RequestContext(tenant="t1", request_id="r1", deadline=Deadline(20.0))
    request = CompletionRequest.model_validate(
        {"model": "gpt-4o-mini", "fallback": [], "messages": [{"role": "user", "content": "hi"}]}
    )
    result = run_sync(gateway.complete(request, ctx))
    assert result.provider == "openai" and result.model == "gpt-4o-mini"
    assert result.content.startswith("[sim azure/")
    [call] = east.calls()
    assert call["provider"] == "azure" and call["deployment"] == "azure/mini-east"
