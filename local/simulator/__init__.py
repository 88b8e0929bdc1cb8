"""Local provider simulator: OpenAI, Azure OpenAI, Anthropic, Gemini and Bedrock (Converse) wire formats on
one HTTP server.

The simulator lets the gateway's HTTP adapters run against real sockets without real
providers. Answers are deterministic (derived from a sha256 of the prompt), usage is
computed from text lengths, and faults (rate limits, overload, dropped connections,
malformed bodies, ...) can be injected per request or per run.

Token accounting (documented here because tests assert on it):
    input tokens  = sum over messages (system prompt counts as one message) of
                    ceil(len(text) / 4) + MESSAGE_OVERHEAD_TOKENS
    output tokens = ceil(len(answer text) / 4)   (for Anthropic tool_use: of the JSON input)

Tool calling: each dialect reads tools and tool turns in its own format, refusing what the real API
refuses (tool_wire.py), and a deterministic policy decides the calls (tool_calls.py: the functions the
last user turn names, or the one tool_choice names; text quoting the results after tool results).

Streaming: OpenAI/compatible (``stream: true``, usage with ``stream_options.include_usage``), Anthropic
(``stream: true``) and Gemini (``streamGenerateContent``, ``alt=sse``) answer the same answer as without,
in pieces, in the provider's event format, written and flushed event by event (chunked transfer
encoding); the ``stream_*`` faults break a stream mid-way (streams.py, faults.py).

Quotas (quotas.py): per deployment (an API key, or ``azure/<deployment>``) RPM/TPM over a window of
configurable length (``set_quota``), refused past the quota with the provider's 429 and answered with its
rate-limit headers; ``quota_stats`` counts requests, refusals and 429s per deployment. Azure OpenAI
(azure_dialect.py): ``/azure/openai/deployments/<name>/chat/completions?api-version=...`` for the
deployments registered with ``add_azure_deployment``, ``api-key`` header, Azure's errors.

Run standalone with ``python -m local.simulator --port 8900``.
"""

from __future__ import annotations

from local.simulator.answers import deterministic_sentences, schema_instance
from local.simulator.faults import FAULTS, Fault, FaultRule
from local.simulator.server import ProviderSimulator
from local.simulator.wire import (
    FINISH_REASONS,
    MESSAGE_OVERHEAD_TOKENS,
    PROVIDERS,
    Answer,
    ChatRequest,
    Reply,
    Response,
)

__all__ = [
    "FAULTS",
    "FINISH_REASONS",
    "MESSAGE_OVERHEAD_TOKENS",
    "PROVIDERS",
    "Answer",
    "ChatRequest",
    "Fault",
    "FaultRule",
    "ProviderSimulator",
    "Reply",
    "Response",
    "deterministic_sentences",
    "schema_instance",
]
