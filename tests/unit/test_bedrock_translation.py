"""Bedrock's Converse translation, error classification and configuration, in memory."""

from __future__ import annotations

import json

import httpx
import pytest

from llm_gateway.config import Settings
from llm_gateway.errors import (
    ContextTooLongError,
    ProviderAuthError,
    ProviderBadRequestError,
    ProviderUnavailableError,
    RateLimitedError,
)
from llm_gateway.models import Message, ProviderRequest
from llm_gateway.providers import bedrock_converse as converse
from llm_gateway.providers.bedrock import BedrockProvider, regional_model_id
from llm_gateway.wiring import configured_providers, provider_keys

TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}


def req(messages: list[dict], **kw) -> ProviderRequest:
    return ProviderRequest.model_validate({"model": "m", "max_tokens": 10, "messages": messages, **kw})


def test_system_apart_and_same_role_turns_merged():
    messages = [
        Message(role="system", content="one"),
        Message(role="system", content="two"),
        Message(role="user", content="a"),
        Message(role="user", content="b"),
        Message(role="assistant", content=""),
    ]
    system, turns = converse.conversation(messages, "m", with_tools=False)
    assert system == [{"text": "one"}, {"text": "two"}]
    assert turns == [
        {"role": "user", "content": [{"text": "a"}, {"text": "b"}]},
        {"role": "assistant", "content": [{"text": "(empty)"}]},  # Converse refuses blank text
    ]


def test_conversation_starts_with_a_user_turn():
    _, turns = converse.conversation([Message(role="assistant", content="hi")], "m", with_tools=False)
    assert [t["role"] for t in turns] == ["user", "assistant"]


@pytest.mark.parametrize(
    ("choice", "wire"),
    [
        ("auto", {"auto": {}}),
        ("required", {"any": {}}),
        ({"type": "function", "function": {"name": "lookup"}}, {"tool": {"name": "lookup"}}),
        (None, None),
    ],
)
def test_tool_choice(choice, wire):
    config = converse.tool_config(req([{"role": "user", "content": "x"}], tools=[TOOL], tool_choice=choice))
    assert config is not None
    assert config["tools"] == [
        {"toolSpec": {"name": "lookup", "inputSchema": {"json": {"type": "object", "properties": {}}}}}
    ]
    assert config.get("toolChoice") == wire


def test_tool_choice_none_sends_no_tools_and_history_as_text():
    history = [
        {"role": "user", "content": "x"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call.1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "call.1", "content": "42"},
    ]
    request = req(history, tools=[TOOL], tool_choice="none")
    assert converse.tool_config(request) is None
    _, turns = converse.conversation(request.messages, "m", with_tools=False)
    assert all("text" in block for turn in turns for block in turn["content"])


