"""The gateway key on the edge: who is calling (``authenticate``), what a request may spend (``admit``)
and what it did spend (``settle``), as ``llm_gateway.keys`` documents the contract.

Every gateway route authenticates before its body is read; the routes that call providers (completions,
chat, extractions, summaries, job submissions) are also admitted against the key's model policy and
per-minute limits, and settle their actual tokens after the response.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from llm_gateway import after_response
from llm_gateway.wiring import Services

if TYPE_CHECKING:
    from llm_gateway.keys import Admission, VerifiedKey
    from llm_gateway.models import CompletionRequest

KEY_CONTEXT = "gateway_key"  # in the resolver's per-request context (cleared after each request)


def authenticate(event: Mapping[str, Any], current: Services) -> VerifiedKey:
    """The request's verified key, from its headers only (REST events carry the last value per name)."""
    from llm_gateway import keys

    return keys.authenticate(event.get("headers"), current)


def admit(key: VerifiedKey, models: Sequence[str], estimated_tokens: int, current: Services) -> Admission:
    from llm_gateway import keys

    return keys.admit(key, models, max(0, estimated_tokens), current)


def settle_later(admission: Admission, tokens: int, current: Services) -> None:
    """Correct the reservation after the response (now, when this invocation cannot defer)."""
    if not admission.counted:
        return
    from llm_gateway import aws, keys

    def work() -> Any:
        return aws.in_thread(keys.settle, admission, tokens, current)

    if not after_response.current().defer(work):
        keys.settle(admission, tokens, current)


def requested_names(body: Mapping[str, Any], default_tier: str) -> list[str]:
    """What a document or job body asks for, as the caller wrote it: model or tier, then fallbacks."""
    model, tier = body.get("model"), body.get("tier")
    if not (isinstance(tier, str) and tier):
        tier = default_tier
    first = model if isinstance(model, str) and model else f"tier:{tier}"
    fallback = body.get("fallback")
    return [first, *(name for name in (fallback if isinstance(fallback, list) else []) if isinstance(name, str))]


def document_tokens(body: Mapping[str, Any], default_max_tokens: int) -> int:
    """Tokens to reserve for a document operation: the inline text's estimate (an S3 document is not read
    here: its size is unknown until the operation reads it, so only the output is reserved) plus
    ``max_tokens`` of output."""
    from llm_gateway.documents.tokens import estimate_text_tokens

    text = "".join(value for name in ("text", "instructions", "focus") if isinstance(value := body.get(name), str))
    max_tokens = body.get("max_tokens")
    output = max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else default_max_tokens
    return (estimate_text_tokens(text) if text else 0) + output


def result_tokens(result: Mapping[str, Any]) -> int:
    """Input plus output tokens of an operation's answer (``usage``), 0 when it has none."""
    usage = result.get("usage")
    if not isinstance(usage, Mapping):
        return 0
    return sum(int(usage.get(name) or 0) for name in ("input_tokens", "output_tokens"))


def completion_limits(request: CompletionRequest, current: Services) -> tuple[list[str], int]:
    """What a completion asks for and may spend: its models (or tier) and its prompt plus ``max_tokens``."""
    from llm_gateway import keys

    config = current.settings
    return (
        keys.requested_models(request, config.default_tier),
        keys.estimated_tokens(request, config.default_max_tokens),
    )


def job_limits(operation: str, payload: Mapping[str, Any], current: Services) -> tuple[list[str], int]:
    """What a submitted job asks for and may spend, as its synchronous route would be admitted."""
    config = current.settings
    names = requested_names(payload, config.default_tier)
    if operation == "completion":
        from llm_gateway import keys
        from llm_gateway.models import CompletionRequest

        try:
            request = CompletionRequest.model_validate(payload)
        except ValueError:  # refused with the right 400 by the job's own check
            return names, config.default_max_tokens
        return names, keys.estimated_tokens(request, config.default_max_tokens)
    return names, document_tokens(payload, config.default_max_tokens)
