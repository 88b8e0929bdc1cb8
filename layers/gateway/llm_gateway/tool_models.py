"""Tool calling, provider-neutral: the shapes (OpenAI's, which every client speaks) and the rules a
conversation with tools must follow, checked once here so every provider gets a well-formed one.

The rules are the strictest of the providers' (OpenAI and Anthropic refuse the rest): a ``tool`` turn
answers a call of the assistant turn just before it (only other tool turns in between), and every call
of an assistant turn is answered before the conversation goes on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llm_gateway.errors import InvalidRequestError

TOOL_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"  # OpenAI's and Anthropic's, with Gemini's first letter
MAX_TOOL_SCHEMA_BYTES = 64 * 1024


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FunctionDefinition(_Strict):
    name: str = Field(pattern=TOOL_NAME_PATTERN)
    description: str | None = Field(default=None, max_length=8192)
    parameters: dict[str, Any] | None = None  # JSON Schema; its root must be an object
    strict: bool | None = None

    @field_validator("parameters")
    @classmethod
    def _object_root(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        if schema is None:
            return None
        kind = schema.get("type")
        if kind != "object" and not (kind is None and isinstance(schema.get("properties"), dict)):
            raise ValueError("a function's parameters must be a JSON Schema with type 'object' at the root")
        if len(json.dumps(schema, separators=(",", ":"))) > MAX_TOOL_SCHEMA_BYTES:
            raise ValueError(f"the parameters schema is larger than {MAX_TOOL_SCHEMA_BYTES} bytes")
        return schema

    def parameters_schema(self) -> dict[str, Any]:
        """The parameters as an object schema (a function without parameters takes an empty object)."""
        if self.parameters is None:
            return {"type": "object", "properties": {}}
        return self.parameters if "type" in self.parameters else {"type": "object", **self.parameters}

    def takes_arguments(self) -> bool:
        return bool(self.parameters_schema().get("properties"))


class Tool(_Strict):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class NamedFunction(_Strict):
    name: str = Field(pattern=TOOL_NAME_PATTERN)


class NamedToolChoice(_Strict):
    """Call this function (OpenAI's ``{"type": "function", "function": {"name": ...}}``)."""

    type: Literal["function"] = "function"
    function: NamedFunction


ToolChoice = Literal["auto", "none", "required"] | NamedToolChoice


class FunctionCall(_Strict):
    name: str = Field(min_length=1, max_length=64)
    arguments: str = Field(max_length=1_000_000)  # JSON text, as OpenAI gives it


class ToolCall(_Strict):
    id: str = Field(min_length=1, max_length=256)
    type: Literal["function"] = "function"
    function: FunctionCall

    def arguments_object(self) -> dict[str, Any]:
        """The arguments as an object, for providers that take one (Anthropic ``input``, Gemini ``args``).

        A model may have written arguments that are not a JSON object; they are kept, wrapped, rather
        than dropped: the conversation's history must still say what was called.
        """
        try:
            value = json.loads(self.function.arguments) if self.function.arguments.strip() else {}
        except ValueError:
            return {"arguments": self.function.arguments}
        return value if isinstance(value, dict) else {"arguments": value}


def chosen_function(choice: ToolChoice | None) -> str | None:
    return choice.function.name if isinstance(choice, NamedToolChoice) else None


class Turn(Protocol):
    """What the checks read of a conversation message (``models.Message`` is one); a protocol, so that
    this module, which ``models`` imports for its tool types, does not import ``models`` back."""

    @property
    def role(self) -> str: ...

    @property
    def content(self) -> Any: ...

    @property
    def tool_calls(self) -> list[ToolCall] | None: ...

    @property
    def tool_call_id(self) -> str | None: ...

    def has_image(self) -> bool: ...


def check_tool_fields(message: Turn) -> None:
    """Per-turn rules: which role may carry which tool field, and when content may be missing."""
    if message.tool_calls and message.role != "assistant":
        raise ValueError("only an assistant message can carry 'tool_calls'")
    if message.role == "tool":
        if not message.tool_call_id:
            raise ValueError("a tool message needs the 'tool_call_id' of the call it answers")
        if message.content is None or message.has_image():
            raise ValueError("a tool message's content must be text (a string or text parts)")
    elif message.tool_call_id is not None:
        raise ValueError("only a tool message can carry 'tool_call_id'")
    if message.tool_calls:
        ids = [call.id for call in message.tool_calls]
        if len(set(ids)) != len(ids):
            raise ValueError("tool call ids must be unique within a message")


def check_tool_conversation(messages: Sequence[Turn], tools: list[Any] | None, choice: ToolChoice | None) -> None:
    """Conversation-wide rules: a 400 naming the parameter at fault (raised through pydantic as is)."""
    names = [t.function.name for t in tools or []]
    if len(set(names)) != len(names):
        raise _bad("tools", "function names must be unique")
    if choice is not None and choice != "none" and not tools:
        raise _bad("tool_choice", "needs 'tools' (the functions the model may call)")
    if (wanted := chosen_function(choice)) is not None and wanted not in names:
        raise _bad("tool_choice.function.name", f"'{wanted}' is not among the tools")
    pending: set[str] = set()  # call ids of the last assistant turn not answered yet
    for index, message in enumerate(messages):
        if message.role == "tool":
            if message.tool_call_id not in pending:
                raise _bad(
                    f"messages.{index}.tool_call_id",
                    "a tool message must answer a tool call of the assistant message just before it "
                    "(only other tool messages may come in between)",
                )
            pending.discard(message.tool_call_id)
            continue
        if pending:
            raise _bad(f"messages.{index}", f"the tool calls {sorted(pending)} have no tool message answering them")
        pending = {call.id for call in message.tool_calls or []}
    if pending:  # no provider continues a conversation whose last calls were not answered
        raise _bad("messages", f"the tool calls {sorted(pending)} at the end have no tool message answering them")


def _bad(param: str, message: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"{param}: {message}", details={"param": param, "errors": [{"param": param, "message": message}]}
    )


def has_tool_turns(messages: Sequence[Turn]) -> bool:
    return any(m.role == "tool" or m.tool_calls for m in messages)


def tool_names_by_call_id(messages: Sequence[Turn]) -> dict[str, str]:
    """Call id -> function name, from the assistant turns (Gemini's function responses need the name)."""
    return {call.id: call.function.name for m in messages for call in m.tool_calls or []}
