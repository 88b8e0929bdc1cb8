"""Anthropic's Messages API end to end (issue 16): the official ``anthropic`` client, with nothing but
``base_url`` and ``api_key`` changed, against the local stack (API Gateway bridge, the completion handler
under the streaming runtime loop, moto, the provider simulator in each provider's wire format).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from local.simulator import ProviderSimulator
from local.stack import LocalStack

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_real_aws")]

KEY = "key-a"  # tests/conftest.py
CLAUDE = "claude-3-5-haiku-latest"
WEATHER: Any = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
        "required": ["city", "days"],
    },
}


def prompt(text: str = "Tell me about rivers") -> str:
    return f"{text} ({uuid.uuid4().hex[:8]})"  # unique: never a cache hit


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


@pytest.fixture
def client(local_stack: LocalStack) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=local_stack.api_url or "", api_key=KEY, max_retries=0, timeout=60)


@pytest.fixture
def api(local_stack: LocalStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=local_stack.api_url or "", timeout=60, headers={"x-api-key": KEY}) as http:
        yield http


def sent(simulator: ProviderSimulator, provider: str) -> list[Any]:
    return simulator.calls(provider)


# --------------------------------------------------------------------------- non-streamed


def test_a_plain_message(client: anthropic.Anthropic, simulator: ProviderSimulator) -> None:
    message = client.messages.create(model=CLAUDE, max_tokens=200, messages=user(prompt()))
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_") and message.model == CLAUDE
    [block] = message.content
    assert block.type == "text" and block.text.startswith("[sim ")
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert message.usage.cache_read_input_tokens == 0
    assert (message.model_extra or {})["x_gateway"]["provider"] == "anthropic"
    [call] = sent(simulator, "anthropic")
    assert call["body"]["max_tokens"] == 200


def test_a_system_prompt_as_text_and_as_blocks_reaches_the_provider(
    client: anthropic.Anthropic, simulator: ProviderSimulator
) -> None:
    client.messages.create(model=CLAUDE, max_tokens=50, system="You are terse.", messages=user(prompt()))
    blocks: Any = [
        {"type": "text", "text": "You are terse."},
        {"type": "text", "text": "Answer in French.", "cache_control": {"type": "ephemeral"}},
    ]
    client.messages.create(model=CLAUDE, max_tokens=50, system=blocks, messages=user(prompt()))
    first, second = sent(simulator, "anthropic")
    assert first["body"]["system"] == "You are terse."
    assert second["body"]["system"] == blocks  # with its caching breakpoint, passed through


def test_cache_control_reaches_anthropic_and_not_openai(
    client: anthropic.Anthropic, simulator: ProviderSimulator
) -> None:
    content: Any = [{"type": "text", "text": prompt("A long document"), "cache_control": {"type": "ephemeral"}}]
    for model in (CLAUDE, "gpt-4o-mini"):
        message = client.messages.create(model=model, max_tokens=50, messages=[{"role": "user", "content": content}])
        assert message.usage.cache_creation_input_tokens == 0
    [claude] = sent(simulator, "anthropic")
    assert claude["body"]["messages"][0]["content"] == content
    [gpt] = sent(simulator, "openai")
    assert "cache_control" not in json.dumps(gpt["body"])


def test_cache_control_becomes_a_cache_point_on_bedrock(
    client: anthropic.Anthropic, simulator: ProviderSimulator
) -> None:
    system: Any = [{"type": "text", "text": "Rules.", "cache_control": {"type": "ephemeral"}}]
    message = client.messages.create(
        model="anthropic.claude-haiku-4-5-20251001-v1:0", max_tokens=50, system=system, messages=user(prompt())
    )
    assert (message.model_extra or {})["x_gateway"]["provider"] == "bedrock"
    [call] = sent(simulator, "bedrock")
    assert call["body"]["system"] == [{"text": "Rules."}, {"cachePoint": {"type": "default"}}]


def test_sampling_stop_sequences_and_user_id_are_passed_on(
    client: anthropic.Anthropic, simulator: ProviderSimulator
) -> None:
    client.messages.create(
        model=CLAUDE,
        max_tokens=64,
        extra_body={"temperature": 0.3, "top_p": 0.9, "top_k": 20},  # this client version has no sampling arguments
        stop_sequences=["END"],
        metadata={"user_id": "u-42"},
        messages=user(prompt()),
    )
    [call] = sent(simulator, "anthropic")
    body = call["body"]
    assert (body["temperature"], body["top_p"], body["top_k"], body["stop_sequences"]) == (0.3, 0.9, 20, ["END"])
    assert body["metadata"] == {"user_id": "u-42"}
    client.messages.create(model="gemini-2.0-flash", max_tokens=64, extra_body={"top_k": 7}, messages=user(prompt()))
    [gemini] = sent(simulator, "gemini")
    assert gemini["body"]["generationConfig"]["topK"] == 7


def test_a_tools_round_trip(client: anthropic.Anthropic, simulator: ProviderSimulator) -> None:
    question = user(prompt("What is the weather in Oslo? Use get_weather."))
    first = client.messages.create(model=CLAUDE, max_tokens=200, tools=[WEATHER], messages=question)
    assert first.stop_reason == "tool_use"
    [use] = [b for b in first.content if b.type == "tool_use"]
    assert use.name == "get_weather" and use.input["city"] and use.input["days"] >= 1
    history = [
        *question,
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "Sunny, 21 C"}]},
    ]
    second = client.messages.create(model=CLAUDE, max_tokens=200, tools=[WEATHER], messages=history)
    assert second.stop_reason == "end_turn"
    assert "Sunny, 21 C" in "".join(b.text for b in second.content if b.type == "text")
    wire = sent(simulator, "anthropic")[-1]["body"]["messages"]
    assert wire[1]["content"][-1]["type"] == "tool_use" and wire[1]["content"][-1]["id"] == use.id
    assert wire[2]["content"][0] == {"type": "tool_result", "tool_use_id": use.id, "content": "Sunny, 21 C"}


def test_forced_tool_choice_and_an_error_result(client: anthropic.Anthropic, simulator: ProviderSimulator) -> None:
    question = user(prompt("Weather please"))
    first = client.messages.create(
        model=CLAUDE,
        max_tokens=200,
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=question,
    )
    [use] = [b for b in first.content if b.type == "tool_use"]
    assert sent(simulator, "anthropic")[0]["body"]["tool_choice"] == {"type": "tool", "name": "get_weather"}
    history = [
        *question,
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": use.id,
                    "is_error": True,
                    "content": [{"type": "text", "text": "city not found"}],
                },
            ],
        },
    ]
    client.messages.create(model=CLAUDE, max_tokens=200, tools=[WEATHER], messages=history)
    result = sent(simulator, "anthropic")[-1]["body"]["messages"][2]["content"][0]
    assert result["content"] == "[tool error] city not found"


def test_routed_to_openai_and_gemini(client: anthropic.Anthropic, simulator: ProviderSimulator) -> None:
    for model, provider in (("gpt-4o-mini", "openai"), ("gemini-2.0-flash", "gemini")):
        message = client.messages.create(model=model, max_tokens=100, system="Be brief.", messages=user(prompt()))
        assert message.model == model and message.content[0].type == "text"
        assert (message.model_extra or {})["x_gateway"]["provider"] == provider
        assert len(sent(simulator, provider)) == 1
    openai_call = sent(simulator, "openai")[0]["body"]
    assert openai_call["messages"][0] == {"role": "system", "content": "Be brief."}


def test_tools_round_trip_on_openai(client: anthropic.Anthropic) -> None:
    question = user(prompt("What is the weather in Oslo? Use get_weather."))
    first = client.messages.create(model="gpt-4o-mini", max_tokens=200, tools=[WEATHER], messages=question)
    assert first.stop_reason == "tool_use"
    [use] = [b for b in first.content if b.type == "tool_use"]
    history = [
        *question,
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "Rain"}]},
    ]
    second = client.messages.create(model="gpt-4o-mini", max_tokens=200, tools=[WEATHER], messages=history)
    assert "Rain" in "".join(b.text for b in second.content if b.type == "text")


# --------------------------------------------------------------------------- errors


def test_an_unknown_model_is_a_not_found_error(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="no-such-model", max_tokens=10, messages=user("hi"))
    body: Any = caught.value.body
    assert caught.value.status_code == 404
    assert body["type"] == "error" and body["error"]["type"] == "not_found_error" and body["error"]["message"]


def test_no_key_or_a_wrong_key_is_an_authentication_error(local_stack: LocalStack, api: httpx.Client) -> None:
    wrong = anthropic.Anthropic(base_url=local_stack.api_url or "", api_key="nope", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as caught:
        wrong.messages.create(model=CLAUDE, max_tokens=10, messages=user("hi"))
    assert (caught.value.body or {})["error"]["type"] == "authentication_error"  # type: ignore[index]
    answer = httpx.post(f"{local_stack.api_url}/v1/messages", json={"model": CLAUDE, "max_tokens": 5})
    assert answer.status_code == 401
    assert answer.json()["type"] == "error" and answer.json()["error"]["type"] == "authentication_error"


def test_bad_requests_are_invalid_request_errors_naming_the_parameter(api: httpx.Client) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"model": CLAUDE, "messages": user("hi")}, "max_tokens"),
        ({"model": "gpt-4o-mini", "max_tokens": 5, "messages": user("hi"), "top_k": 5}, "top_k"),  # OpenAI has none
        ({"model": CLAUDE, "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
        ({"model": CLAUDE, "max_tokens": 5, "messages": user("hi"), "temperature": 1.5}, "temperature"),
    ]
    for body, param in cases:
        answer = api.post("/v1/messages", json=body)
        assert answer.status_code == 400, body
        error = answer.json()["error"]
        assert error["type"] == "invalid_request_error" and error["param"] == param, error


# --------------------------------------------------------------------------- streamed


def test_a_streamed_text_message(client: anthropic.Anthropic, simulator: ProviderSimulator) -> None:
    messages = user(prompt())
    expected = client.messages.create(model=CLAUDE, max_tokens=200, messages=messages)
    with client.messages.stream(model=CLAUDE, max_tokens=200, messages=messages) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) >= 3 and "".join(pieces) == expected.content[0].text  # type: ignore[union-attr]
    assert final.content[0].text == expected.content[0].text  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn" and final.id.startswith("msg_")
    assert final.usage.output_tokens == expected.usage.output_tokens
    assert final.usage.input_tokens == expected.usage.input_tokens  # message_delta's replace the estimate
    streamed = [c for c in simulator.calls("anthropic") if c.get("stream")]
    assert len(streamed) == 1 and streamed[0]["stream"]["outcome"] == "completed"


@pytest.mark.parametrize("model", [CLAUDE, "gpt-4o-mini"])
def test_a_streamed_tool_use(client: anthropic.Anthropic, model: str) -> None:
    question = user(prompt("What is the weather in Oslo? Use get_weather."))
    with client.messages.stream(model=model, max_tokens=200, tools=[WEATHER], messages=question) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    [use] = [b for b in final.content if b.type == "tool_use"]
    assert use.name == "get_weather" and use.input["city"] and use.input["days"] >= 1  # type: ignore[index]


def test_the_raw_event_stream(api: httpx.Client) -> None:
    body = {"model": CLAUDE, "max_tokens": 100, "messages": user(prompt()), "stream": True}
    with api.stream("POST", "/v1/messages", json=body) as answer:
        raw = b"".join(answer.iter_bytes())
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "text/event-stream; charset=utf-8"
    names = [line.removeprefix(b"event: ").decode() for line in raw.split(b"\n") if line.startswith(b"event: ")]
    assert names[0] == "message_start" and names[1] == "content_block_start"
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert names.count("content_block_delta") >= 3 and "error" not in names


def test_a_stream_cut_mid_way_raises_in_the_client(
    client: anthropic.Anthropic, simulator: ProviderSimulator, api: httpx.Client
) -> None:
    simulator.add_fault("stream_cut", provider="openai", after=3)
    received: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        client.messages.stream(model="gpt-4o-mini", max_tokens=200, messages=user(prompt())) as stream,
    ):
        received.extend(stream.text_stream)
    assert "".join(received).startswith("[sim ")  # some text came before the failure
    assert (caught.value.body or {})["error"]["code"] == "stream_interrupted"  # type: ignore[index]

    simulator.add_fault("stream_cut", provider="openai", after=3)
    body = {"model": "gpt-4o-mini", "max_tokens": 100, "messages": user(prompt()), "stream": True}
    with api.stream("POST", "/v1/messages", json=body) as answer:
        raw = b"".join(answer.iter_bytes())
    assert b"event: message_stop" not in raw and b"event: message_delta" not in raw
    assert raw.rstrip().split(b"\n")[-2] == b"event: error"


# --------------------------------------------------------------------------- count_tokens


def test_count_tokens_is_the_gateways_estimate(client: anthropic.Anthropic, simulator: ProviderSimulator) -> None:
    short = client.messages.count_tokens(model=CLAUDE, messages=user("Hello"))
    longer = client.messages.count_tokens(model=CLAUDE, messages=user("Hello " * 200), tools=[WEATHER])
    assert 0 < short.input_tokens < longer.input_tokens
    assert simulator.calls() == []  # no provider was asked
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="no-such-model", messages=user("Hello"))
