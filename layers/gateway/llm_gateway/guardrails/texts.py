"""The texts of a request and of an answer, and copies of them with each text changed: what the
guardrail pipeline scans and redacts. Tool-call arguments are changed inside their JSON strings, so
they stay JSON (a redacted or restored value is escaped as JSON needs)."""

from __future__ import annotations

from collections.abc import Callable

from llm_gateway.guardrails.redaction import Vault, map_json_strings, restore_json
from llm_gateway.models import Choice, CompletionResult, Message, TextPart
from llm_gateway.tool_models import ToolCall

TextMap = Callable[[str, str], str]  # (text, role) -> text


def message_texts(message: Message) -> list[str]:
    """The message's texts: its content (or text parts) and its tool calls' arguments."""
    texts: list[str] = []
    if isinstance(message.content, str):
        texts.append(message.content)
    elif isinstance(message.content, list):
        texts += [part.text for part in message.content if isinstance(part, TextPart)]
    return texts + [call.function.arguments for call in message.tool_calls or []]


def map_message(message: Message, change: TextMap) -> Message:
    """The message with ``change`` applied to its text, its text parts and its tool calls' arguments."""
    role = message.role
    update: dict[str, object] = {}
    if isinstance(message.content, str):
        update["content"] = change(message.content, role)
    elif isinstance(message.content, list):
        update["content"] = [
            part.model_copy(update={"text": change(part.text, role)}) if isinstance(part, TextPart) else part
            for part in message.content
        ]
    if message.tool_calls:
        update["tool_calls"] = [map_call(call, lambda text: change(text, role)) for call in message.tool_calls]
    return message.model_copy(update=update)


def map_call(call: ToolCall, change: Callable[[str], str]) -> ToolCall:
    """The call with ``change`` applied to each string of its JSON arguments (to the whole text when it
    is not JSON); arguments nothing changed keep the model's own spelling."""
    arguments = call.function.arguments
    changed = map_json_strings(arguments, change)
    if changed is None:
        changed = change(arguments)
    elif changed == map_json_strings(arguments, lambda text: text):
        changed = arguments
    return call.model_copy(update={"function": call.function.model_copy(update={"arguments": changed})})


def map_result(
    result: CompletionResult, change: TextMap, *, arguments: bool = True, restore_args: Vault | None = None
) -> CompletionResult:
    """The answer with ``change`` applied to its text and its alternatives'; with ``arguments``, to its
    tool calls' arguments too; with ``restore_args``, those arguments restored from that vault."""

    def calls(found: list[ToolCall] | None) -> list[ToolCall] | None:
        if not found:
            return found
        if restore_args is not None:
            vault = restore_args
            return [_with_arguments(call, restore_json(call.function.arguments, vault)) for call in found]
        return [map_call(call, lambda text: change(text, "assistant")) for call in found] if arguments else found

    def choice(alternative: Choice) -> Choice:
        update = {"content": change(alternative.content, "assistant"), "tool_calls": calls(alternative.tool_calls)}
        return alternative.model_copy(update=update)

    return result.model_copy(
        update={
            "content": change(result.content, "assistant"),
            "tool_calls": calls(result.tool_calls),
            "alternatives": [choice(alternative) for alternative in result.alternatives],
        }
    )


def _with_arguments(call: ToolCall, arguments: str) -> ToolCall:
    return call.model_copy(update={"function": call.function.model_copy(update={"arguments": arguments})})
