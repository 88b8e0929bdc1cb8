"""What the edge answers with, on every route: JSON bodies, the one error shape, and request contexts.

The error shape (README, "Errors"): every error is ``{"error": {"code", "message", "retryable", ...}}``.
The gateway's routes add ``details`` (``param`` names the parameter at fault) and ``attempts`` (the
provider calls made) when there are any; ``/v1/chat/completions`` answers in OpenAI's shape instead,
which carries the same ``code``, ``message`` and ``retryable`` plus OpenAI's ``type`` and ``param``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools import Logger

from llm_gateway import after_response
from llm_gateway.errors import GatewayError, InternalError, RouteNotFoundError
from llm_gateway.http import framing
from llm_gateway.interfaces import RequestContext
from llm_gateway.wiring import services

LAYER_LOGGER = "llm_gateway"
# The metric counted when an operation's request is queued as a job instead of answered.
DEFERRED_METRICS = {
    "completion": "DeferredCompletions",
    "extraction": "DeferredExtractions",
    "summarization": "DeferredSummaries",
}


def encode(body: Mapping[str, Any]) -> str:
    """Compact JSON, UTF-8 rather than ``\\u`` escapes (CJK text stays 3 bytes a character); escaped after
    all when the text holds something UTF-8 cannot carry (a lone surrogate from a provider)."""
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return json.dumps(body, separators=(",", ":"))
    return text


def error_body(err: GatewayError, *, openai_style: bool = False, anthropic_style: bool = False) -> dict[str, Any]:
    """The one error shape; OpenAI's on its routes (its clients read ``type`` and ``param``), Anthropic's
    on the Messages routes (``{"type": "error", "error": {"type", "message"}}``)."""
    if anthropic_style:
        from llm_gateway.http import anthropic_messages  # only the completion function has those routes

        return anthropic_messages.anthropic_error_body(err)
    if openai_style:
        from llm_gateway.http import openai_chat  # only the completion function has that route

        return openai_chat.openai_error_body(err)
    error = err.to_dict()
    error["retryable"] = err.retryable
    if err.attempts:
        error["attempts"] = [a.model_dump(mode="json") for a in err.attempts]
    return {"error": error}


def error_headers(err: GatewayError) -> dict[str, str]:
    return {"retry-after": str(max(1, round(err.retry_after)))} if err.retry_after else {}


def internal_error() -> InternalError:
    return InternalError("internal error")


def route_not_found(method: str, path: Any) -> RouteNotFoundError:
    shown = str(path)[:200] if isinstance(path, str) else "this path"
    return RouteNotFoundError(f"no route for {method} {shown}", details={"method": method})


def request_context(
    operation: str,
    *,
    tenant: str,
    request_id: str,
    remaining_ms: int | None,
    tags: Mapping[str, str] | None = None,
) -> RequestContext:
    """A request's context, with this process's settings and this invocation's after-response deferral."""
    config = services().settings
    ctx = framing.request_context_for(
        tenant=tenant,
        request_id=request_id,
        remaining_ms=remaining_ms,
        margin_s=config.deadline_margin_s,
        operation=operation,
        log_prompts=config.log_prompts,
        defer=after_response.current(),
    )
    if tags:
        ctx.tags.update(tags)
    return ctx


def share_log_handler(logger: Logger) -> None:
    """Give the layer's loggers (``llm_gateway.*``) the function's Powertools handler, so that their lines
    carry the request id and Lambda context too. Their level stays the root logger's, as before (the layer
    logs warnings and errors on Lambda, no per-request INFO lines). On Lambda they stop there (the runtime's
    root handler would print them a second time); elsewhere they also reach the root logger (tests, ``make
    run``)."""
    layer = logging.getLogger(LAYER_LOGGER)
    handler = logger.registered_handler
    if handler not in layer.handlers:
        layer.addHandler(handler)
    if os.environ.get("AWS_LAMBDA_RUNTIME_API"):
        layer.propagate = False
