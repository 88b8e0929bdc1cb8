"""Deployments' keys from the stores they name (moto's Secrets Manager and SSM, over real sockets), and a
request through the local stack's HTTP API reaching the simulator with the deployment's own key."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from llm_gateway import aws, wiring
from llm_gateway.config import Settings
from llm_gateway.errors import ProviderKeysUnavailableError
from local.simulator import ProviderSimulator
from local.stack import LocalStack

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_real_aws")]


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, local_stack: LocalStack) -> Iterator[pytest.MonkeyPatch]:
    wiring.reset()
    yield monkeypatch
    monkeypatch.undo()
    wiring.reset()


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def test_each_deployment_reads_its_key_from_the_store_it_names(
    aws_clients: Any, environment: pytest.MonkeyPatch
) -> None:
    shared = unique("provider-keys")
    aws_clients("secretsmanager").create_secret(
        Name=shared, SecretString=json.dumps({"openai": "sk-a", "openai-b": "sk-b", "openai-c-entry": "sk-c"})
    )
    own_plain = unique("llm-gateway/azure-east")
    aws_clients("secretsmanager").create_secret(Name=own_plain, SecretString="az-east-key")
    own_json = unique("llm-gateway/azure-west")
    aws_clients("secretsmanager").create_secret(Name=own_json, SecretString=json.dumps({"api_key": "az-west-key"}))
    param = f"/llm-gateway/{unique('openai-d')}"
    aws_clients("ssm").put_parameter(Name=param, Value="sk-d", Type="SecureString")
    azure = {"provider": "openai", "kind": "azure_openai", "base_url": "https://contoso.openai.azure.com"}
    deployments = [
        {"id": "openai-b", "provider": "openai"},
        {"id": "openai-c", "provider": "openai", "key": "openai-c-entry"},
        {"id": "openai-d", "provider": "openai", "key_param": param},
        {"id": "azure-east", **azure, "secret": own_plain},
        {"id": "azure-west", **azure, "secret": own_json},
        {"id": "openai-e", "provider": "openai"},  # no entry anywhere: not configured
    ]
    settings = Settings.from_env({"PROVIDER_KEYS_SECRET": shared, "GATEWAY_DEPLOYMENTS": json.dumps(deployments)})
    aws.secrets().clear_cache()
    keys = wiring.provider_keys(settings)
    assert keys == {
        "openai": "sk-a",
        "anthropic": None,
        "gemini": None,
        "openai-b": "sk-b",
        "openai-c": "sk-c",
        "openai-d": "sk-d",
        "azure-east": "az-east-key",
        "azure-west": "az-west-key",
        "openai-e": None,
    }
    configured = wiring.configured_deployments(settings, keys)
    targets = configured.targets("openai", "gpt-4o")
    assert [(t.deployment.id, t.provider.api_key) for t in targets] == [
        ("openai", "sk-a"),
        ("openai-b", "sk-b"),
        ("openai-c", "sk-c"),
        ("openai-d", "sk-d"),
        ("azure-east", "az-east-key"),
        ("azure-west", "az-west-key"),
    ]


def test_a_deployment_whose_secret_cannot_be_read_makes_the_keys_unavailable(
    aws_clients: Any, environment: pytest.MonkeyPatch
) -> None:
    deployments = [{"id": "openai-b", "provider": "openai", "secret": unique("llm-gateway/missing")}]
    settings = Settings.from_env({"GATEWAY_DEPLOYMENTS": json.dumps(deployments)})
    with pytest.raises(ProviderKeysUnavailableError):
        wiring.provider_keys(settings)


def test_a_request_through_the_api_uses_the_first_deployment_s_own_key(
    local_stack: LocalStack, aws_clients: Any, environment: pytest.MonkeyPatch, simulator: ProviderSimulator
) -> None:
    shared = unique("provider-keys")
    aws_clients("secretsmanager").create_secret(Name=shared, SecretString=json.dumps({"openai-b": "sk-b"}))
    environment.delenv("OPENAI_API_KEY", raising=False)  # no implicit OpenAI deployment
    environment.setenv("PROVIDER_KEYS_SECRET", shared)
    environment.setenv("GATEWAY_DEPLOYMENTS", json.dumps([{"id": "openai-b", "provider": "openai", "rpm": 60}]))
    wiring.reset()
    simulator.set_quota("sk-b", rpm=60, window_s=30)
    assert local_stack.api_url
    with httpx.Client(base_url=local_stack.api_url, timeout=60, headers={"x-api-key": "key-a"}) as api:
        body = {"model": "gpt-4o-mini", "fallback": [], "messages": [{"role": "user", "content": unique("hi")}]}
        response = api.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["provider"] == "openai"
    [call] = simulator.calls("openai")
    assert call["deployment"] == "sk-b"  # the key from its entry in the provider-keys secret
    assert simulator.quota_stats()["sk-b"]["requests"] == 1
