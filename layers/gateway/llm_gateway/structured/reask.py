"""Structured output a program can trust: ask for JSON against a schema, validate, re-ask with the errors.

Each ask is one ``Gateway.complete`` call (temperature 0, ``response_format`` json_schema, so each
provider's native mode is used where the catalog has it), and so each provider attempt is routed,
retried, budgeted and written to the usage ledger by the gateway as usual. A re-ask sends the original
messages plus only the last bad answer and its errors: the conversation never grows past N + 2 turns.
Re-asks stop at ``max_reasks`` or when the next one would not fit the token budget; then the caller
gets an ExtractionFailedError (422) with the last errors and every attempt made.

Only validated answers are cached: every ask skips the cache write, and a valid answer is stored under
the first ask's request, so a repeat of the same request is a cache hit with valid JSON.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from llm_gateway.documents.tokens import estimate_message_tokens
from llm_gateway.errors import ExtractionFailedError, GatewayError
from llm_gateway.interfaces import RequestContext, ResponseCache
from llm_gateway.models import (
    Attempt,
    CacheControl,
    CompletionRequest,
    CompletionResult,
    JsonSchemaFormat,
    Message,
    Usage,
)
from llm_gateway.routing.retry import MIN_CALL_TIME_S
from llm_gateway.structured.lenient_json import LenientJsonError, parse_json_lenient
from llm_gateway.structured.schemas import validation_problems
from llm_gateway.structured.strict import drop_added_nulls

StopReason = Literal["max_reasks", "token_budget", "deadline"]


class Completer(Protocol):
    """What the loop needs from the gateway (``Gateway`` satisfies it)."""

    cache: ResponseCache | None

    async def complete(self, request: CompletionRequest, ctx: RequestContext) -> CompletionResult: ...


@dataclass(frozen=True)
class ReaskPolicy:
    max_reasks: int = 2  # asks after the first one
    token_budget: int = 60_000  # input + output tokens over all asks; the first ask is always made
    max_echo_chars: int = 8_000  # of the bad answer quoted back to the model
    max_listed_errors: int = 10

    def __post_init__(self) -> None:
        if self.max_reasks < 0 or self.token_budget < 1 or self.max_echo_chars < 100 or self.max_listed_errors < 1:
            raise ValueError(f"invalid reask policy: {self}")


class StructuredResult(BaseModel):
    data: dict[str, Any]
    content: str  # the valid answer as canonical JSON
    provider: str
    model: str
    usage: Usage
    cost_usd: float
    latency_ms: float
    asks: int = Field(ge=1)
    attempts: list[Attempt]
    cached: bool = False


@dataclass
class _Spent:
    attempts: list[Attempt]
    usage: Usage
    cost_usd: float = 0.0

    def add(self, result: CompletionResult) -> None:
        if result.cached:  # a cache hit calls no provider and costs nothing now
            return
        self.attempts.extend(result.attempts)
        self.usage = self.usage + result.usage
        self.cost_usd = round(self.cost_usd + result.cost_usd, 10)


async def complete_structured(
    gateway: Completer,
    request: CompletionRequest,
    ctx: RequestContext,
    *,
    schema: dict[str, Any],
    name: str = "result",
    policy: ReaskPolicy | None = None,
) -> StructuredResult:
    """Ask until the answer validates against ``schema`` (already checked with ``schemas.check_schema``).

    ``request`` carries the messages, model or tier, fallbacks, max_tokens and cache controls; its
    temperature and response_format are replaced (temperature 0, the schema).
    """
    policy = policy or ReaskPolicy()
    started = time.perf_counter()
    # Meta keywords say nothing about the answer, and some providers' schema parsers reject them.
    wire_schema = {k: v for k, v in schema.items() if k not in ("$schema", "$id")}
    fmt = JsonSchemaFormat(name=name, schema=wire_schema, strict=True)
    caller_cache = request.cache or CacheControl()
    first = _ask(request, request.messages, fmt, caller_cache.model_copy(update={"no_store": True}))
    spent = _Spent(attempts=[], usage=Usage())
    current = first
    asks = 0
    while True:
        asks += 1
        try:
            result = await gateway.complete(current, ctx)
        except GatewayError as err:
            err.attempts = [*spent.attempts, *err.attempts]
            raise
        spent.add(result)
        data, problems = _read_answer(result, schema)
        if data is not None and not problems:
            if not result.cached and not caller_cache.no_store:
                await _store_valid(gateway.cache, ctx, first, caller_cache, result, data, spent)
            return StructuredResult(
                data=data,
                content=_canonical(data),
                provider=result.provider,
                model=result.model,
                usage=spent.usage,
                cost_usd=spent.cost_usd,
                latency_ms=round((time.perf_counter() - started) * 1000.0, 3),
                asks=asks,
                attempts=spent.attempts,
                cached=result.cached and asks == 1,
            )
        messages = reask_messages(request.messages, result.content, problems, policy)
        stop = _stop_reason(asks, policy, spent, messages, result, ctx)
        if stop is not None:
            raise _failed(stop, asks, problems, spent)
        current = _ask(request, messages, fmt, CacheControl(no_cache=True, no_store=True))


def reask_messages(
    original: list[Message], bad_answer: str, problems: list[dict[str, str]], policy: ReaskPolicy
) -> list[Message]:
    """The original conversation, the last bad answer, and what was wrong with it (never more)."""
    echo = bad_answer.strip() or "(an empty answer)"
    if len(echo) > policy.max_echo_chars:
        echo = echo[: policy.max_echo_chars] + " …[cut]"
    listed = problems[: policy.max_listed_errors]
    lines = [f"- {p['path'] if p['path'] != '/' else '(whole answer)'}: {p['message']}" for p in listed]
    if len(problems) > len(listed):
        lines.append(f"- … and {len(problems) - len(listed)} more")
    feedback = (
        "That answer is not valid against the required JSON Schema:\n"
        + "\n".join(lines)
        + "\nAnswer again with only the corrected JSON object, with every required field and nothing else."
    )
    return [*original, Message(role="assistant", content=echo), Message(role="user", content=feedback)]


def _ask(
    base: CompletionRequest, messages: list[Message], fmt: JsonSchemaFormat, cache: CacheControl
) -> CompletionRequest:
    return base.model_copy(
        update={"messages": messages, "temperature": 0.0, "response_format": fmt, "cache": cache}, deep=False
    )


def _read_answer(
    result: CompletionResult, schema: dict[str, Any]
) -> tuple[dict[str, Any] | None, list[dict[str, str]]]:
    problems: list[dict[str, str]] = []
    if result.finish_reason == "length":
        problems.append({"path": "/", "message": "the answer was cut off at the output token limit; be more concise"})
    try:
        data = parse_json_lenient(result.content, prefer_object=True)
    except LenientJsonError as exc:
        return None, [*problems, {"path": "/", "message": str(exc)}]
    if not isinstance(data, dict):
        return None, [*problems, {"path": "/", "message": f"expected a JSON object, got {_json_type(data)}"}]
    # OpenAI's strict form makes optional properties required-but-nullable: a null the caller's schema
    # refuses there means "absent".
    data = drop_added_nulls(schema, data)
    return data, problems + validation_problems(schema, data)


def _stop_reason(
    asks: int,
    policy: ReaskPolicy,
    spent: _Spent,
    next_messages: list[Message],
    last: CompletionResult,
    ctx: RequestContext,
) -> StopReason | None:
    if asks > policy.max_reasks:
        return "max_reasks"
    # The next ask re-sends the prompt and will likely answer at the length of the last answer.
    expected = estimate_message_tokens(next_messages) + max(last.usage.output_tokens, 1)
    if spent.usage.total_tokens + expected > policy.token_budget:
        return "token_budget"
    if ctx.deadline.remaining() < MIN_CALL_TIME_S:
        return "deadline"
    return None


def _failed(reason: StopReason, asks: int, problems: list[dict[str, str]], spent: _Spent) -> ExtractionFailedError:
    because = {
        "max_reasks": f"after {asks} ask(s)",
        "token_budget": f"after {asks} ask(s), with no token budget left for another",
        "deadline": f"after {asks} ask(s), with no time left for another",
    }[reason]
    # The problems quote the model's answer (and so the document): they go in details, for the caller,
    # never in the message, which handlers log.
    count = f"{len(problems)} problem" + ("s" if len(problems) != 1 else "")
    err = ExtractionFailedError(
        f"the model's answer is still not valid against the schema {because} ({count}; see details.errors)",
        details={
            "reason": reason,
            "asks": asks,
            "errors": problems,
            "cost_usd": spent.cost_usd,
            "total_tokens": spent.usage.total_tokens,
        },
    )
    err.attempts = spent.attempts
    return err


async def _store_valid(
    cache: ResponseCache | None,
    ctx: RequestContext,
    first: CompletionRequest,
    caller_cache: CacheControl,
    result: CompletionResult,
    data: dict[str, Any],
    spent: _Spent,
) -> None:
    """Cache the validated answer as the answer to the first ask (with the caller's own cache controls)."""
    if cache is None:
        return
    valid = result.model_copy(
        update={
            "content": _canonical(data),
            "attempts": spent.attempts,
            "cost_usd": spent.cost_usd,
            "usage": spent.usage,
        }
    )
    await cache.store(ctx, first.model_copy(update={"cache": caller_cache}), valid)


def _canonical(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array"}.get(
        type(value), type(value).__name__
    )
