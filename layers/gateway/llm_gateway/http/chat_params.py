"""The OpenAI Chat Completions parameters the gateway refuses whatever the model, and the check.

Every OpenAI parameter is honoured, translated or refused with a 400 naming it; none is dropped.
Parameters that depend on the provider (``logprobs``, ``seed``, penalties...) are routed by
``routing/params.py``; the ones here have no counterpart behind the gateway at all. A value equal
to the parameter's default means "not used" and is accepted. Fields OpenAI does not know are
refused too, as OpenAI refuses them ("Unrecognized request argument"). The README has the table.
"""

from __future__ import annotations

from typing import Any

from llm_gateway.http import framing as api

_ABSENT = object()

# name -> (values that mean "not used", why it is refused)
REFUSED: dict[str, tuple[tuple[Any, ...], str]] = {
    "audio": ((None,), "audio output is not supported by this gateway"),
    "modalities": ((None, ["text"]), "only text output is supported; send modalities ['text'] or leave it out"),
    "prediction": ((None,), "predicted outputs are not supported by this gateway"),
    "reasoning_effort": ((None,), "no model in this gateway's catalog takes a reasoning effort"),
    "web_search_options": ((None,), "web search is not supported by this gateway"),
    "store": ((None, False), "the gateway does not store completions with the provider; leave store false"),
    "service_tier": ((None, "auto", "default"), "only the default service tier is available ('auto' or 'default')"),
    "verbosity": ((None, "medium"), "only the default verbosity ('medium') is supported"),
    "prompt_cache_key": ((None,), "provider prompt-cache keys are not supported; the gateway caches on its own"),
}

# Honoured or translated (see openai_chat.ChatCompletionsBody and routing/params.py), or owned by tool calling.
KNOWN = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "seed",
        "n",
        "response_format",
        "user",
        "safety_identifier",
        "metadata",
        "logprobs",
        "top_logprobs",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "stream",  # and stream_options: checked by http/stream_params.py
        "stream_options",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "functions",
        "function_call",
    }
)


def refuse_unsupported(raw: dict[str, Any]) -> None:
    """400 naming the first parameter the gateway cannot honour (in the body's order)."""
    for name, value in raw.items():
        if name in REFUSED:
            defaults, why = REFUSED[name]
            if not any(value == d and type(value) is type(d) for d in defaults):
                raise api.invalid(name, why)
        elif name not in KNOWN:
            raise api.invalid(name, f"unrecognized request argument supplied: {name[:64]}")
