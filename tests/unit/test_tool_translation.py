"""Tool calling translated by each adapter, both ways: OpenAI (pass-through), Anthropic, Gemini.

One OpenAI-shaped conversation (two tools, one nested, one without arguments; two parallel calls and
their results) goes to every provider; what each sends and what each answer becomes are checked field
by field.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from llm_gateway.errors import InvalidRequestError
from llm_gateway.models import CompletionRequest, JsonSchemaFormat, ProviderRequest
from llm_gateway.providers.anthropic import AnthropicProvider
from llm_gateway.providers.gemini import GeminiProvider
from llm_gateway.providers.openai import OpenAIProvider

ADDRESS = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "City name"},
        "unit": {"type": ["string", "null"], "enum": ["c", "f", None]},
        "where": {"$ref": "#/$defs/point"},
        "tags": {"type": "array", "items": {"type": "object", "properties": {"k": {"type": "string"}}}},
    },
    "required": ["city", "where"],
    "additionalProperties": False,
    "$defs": {"point": {"type": "object", "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}}}},
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather now", "parameters": ADDRESS}},
    {"type": "function", "function": {"name": "get_time"}},  # no arguments
]
CALLS = [
    {"id": "call_a1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
    {"id": "call:b/2", "type": "function", "function": {"name": "get_time", "arguments": ""}},
]
CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather and time in Oslo?"},
    {"role": "assistant", "content": None, "tool_calls": CALLS},
    {"role": "tool", "tool_call_id": "call_a1", "content": '{"temp": 3}'},
    {"role": "tool", "tool_call_id": "call:b/2", "content": "12:00"},
]


def wire_request(**changes: Any) -> ProviderRequest:
    fields: dict[str, Any] = {"messages": CONVERSATION, "tools": TOOLS, **changes}
    request = CompletionRequest.model_validate(fields)
    return ProviderRequest(
        model="m",
        messages=request.messages,
        max_tokens=100,
        response_format=request.response_format,
        native_structured=request.response_format is not None,
        tools=request.tools,
        tool_choice=request.tool_choice,
        parallel_tool_calls=request.parallel_tool_calls,
    )


def body_for(provider: Any, **changes: Any) -> dict[str, Any]:
    wire: dict[str, Any] = provider(base_url="http://x", api_key="k").build_request(wire_request(**changes)).body
    return wire


# --------------------------------------------------------------------------- OpenAI: pass-through


def test_openai_passes_tools_and_tool_turns_through() -> None:
    body = body_for(OpenAIProvider, tool_choice="required", parallel_tool_calls=False)
    assert body["tools"] == [
        {"type": "function", "function": {"name": "get_weather", "description": "Weather now", "parameters": ADDRESS}},
        {"type": "function", "function": {"name": "get_time"}},
    ]
    assert (body["tool_choice"], body["parallel_tool_calls"]) == ("required", False)
    assistant, first, second = body["messages"][2:]
    assert assistant == {"role": "assistant", "content": None, "tool_calls": CALLS}
    assert first == {"role": "tool", "tool_call_id": "call_a1", "content": '{"temp": 3}'}
    assert second == {"role": "tool", "tool_call_id": "call:b/2", "content": "12:00"}


def test_openai_named_choice_and_strict_pass_through() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}, "strict": True}}]
    request = {"messages": [{"role": "user", "content": "hi"}], "tools": tools}
    choice = {"type": "function", "function": {"name": "f"}}
    body = body_for(OpenAIProvider, **request, tool_choice=choice)
    assert body["tools"][0]["function"]["strict"] is True
    assert body["tool_choice"] == choice
    assert "parallel_tool_calls" not in body


def test_openai_answer_with_parallel_calls() -> None:
    answer = {
        "id": "chatcmpl-1",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {"role": "assistant", "content": None, "tool_calls": CALLS},
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5},
    }
    response = OpenAIProvider(base_url="http://x", api_key="k").parse_response(answer, wire_request())
    assert response.finish_reason == "tool_calls" and response.content == ""
    assert [c.model_dump() for c in response.tool_calls or []] == CALLS


# --------------------------------------------------------------------------- Anthropic


def test_anthropic_tools_are_input_schemas_with_an_object_root() -> None:
    body = body_for(AnthropicProvider)
    assert body["tools"] == [
        {"name": "get_weather", "description": "Weather now", "input_schema": ADDRESS},
        {"name": "get_time", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in body  # Anthropic's default with tools is auto


@pytest.mark.parametrize(
    ("choice", "parallel", "wire"),
    [
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        ({"type": "function", "function": {"name": "get_time"}}, None, {"type": "tool", "name": "get_time"}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
    ],
)
def test_anthropic_tool_choice(choice: Any, parallel: bool | None, wire: dict[str, Any]) -> None:
    changes: dict[str, Any] = {"parallel_tool_calls": parallel}
    if choice is not None:
        changes["tool_choice"] = choice
    assert body_for(AnthropicProvider, **changes)["tool_choice"] == wire


def test_anthropic_calls_are_tool_use_blocks_and_results_share_one_user_turn() -> None:
    body = body_for(AnthropicProvider)
    assert body["system"] == "Be brief."
    user, assistant, results = body["messages"]
    assert user == {"role": "user", "content": [{"type": "text", "text": "Weather and time in Oslo?"}]}
    assert assistant == {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "call_a1", "name": "get_weather", "input": {"city": "Oslo"}},
            # Anthropic's ids allow [A-Za-z0-9_-] only; empty arguments are an empty object.
            {"type": "tool_use", "id": "call_b_2", "name": "get_time", "input": {}},
        ],
    }
    assert results == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "call_a1", "content": '{"temp": 3}'},
            {"type": "tool_result", "tool_use_id": "call_b_2", "content": "12:00"},
        ],
    }


def test_anthropic_user_text_after_results_follows_them_in_the_same_turn() -> None:
    messages = [*CONVERSATION, {"role": "user", "content": "And tomorrow?"}]
    results = body_for(AnthropicProvider, messages=messages)["messages"][2]
    assert [b["type"] for b in results["content"]] == ["tool_result", "tool_result", "text"]


def test_anthropic_answer_tool_use_blocks_become_tool_calls() -> None:
    answer = {
        "id": "msg_1",
        "stop_reason": "tool_use",
        "content": [
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo", "where": {}}},
            {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}},
        ],
        "usage": {"input_tokens": 10, "output_tokens": 5},
    }
    response = AnthropicProvider(base_url="http://x", api_key="k").parse_response(answer, wire_request())
    assert (response.finish_reason, response.content) == ("tool_calls", "Let me look.")
    calls = response.tool_calls or []
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("toolu_1", "get_weather", {"city": "Oslo", "where": {}}),
        ("toolu_2", "get_time", {}),
    ]


def test_anthropic_with_tools_asks_for_a_response_schema_in_the_prompt() -> None:
    fmt = {"type": "json_schema", "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}
    body = body_for(AnthropicProvider, response_format=fmt)
    assert [t["name"] for t in body["tools"]] == ["get_weather", "get_time"]  # no forced result tool
    assert "JSON Schema" in body["system"]


# --------------------------------------------------------------------------- Gemini


def test_gemini_declares_every_function_in_one_entry_translated() -> None:
    body = body_for(GeminiProvider)
    assert len(body["tools"]) == 1
    weather, clock = body["tools"][0]["functionDeclarations"]
    assert clock == {"name": "get_time"}  # no arguments: no parameters at all
    params = weather["parameters"]
    assert weather["description"] == "Weather now"
    assert params["required"] == ["city", "where"]
    assert params["properties"]["unit"] == {"type": "string", "enum": ["c", "f"], "nullable": True}
    assert params["properties"]["where"]["properties"]["lat"] == {"type": "number"}  # $ref inlined
    assert params["properties"]["tags"]["items"]["properties"]["k"] == {"type": "string"}
    assert "additionalProperties" not in json.dumps(params) and "$defs" not in params


def test_gemini_parameters_its_subset_cannot_say_go_as_json_schema() -> None:
    free_form = {"type": "object", "properties": {"anything": {}}}
    tools = [{"type": "function", "function": {"name": "f", "parameters": free_form}}]
    body = body_for(GeminiProvider, messages=[{"role": "user", "content": "hi"}], tools=tools)
    assert body["tools"][0]["functionDeclarations"] == [{"name": "f", "parametersJsonSchema": free_form}]


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("auto", {"mode": "AUTO"}),
        ("required", {"mode": "ANY"}),
        ("none", {"mode": "NONE"}),
        ({"type": "function", "function": {"name": "get_time"}}, {"mode": "ANY", "allowedFunctionNames": ["get_time"]}),
    ],
)
def test_gemini_function_calling_config(choice: Any, config: dict[str, Any]) -> None:
    assert body_for(GeminiProvider, tool_choice=choice)["toolConfig"] == {"functionCallingConfig": config}


def test_gemini_calls_and_merged_results_named_by_call_id() -> None:
    body = body_for(GeminiProvider)
    user, model, results = body["contents"]
    assert user == {"role": "user", "parts": [{"text": "Weather and time in Oslo?"}]}
    assert model == {
        "role": "model",
        "parts": [
            {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}},
            {"functionCall": {"name": "get_time", "args": {}}},
        ],
    }
    assert results == {
        "role": "user",
        "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"temp": 3}}},
            {"functionResponse": {"name": "get_time", "response": {"output": "12:00"}}},
        ],
    }


def test_gemini_with_tools_drops_the_json_response_type() -> None:
    fmt = {"type": "json_schema", "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}
    body = body_for(GeminiProvider, response_format=fmt)
    assert "responseMimeType" not in body["generationConfig"]
    assert "JSON Schema" in body["systemInstruction"]["parts"][0]["text"]


def gemini_answer(response_id: str = "resp-1") -> dict[str, Any]:
    return {
        "responseId": response_id,
        "candidates": [
            {
                "finishReason": "STOP",
                "content": {
                    "role": "model",
                    "parts": [
                        {"functionCall": {"name": "get_weather", "args": {"city": "Oslo", "where": {"lat": 1}}}},
                        {"functionCall": {"name": "get_time", "args": {}}},
                        {"functionCall": {"id": "given-id", "name": "get_time"}},
                    ],
                },
            }
        ],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5},
    }


def test_gemini_function_calls_become_tool_calls_with_stable_ids() -> None:
    provider = GeminiProvider(base_url="http://x", api_key="k")
    response = provider.parse_response(gemini_answer(), wire_request())
    again = provider.parse_response(gemini_answer(), wire_request())
    other = provider.parse_response(gemini_answer("resp-2"), wire_request())
    calls = response.tool_calls or []
    assert response.finish_reason == "tool_calls"
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Oslo", "where": {"lat": 1}}),
        ("get_time", {}),
        ("get_time", {}),
    ]
    ids = [c.id for c in calls]
    assert ids[2] == "given-id" and len(set(ids)) == 3 and all(i.startswith("call_") for i in ids[:2])
    assert ids == [c.id for c in again.tool_calls or []]  # stable for the same response
    assert ids[:2] != [c.id for c in other.tool_calls or []][:2]  # and distinct across responses


def test_gemini_without_parallel_calls_keeps_the_first() -> None:
    provider = GeminiProvider(base_url="http://x", api_key="k")
    response = provider.parse_response(gemini_answer(), wire_request(parallel_tool_calls=False))
    assert [c.function.name for c in response.tool_calls or []] == ["get_weather"]


# --------------------------------------------------------------------------- across providers


def test_an_anthropic_answer_continues_on_gemini() -> None:
    """Ids Anthropic made go back as tool results named through the assistant turn (Gemini has no ids)."""
    answer = {
        "stop_reason": "tool_use",
        "content": [{"type": "tool_use", "id": "toolu_9", "name": "get_time", "input": {}}],
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
    call = (
        AnthropicProvider(base_url="http://x", api_key="k").parse_response(answer, wire_request()).tool_calls or []
    )[0]
    messages = [
        {"role": "user", "content": "time?"},
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "[1, 2]"},
    ]
    contents = body_for(GeminiProvider, messages=messages)["contents"]
    assert contents[2]["parts"] == [{"functionResponse": {"name": "get_time", "response": {"output": [1, 2]}}}]


def test_tool_history_without_tools_goes_as_text() -> None:
    """Anthropic refuses tool blocks in a request without tools; such history is sent as text."""
    body = body_for(AnthropicProvider, tools=None)
    assert "tools" not in body
    kinds = {b["type"] for turn in body["messages"] for b in turn["content"]}
    assert kinds == {"text"}
    assert "get_weather" in body["messages"][1]["content"][0]["text"]


# --------------------------------------------------------------------------- the request's rules


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        (CONVERSATION[:4], "messages"),  # a call left unanswered at the end
        ([*CONVERSATION[:4], {"role": "user", "content": "x"}, CONVERSATION[4]], "messages.4"),
        ([CONVERSATION[1], CONVERSATION[3]], "messages.1.tool_call_id"),
    ],
)
def test_tool_turns_must_pair_with_calls(messages: list[dict[str, Any]], param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        CompletionRequest.model_validate({"messages": messages, "tools": TOOLS})
    assert info.value.details["param"] == param


def test_tools_require_the_tools_capability_and_schema_format_is_kept() -> None:
    request = CompletionRequest.model_validate(
        {"messages": CONVERSATION, "response_format": {"type": "json_schema", "schema": {"type": "object"}}}
    )
    assert "tools" in request.required_capabilities()  # tool turns, even without tools
    assert isinstance(request.response_format, JsonSchemaFormat)
