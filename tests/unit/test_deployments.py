"""Deployments from settings: the implicit single-key setup, listed entries, keys per deployment."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from llm_gateway.config import Settings
from llm_gateway.gateway import Gateway
from llm_gateway.providers.azure_openai import AzureOpenAIProvider
from llm_gateway.providers.bedrock import BedrockProvider
from llm_gateway.providers.openai import OpenAIProvider
from llm_gateway.quotas.deployments import ConfiguredDeployments, deployment_plan
from llm_gateway.routing.retry import RetryPolicy
from llm_gateway.wiring import Services, build_gateway, configured_deployments, provider_keys

AZURE = {
    "id": "azure-eastus",
    "provider": "openai",
    "kind": "azure_openai",
    "base_url": "https://contoso-eastus.openai.azure.com/",
    "api_version": "2024-10-21",
    "azure_deployments": {"gpt-4o-mini": "mini-prod"},
    "rpm": 300,
    "weight": 2,
}
SECOND_OPENAI = {"id": "openai-b", "provider": "openai", "key": "openai-b", "rpm": 60, "tpm": 90000}


def settings(deployments: list[dict[str, Any]] | None = None, **env: str) -> Settings:
    source = dict(env)
    if deployments is not None:
        source["GATEWAY_DEPLOYMENTS"] = json.dumps(deployments)
    return Settings.from_env(source)


def ids(deployments: ConfiguredDeployments, provider: str, model: str) -> list[str]:
    return [t.deployment.id for t in deployments.targets(provider, model)]


def test_the_single_key_setup_is_one_deployment_per_provider_named_after_it() -> None:
    config = settings(OPENAI_API_KEY="sk-a", ANTHROPIC_API_KEY="sk-ant")
    keys = provider_keys(config)
    assert keys == {"openai": "sk-a", "anthropic": "sk-ant", "gemini": None}
    deployments = configured_deployments(config, keys)
    assert [t.deployment.id for t in deployments.all] == ["openai", "anthropic"]
    [openai] = deployments.targets("openai", "gpt-4o-mini")
    assert openai.deployment.kind == "openai" and openai.deployment.rpm is None and not openai.deployment.models
    assert isinstance(openai.provider, OpenAIProvider) and openai.provider.api_key == "sk-a"
    assert deployments.targets("gemini", "gemini-2.0-flash") == []
    assert deployments.primary_adapters() == {"openai": openai.provider, "anthropic": deployments.all[1].provider}


def test_listed_deployments_join_the_implicit_one_each_with_its_own_adapter_and_key() -> None:
    config = settings([SECOND_OPENAI, AZURE], OPENAI_API_KEY="sk-a")
    keys = {"openai": "sk-a", "openai-b": "sk-b", "azure-eastus": "az-key"}
    deployments = configured_deployments(config, keys)
    assert ids(deployments, "openai", "gpt-4o-mini") == ["openai", "openai-b", "azure-eastus"]
    assert ids(deployments, "openai", "gpt-4o") == ["openai", "openai-b"]  # Azure deploys only what it maps
    openai, second, azure = deployments.all
    assert openai.provider is not second.provider and second.provider.api_key == "sk-b"
    assert (second.deployment.rpm, second.deployment.tpm) == (60, 90000)
    assert isinstance(azure.provider, AzureOpenAIProvider) and azure.provider.api_key == "az-key"
    assert azure.provider.base_url == "https://contoso-eastus.openai.azure.com"
    assert azure.deployment.kind == "azure_openai" and azure.deployment.weight == 2.0
    assert azure.deployment.models == frozenset({"gpt-4o-mini"})
    assert deployments.primary_adapters()["openai"] is openai.provider


def test_a_deployment_without_a_key_is_left_out_and_the_provider_stays_available_through_another() -> None:
    config = settings([AZURE])  # no OpenAI key at all: Azure alone serves the openai provider
    deployments = configured_deployments(config, {"openai": None, "azure-eastus": "az-key"})
    assert [t.deployment.id for t in deployments.all] == ["azure-eastus"]
    gateway = build_gateway(config, keys={"openai": None, "azure-eastus": "az-key"})
    assert gateway.router.available == {"openai"}
    assert isinstance(gateway.providers["openai"], AzureOpenAIProvider)
    assert ids(gateway.deployments, "openai", "gpt-4o-mini") == ["azure-eastus"]  # type: ignore[arg-type]


def test_an_entry_named_after_its_provider_refines_the_implicit_deployment() -> None:
    config = settings([{"id": "openai", "provider": "openai", "rpm": 500, "weight": 3}], OPENAI_API_KEY="sk-a")
    assert [e.id for e in deployment_plan(config)][:1] == ["openai"]
    keys = provider_keys(config)
    assert keys["openai"] == "sk-a"  # still the provider's key, found as today
    [openai] = configured_deployments(config, keys).targets("openai", "gpt-4o")
    assert (openai.deployment.rpm, openai.deployment.weight) == (500, 3.0)


def test_keys_come_from_the_environment_map_before_any_store() -> None:
    config = settings([SECOND_OPENAI], GATEWAY_DEPLOYMENT_KEYS=json.dumps({"openai-b": "sk-b"}))
    assert provider_keys(config)["openai-b"] == "sk-b"


def test_bedrock_deployments_in_two_regions_sign_each_in_its_own() -> None:
    config = settings(
        [
            {
                "id": "bedrock-west",
                "provider": "bedrock",
                "region": "us-west-2",
                "models": ["anthropic.claude-3-5-haiku-20241022-v1:0"],
            }
        ],
        AWS_REGION="us-east-1",
    )
    assert "bedrock-west" not in provider_keys(config)  # signed: no key is looked up
    deployments = configured_deployments(config, {})
    east, west = deployments.all
    assert isinstance(east.provider, BedrockProvider) and east.provider.region == "us-east-1"
    assert isinstance(west.provider, BedrockProvider) and west.provider.region == "us-west-2"
    assert west.provider.base_url == "https://bedrock-runtime.us-west-2.amazonaws.com"
    assert west.deployment.region == "us-west-2" and east.deployment.region == "us-east-1"


@pytest.mark.parametrize(
    ("entries", "why"),
    [
        ("[{", "JSON"),
        ('{"id": "x"}', "JSON list"),
        ([SECOND_OPENAI, SECOND_OPENAI], "appears twice"),
        ([{**AZURE, "base_url": None}], "needs base_url"),
        ([{**AZURE, "provider": "anthropic"}], "serves the openai provider"),
        ([{"id": "x", "provider": "anthropic", "kind": "openai"}], "cannot serve"),
        ([{"id": "x", "provider": "openai", "kind": "vertex"}], "kind must be one of"),
        ([{"id": "x", "provider": "openai", "secret": "prod/openai"}], "llm-gateway/"),
        ([{"id": "x", "provider": "openai", "api_version": "2024-10-21"}], "azure_openai deployments only"),
        ([{"id": "x", "provider": "bedrock"}], "needs a region"),
        ([{"id": "x", "provider": "openai", "rpm": 0}], "greater than or equal to 1"),
        ([{"id": "x y", "provider": "openai"}], "pattern"),
        ([{"id": "x", "provider": "openai", "base_url": "ftp://h"}], "http(s) URL"),
        ([{**AZURE, "azure_deployments": {"gpt-4o": "a/b"}}], "not a valid deployment name"),
        ([{"id": "x", "provider": "openai", "colour": "red"}], "Extra inputs"),
    ],
)
def test_a_bad_deployments_value_is_refused_at_startup_with_the_reason(entries: Any, why: str) -> None:
    raw = entries if isinstance(entries, str) else json.dumps(entries)
    with pytest.raises(ValidationError) as raised:
        Settings.from_env({"GATEWAY_DEPLOYMENTS": raw})
    assert why in str(raised.value)


def test_a_secret_of_its_own_may_be_named_by_arn_under_the_prefix() -> None:
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:llm-gateway/openai-b-AbCdEf"
    config = settings([{**SECOND_OPENAI, "secret": arn}])
    assert config.deployments[0].secret == arn


def test_a_gateway_built_without_deployments_derives_one_per_provider() -> None:
    config = settings(OPENAI_API_KEY="sk-a")
    built = build_gateway(config, keys={"openai": "sk-a"})
    bare = Gateway(
        catalog=built.catalog,
        router=built.router,
        providers=built.providers,
        retry=RetryPolicy(max_attempts=1),
        client=built.client,
    )
    [target] = bare.deployments.targets("openai", "gpt-4o-mini")
    assert target.deployment.id == "openai" and target.provider is built.providers["openai"]


def test_services_rebuild_the_gateway_when_any_deployment_key_changes() -> None:
    config = settings([SECOND_OPENAI], OPENAI_API_KEY="sk-a")
    current = {"openai": "sk-a", "openai-b": "sk-b"}
    services = Services(config, read_keys=lambda _: dict(current))
    first = services.gateway()
    assert services.gateway() is first
    current["openai-b"] = "sk-b-rotated"
    second = services.gateway()
    assert second is not first
    [_, rotated] = second.deployments.targets("openai", "gpt-4o")
    assert rotated.provider.api_key == "sk-b-rotated"


def test_the_readme_example_is_a_valid_deployments_value() -> None:
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    example = readme.split("`deployments.json`", 1)[1].split("```json\n", 1)[1].split("```", 1)[0]
    config = Settings.from_env({"GATEWAY_DEPLOYMENTS": example, "OPENAI_API_KEY": "sk-a"})
    keys = {"openai": "sk-a", "openai-org-b": "sk-b", "azure-eastus": "az"}
    deployments = configured_deployments(config, keys)
    assert ids(deployments, "openai", "gpt-4o-mini") == ["openai", "openai-org-b", "azure-eastus"]
    assert ids(deployments, "openai", "gpt-4o") == ["openai", "openai-org-b"]
    azure = deployments.all[-1].provider
    assert isinstance(azure, AzureOpenAIProvider) and azure.deployment_names == {"gpt-4o-mini": "gpt-4o-mini-prod"}
    assert len(example) <= 4096  # a CloudFormation parameter value
