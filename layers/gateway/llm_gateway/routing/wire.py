"""A routed request: its models by their catalog ids, as one candidate's adapter takes it, and what it may
cost at most.

Shared by the buffered path (``Gateway.complete``) and the streamed one (``streaming/routed.py``).
"""

from __future__ import annotations

import json
from typing import Any

from llm_gateway.catalog import Catalog, ModelSpec
from llm_gateway.documents.tokens import estimate_message_tokens, estimate_text_tokens, worst_case_input_tokens
from llm_gateway.models import CompletionRequest, JsonObjectFormat, JsonSchemaFormat, ProviderRequest
from llm_gateway.providers.base import with_json_instruction
from llm_gateway.routing.router import Candidate


def canonical_models(request: CompletionRequest, catalog: Catalog) -> CompletionRequest:
    """Aliases and ``provider/id`` names replaced by catalog ids, so that every name of a model shares its
    cache entries; a name that resolves to nothing is left for the router to refuse."""

    def canonical(name: str) -> str:
        spec = catalog.resolve(name)
        return spec.id if spec is not None else name

    model = canonical(request.model) if request.model is not None else None
    fallback = [canonical(m) for m in request.fallback] if request.fallback is not None else None
    if model == request.model and fallback == request.fallback:
        return request
    return request.model_copy(update={"model": model, "fallback": fallback})


def wire_request(candidate: Candidate, request: CompletionRequest) -> ProviderRequest:
    """The request as the candidate's adapter takes it."""
    spec = candidate.spec
    return ProviderRequest(
        model=spec.wire_model,
        messages=request.messages,
        max_tokens=candidate.max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        stop=request.stop,
        seed=request.seed,
        response_format=request.response_format,
        native_structured=native_structured(request, spec),
        **_choice_params(request),
        tools=request.tools,
        tool_choice=request.tool_choice,
        parallel_tool_calls=request.parallel_tool_calls,
    )


def worst_case_input(wire: ProviderRequest, provider: str) -> int:
    """Input tokens to reserve for: the messages as the adapter sends them (with the JSON instruction
    it adds when the native mode is not used), the schema when it is sent natively, and the tool
    definitions (billed as input, like a schema)."""
    fmt = wire.response_format
    native_schema = None
    if wire.native_structured and isinstance(fmt, JsonSchemaFormat):
        native_schema = json.dumps(fmt.json_schema, separators=(",", ":"))
    if wire.tools:
        # The JSON instruction may be sent too (adapters that cannot combine both): counted as well.
        tools = json.dumps([t.model_dump(mode="json", exclude_none=True) for t in wire.tools], separators=(",", ":"))
        native_schema = tools if native_schema is None else native_schema + tools
        wire = wire.model_copy(update={"native_structured": False}) if provider in _NO_SCHEMA_WITH_TOOLS else wire
    return worst_case_input_tokens(with_json_instruction(wire), provider=provider, native_schema=native_schema)


def _choice_params(request: CompletionRequest) -> dict[str, Any]:
    """n, logprobs and the other provider-dependent parameters, as the adapters take them."""
    return {
        "n": request.n,
        "logprobs": request.logprobs,
        "top_logprobs": request.top_logprobs,
        "presence_penalty": request.presence_penalty,
        "frequency_penalty": request.frequency_penalty,
        "logit_bias": request.logit_bias,
        "top_k": request.top_k,
        "user": request.user,
    }


# Providers whose adapter asks for a response schema in the prompt when tools are sent too.
_NO_SCHEMA_WITH_TOOLS = frozenset({"anthropic", "gemini", "bedrock"})


def native_structured(request: CompletionRequest, spec: ModelSpec) -> bool:
    fmt = request.response_format
    if isinstance(fmt, JsonSchemaFormat):
        return "json_schema" in spec.capabilities
    if isinstance(fmt, JsonObjectFormat):
        return "json_mode" in spec.capabilities
    return False


def estimated_input_tokens(wire: ProviderRequest) -> int:
    """A likely count (not the worst case) of the input tokens ``wire`` is billed, for when a provider
    reports no usage: the messages as sent, plus a native schema and the tool definitions."""
    tokens = estimate_message_tokens(with_json_instruction(wire))
    fmt = wire.response_format
    if wire.native_structured and isinstance(fmt, JsonSchemaFormat):
        tokens += estimate_text_tokens(json.dumps(fmt.json_schema, separators=(",", ":")))
    if wire.tools:
        tools = [t.model_dump(mode="json", exclude_none=True) for t in wire.tools]
        tokens += estimate_text_tokens(json.dumps(tools, separators=(",", ":")))
    return tokens
