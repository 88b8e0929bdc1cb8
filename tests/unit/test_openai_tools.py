"""Tool calling on the OpenAI Chat Completions route: tool turns in, ``tool_calls`` out."""

from __future__ import annotations

from typing import Any

from llm_gateway.http import framing as api
from llm_gateway.http import openai_chat
from llm_gateway.models import CompletionRequest, CompletionResult, Message, ProviderRequest, Usage
from llm_gateway.providers.openai import OpenAICompatibleProvider
from llm_gateway.tool_models import NamedToolChoice, ToolCall

CALL = {"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
TOOLS = [{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}]


def convert(**body: Any) -> CompletionRequest:
    data = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "time?"}], **body}
    return openai_chat.to_gateway_request(api.validate(openai_chat.ChatCompletionsBody, data))


def test_tool_turns_and_fields_become_the_gateways_request() -> None:
    request = convert(
        messages=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": "time?"},
            {"role": "assistant", "content": "", "tool_calls": [CALL], "function_call": None},
            {
                "role": "tool",
                "tool_call_id": "call_1",
                "content": [{"type": "text", "text": "12"}, {"type": "text", "text": "00"}],
            },
        ],
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        parallel_tool_calls=False,
    )
    assistant, result = request.messages[2:]
    assert assistant.content is None and assistant.tool_calls == [ToolCall.model_validate(CALL)]
    assert (result.role, result.tool_call_id, result.content) == ("tool", "call_1", "12\n00")
    assert isinstance(request.tool_choice, NamedToolChoice) and request.tool_choice.function.name == "get_time"
    assert request.parallel_tool_calls is False and request.tools and request.tools[0].function.name == "get_time"
    assert "tools" in request.required_capabilities()


def test_an_empty_tools_list_is_no_tools() -> None:
    assert convert(tools=[]).tools is None


def result(**changes: Any) -> CompletionResult:
    values: dict[str, Any] = {
        "content": "",
        "tool_calls": [ToolCall.model_validate(CALL)],
        "provider": "anthropic",
        "model": "claude-haiku-4-5",
        "finish_reason": "tool_calls",
        "usage": Usage(input_tokens=5, output_tokens=2),
        "cost_usd": 0.0,
        "latency_ms": 1.0,
        "attempts": [],
    }
    return CompletionResult(**{**values, **changes})


def test_the_answer_has_tool_calls_and_null_content() -> None:
    choice = openai_chat.to_chat_completion(result())["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {"role": "assistant", "content": None, "refusal": None, "tool_calls": [CALL]}
    with_text = openai_chat.to_chat_completion(result(content="Checking."))["choices"][0]["message"]
    assert with_text["content"] == "Checking." and with_text["tool_calls"] == [CALL]
    plain = openai_chat.to_chat_completion(result(tool_calls=None, finish_reason="stop", content="hi"))
    assert "tool_calls" not in plain["choices"][0]["message"]


def test_an_openai_compatible_server_giving_arguments_as_an_object() -> None:
    answer = {
        "choices": [
            {
                "finish_reason": "tool_calls",
                "message": {
                    "content": None,
                    "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}],
                },
            }
        ]
    }
    request = ProviderRequest(model="m", messages=[Message(role="user", content="x")], max_tokens=5)
    response = OpenAICompatibleProvider(base_url="http://x", api_key=None).parse_response(answer, request)
    assert [c.function.arguments for c in response.tool_calls or []] == ['{"a": 1}']
