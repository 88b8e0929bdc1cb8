"""What a stream has said so far, put back together: the text, the tool calls, and the tokens they cost.

A stream's deltas are collected as they are received from the provider (not as they reach the caller):
tokens the provider generated are billed whether or not the caller read them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from llm_gateway.documents.tokens import estimate_text_tokens
from llm_gateway.errors import MalformedResponseError
from llm_gateway.models import ProviderRequest, Usage
from llm_gateway.routing.wire import estimated_input_tokens
from llm_gateway.streaming.events import TextDelta, ToolCallDelta
from llm_gateway.tool_models import FunctionCall, ToolCall


@dataclass
class _CallParts:
    id: str | None = None
    name: str | None = None
    arguments: list[str] = field(default_factory=list)


class StreamAssembly:
    def __init__(self) -> None:
        self._text: list[str] = []
        self._calls: dict[int, _CallParts] = {}

    def add(self, event: TextDelta | ToolCallDelta) -> None:
        if isinstance(event, TextDelta):
            self._text.append(event.text)
            return
        parts = self._calls.setdefault(event.index, _CallParts())
        parts.id = parts.id or event.id
        parts.name = parts.name or event.name
        if event.arguments:
            parts.arguments.append(event.arguments)

    @property
    def text(self) -> str:
        return "".join(self._text)

    def tool_calls(self) -> list[ToolCall] | None:
        """The calls in index order, each with its arguments concatenated. A call whose name never came
        is a malformed stream (a provider without ids gets generated ones, as its buffered answers do)."""
        if not self._calls:
            return None
        calls = []
        for index in sorted(self._calls):
            parts = self._calls[index]
            if not parts.name:
                raise MalformedResponseError(f"the stream's tool call {index} has no function name")
            calls.append(
                ToolCall(
                    id=parts.id or f"call_{uuid.uuid4().hex[:24]}",
                    function=FunctionCall(name=parts.name, arguments="".join(parts.arguments)),
                )
            )
        return calls

    def output_tokens(self) -> int:
        """An estimate of the output so far: the text, and each call's name and arguments."""
        calls = sum(
            estimate_text_tokens(f"{parts.name or ''} {''.join(parts.arguments)}") for parts in self._calls.values()
        )
        return estimate_text_tokens(self.text) + calls

    def estimated_usage(self, wire: ProviderRequest) -> Usage:
        """Usage for a stream the provider did not report any for: input from the prompt as sent, output
        from what was received."""
        return Usage(input_tokens=estimated_input_tokens(wire), output_tokens=self.output_tokens())