def test_tool_ids_are_made_safe_and_still_pair():
    history = [
        {"role": "user", "content": "x"},
        {
            "role": "assistant",
            "content": "calling",
            "tool_calls": [{"id": "call.1/a", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "call.1/a", "content": "42"},
    ]
    _, turns = converse.conversation(req(history).messages, "m", with_tools=True)
    use = turns[1]["content"][1]["toolUse"]
    result = turns[2]["content"][0]["toolResult"]
    assert use["toolUseId"] == result["toolUseId"] == "call_1_a"
    assert turns[1]["content"][0] == {"text": "calling"}


def test_answer_with_tool_calls_and_with_a_forced_structured_tool():
    blocks = [{"text": "let me"}, {"toolUse": {"toolUseId": "t1", "name": "lookup", "input": {"q": "é"}}}]
    text, finish, calls = converse.answer(blocks, req([{"role": "user", "content": "x"}], tools=[TOOL]), "tool_use")
    assert (text, finish) == ("let me", "tool_calls")
    assert calls[0].id == "t1" and json.loads(calls[0].function.arguments) == {"q": "é"}
    structured = converse.answer(blocks, req([{"role": "user", "content": "x"}]), "tool_use")
    assert structured == ('{"q": "é"}', "stop", [])


@pytest.mark.parametrize(
    ("reason", "finish"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("something_new", "error")],
)
def test_stop_reasons(reason, finish):
    assert converse.answer([{"text": "x"}], req([{"role": "user", "content": "x"}]), reason)[1] == finish


def test_images_need_a_supported_inline_format():
    with pytest.raises(ProviderBadRequestError):
        converse.conversation(
            req([{"role": "user", "content": [{"type": "image_url", "url": "data:image/bmp;base64,AAAA"}]}]).messages,
            "m",
            with_tools=False,
        )
    _, turns = converse.conversation(
        req([{"role": "user", "content": [{"type": "image_url", "url": "data:image/jpeg;base64,AAAA"}]}]).messages,
        "m",
        with_tools=False,
    )
    assert turns[0]["content"] == [{"image": {"format": "jpeg", "source": {"bytes": "AAAA"}}}]


@pytest.mark.parametrize(
    ("model", "region", "wire"),
    [
        ("us.anthropic.claude-3-5-haiku-20241022-v1:0", "eu-central-1", "eu.anthropic.claude-3-5-haiku-20241022-v1:0"),
        ("us.amazon.nova-lite-v1:0", "ap-northeast-1", "apac.amazon.nova-lite-v1:0"),
        ("us.amazon.nova-lite-v1:0", "us-west-2", "us.amazon.nova-lite-v1:0"),
        ("amazon.nova-lite-v1:0", "eu-west-1", "amazon.nova-lite-v1:0"),
    ],
)
def test_inference_profile_geography(model, region, wire):
    assert regional_model_id(model, region) == wire


@pytest.mark.parametrize(
    ("header", "message", "error"),
    [
        ("ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/", "slow down", RateLimitedError),
        ("ModelNotReadyException", "warming", ProviderUnavailableError),
        ("ServiceUnavailableException", "busy", ProviderUnavailableError),
        ("AccessDeniedException", "no access", ProviderAuthError),
        ("ValidationException", "Input is too long for requested model.", ContextTooLongError),
        ("ValidationException", "too many input tokens", ContextTooLongError),
        ("ValidationException", "extraneous key [x]", ProviderBadRequestError),
    ],
)
def test_errors_classified_from_the_error_type_header(header, message, error):
    provider = BedrockProvider(base_url="https://bedrock-runtime.us-east-1.amazonaws.com")
    response = httpx.Response(
        400, headers={"x-amzn-errortype": header}, json={"message": message}, request=httpx.Request("POST", "http://x")
    )
    assert type(provider._error(response, "m")) is error


def test_error_type_from_the_body_when_no_header():
    provider = BedrockProvider(base_url="https://bedrock-runtime.us-east-1.amazonaws.com")
    body = {"__type": "com.amazon.coral.service#UnrecognizedClientException", "message": "bad token"}
    response = httpx.Response(403, json=body, request=httpx.Request("POST", "http://x"))
    error = provider._error(response, "m")
    assert type(error) is ProviderAuthError and "UnrecognizedClientException" in error.message
    assert "bad token" not in error.message  # provider text stays out of what the caller sees


def test_region_is_required():
    with pytest.raises(ValueError):
        BedrockProvider(base_url="http://127.0.0.1:9/bedrock")


def test_settings_region_endpoint_and_switch():
    assert Settings.from_env({}).base_url("bedrock") is None
    assert Settings.from_env({"AWS_REGION": "eu-west-1"}).base_url("bedrock") == (
        "https://bedrock-runtime.eu-west-1.amazonaws.com"
    )
    both = Settings.from_env({"AWS_REGION": "eu-west-1", "BEDROCK_REGION": "us-west-2"})
    assert both.bedrock_region == "us-west-2"
    local = Settings.from_env({"AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": "http://127.0.0.1:1/b/"})
    assert local.base_url("bedrock") == "http://127.0.0.1:1/b"
    off = Settings.from_env({"AWS_REGION": "us-east-1", "GATEWAY_BEDROCK_ENABLED": "false"})
    assert off.base_url("bedrock") is None


def test_bedrock_is_configured_without_a_key_and_asks_no_key_store():
    settings = Settings.from_env({"AWS_REGION": "eu-west-1", "PROVIDER_KEYS_SECRET": "never-read"})
    assert "bedrock" not in provider_keys(Settings.from_env({"AWS_REGION": "eu-west-1"}))
    providers = configured_providers(settings, keys={})
    assert list(providers) == ["bedrock"]
    bedrock = providers["bedrock"]
    assert isinstance(bedrock, BedrockProvider) and bedrock.region == "eu-west-1" and bedrock.api_key is None


def test_keyed_providers_still_need_their_keys_next_to_bedrock():
    settings = Settings.from_env({"AWS_REGION": "eu-west-1"})
    providers = configured_providers(settings, keys={"openai": "sk-1", "anthropic": None})
    assert sorted(providers) == ["bedrock", "openai"]


def test_building_the_provider_does_not_import_botocore():
    """Cold start: botocore loads on the first Bedrock call only (checked in a fresh interpreter)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from llm_gateway.config import Settings\n"
        "from llm_gateway.wiring import configured_providers\n"
        "providers = configured_providers(Settings.from_env({'AWS_REGION': 'us-east-1'}), keys={})\n"
        "assert list(providers) == ['bedrock'], providers\n"
        "print('botocore' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "False"
