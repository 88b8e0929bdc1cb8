"""Which provider honours which optional request parameter, so that none is silently dropped.

A parameter set to something other than its default is *in use*. Routing skips the models whose
provider cannot honour a parameter in use; a model the caller named itself is a 400 naming the
parameter instead (silently serving it without the parameter would be the drop this module exists
to prevent). ``n`` is missing on purpose: every provider serves it (natively, or by parallel calls).

A model may lack what its provider has: the catalog's ``unsupported_params`` says so per model.

``user`` is honoured by OpenAI (``user``) and Anthropic (``metadata.user_id``); Gemini has no such
field, and an end-user id never changes the answer, so it is not a reason to skip Gemini (README).
"""

from __future__ import annotations

from llm_gateway.catalog import ModelSpec
from llm_gateway.models import CompletionRequest

# Order matters only for messages: the first parameter a provider lacks is the one named.
PROVIDER_PARAMS: dict[str, frozenset[str]] = {
    "openai": frozenset({"seed", "logprobs", "top_logprobs", "presence_penalty", "frequency_penalty", "logit_bias"}),
    # Servers that speak OpenAI's API (vLLM, llama.cpp, Ollama) take the same fields; what they do with
    # them is the server's business.
    "openai_compatible": frozenset(
        {"seed", "logprobs", "top_logprobs", "presence_penalty", "frequency_penalty", "logit_bias"}
    ),
    "gemini": frozenset({"seed", "logprobs", "top_logprobs", "presence_penalty", "frequency_penalty", "top_k"}),
    "anthropic": frozenset({"top_k"}),
    # Converse has no seed, logprobs, penalties or logit bias; top_k is model-specific there (not sent).
    "bedrock": frozenset(),
}
CHECKED = ("logprobs", "top_logprobs", "seed", "presence_penalty", "frequency_penalty", "logit_bias", "top_k")


def params_in_use(request: CompletionRequest) -> list[str]:
    """The provider-dependent parameters this request sets to something other than their default."""
    in_use = {
        "logprobs": request.logprobs,
        "top_logprobs": bool(request.top_logprobs),
        "seed": request.seed is not None,
        "presence_penalty": bool(request.presence_penalty),
        "frequency_penalty": bool(request.frequency_penalty),
        "logit_bias": bool(request.logit_bias),
        "top_k": request.top_k is not None,
    }
    return [name for name in CHECKED if in_use[name]]


def unsupported(params: list[str], spec: ModelSpec) -> list[str]:
    """The parameters of ``params`` that the model cannot honour: its provider lacks them (all of them for
    an unknown provider), or its catalog entry lists them (Gemini 2.5 has no logprobs or penalties)."""
    known = PROVIDER_PARAMS.get(spec.provider, frozenset()) - spec.unsupported_params
    return [p for p in params if p not in known]
