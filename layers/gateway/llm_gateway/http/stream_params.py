"""``stream`` and ``stream_options`` on the completion routes: what a caller may combine with them.

The chat route takes OpenAI's ``stream: true`` and ``stream_options: {"include_usage": bool}`` (with
``stream_options`` refused without ``stream: true``, as OpenAI refuses it). The native route takes
``stream: true`` only: its final ``done`` event always carries the whole result, usage included, so it
needs no switch for it. What the gateway does not stream is refused with a 400 naming the parameter:
``n`` > 1 and ``logprobs`` (a stream carries one choice's text, without log probabilities).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import Field

from llm_gateway.guardrails.policy import GuardrailsField
from llm_gateway.http import framing as api
from llm_gateway.models import CompletionRequest

_NOT_STREAMED = "cannot be combined with stream: true"
# stream_options keys OpenAI defines; include_obfuscation only in its default (no padding is added).
_STREAM_OPTIONS = ("include_usage", "include_obfuscation")


@dataclass(frozen=True)
class StreamMode:
    """How a streamed answer is written: with the final usage chunk (OpenAI's ``include_usage``) or not."""

    include_usage: bool = False


class NativeCompletionBody(CompletionRequest):
    """``POST /v1/completions``: the gateway's request plus ``stream`` (Server-Sent Events when true)."""

    stream: bool = Field(default=False, description="Answer as Server-Sent Events (see the README, Streaming)")
    guardrails: GuardrailsField = None

    def completion_request(self) -> CompletionRequest:
        """The request without ``stream`` and ``guardrails`` (the edge reads those), as the gateway, the
        cache and jobs take it (already validated)."""
        fields = {name: getattr(self, name) for name in CompletionRequest.model_fields}
        return CompletionRequest.model_construct(self.model_fields_set - {"stream", "guardrails"}, **fields)


def native_stream(body: NativeCompletionBody) -> StreamMode | None:
    """The native route's stream mode (None: a JSON answer), or a 400 for what it cannot stream."""
    if not body.stream:
        return None
    refuse_unstreamable(body.completion_request())
    return StreamMode(include_usage=True)


def chat_stream(stream: Any, options: Any, request: CompletionRequest) -> StreamMode | None:
    """The chat route's stream mode from OpenAI's ``stream`` and ``stream_options`` (None: a JSON answer)."""
    if options is not None and stream is not True:
        raise api.invalid("stream_options", "is only allowed when stream is true")
    if stream is not True:
        return None
    include_usage = False
    if options is not None:
        if not isinstance(options, dict):
            raise api.invalid("stream_options", 'must be an object such as {"include_usage": true}')
        for name, value in options.items():
            if name not in _STREAM_OPTIONS:
                raise api.invalid(f"stream_options.{str(name)[:64]}", "unrecognized stream option; use include_usage")
            if value is not None and not isinstance(value, bool):
                raise api.invalid(f"stream_options.{name}", "must be a boolean")
        if options.get("include_obfuscation"):
            raise api.invalid("stream_options.include_obfuscation", "the gateway adds no obfuscation; leave it false")
        include_usage = bool(options.get("include_usage"))
    refuse_unstreamable(request)
    return StreamMode(include_usage=include_usage)


def refuse_unstreamable(request: CompletionRequest) -> None:
    if request.n > 1:
        raise api.invalid("n", f"{_NOT_STREAMED}: a stream carries one choice; send n=1 or stream=false")
    if request.logprobs:
        raise api.invalid("logprobs", f"{_NOT_STREAMED}: streamed answers carry no log probabilities")
