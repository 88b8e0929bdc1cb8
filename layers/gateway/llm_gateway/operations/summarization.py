"""Summaries of documents of any length, inside the gateway: stuff, map-reduce and refine.

- ``stuff``: the document fits one call (one chunk), so it is summarized in one call.
- ``map_reduce``: the chunks are summarized in parallel (``asyncio.Semaphore(concurrency)`` on the
  shared loop and HTTP client), then the notes are combined; notes too long for one call are first
  collapsed group by group, recursively, until they fit.
- ``refine`` (on request): a running summary is rewritten with each chunk in turn, in document order.

``auto`` picks ``stuff`` when the document fits one call of the chosen model (its context window less
the prompt and the answer) and stays under ``stuff_max_tokens``, a ceiling for quality (long inputs
dilute a single call's attention); otherwise ``map_reduce`` over chunks of at most ``max_chunk_tokens``.

Every model call is a deterministic ``CompletionRequest`` (temperature 0, the prompt version in
``prompt_version``), so the gateway's response cache serves the chunks of a retried document without
paying for them twice. Time is checked against the invocation's deadline in one of two ways:

* resumable (the default: jobs, S3 uploads, direct invocation): calls start while one more is expected
  to finish in time; then :class:`DeadlineExceededError` is raised with the progress made. Finished calls
  are cached, so the next attempt (the job's next delivery) starts where this one stopped. A run that has
  paid for nothing yet starts one wave whatever the estimate (given ``PROGRESS_FLOOR_S``), so that every
  attempt makes progress; estimates are also capped at the gateway's per-call timeout.
* ``plan_ahead`` (synchronous HTTP): each phase is estimated as a whole and refused before spending
  anything when it cannot finish, so that the caller quickly gets a job instead of a long wait.

When every provider is down and the caller allows it, an extractive summary (no model) is returned,
marked ``degraded``.
"""

from __future__ import annotations

import asyncio
import math
import string
import time
import uuid
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llm_gateway import aws
from llm_gateway.config import Settings, settings
from llm_gateway.documents.chunking import MIN_CHUNK_TOKENS, chunk_budget, split_text
from llm_gateway.documents.html_text import html_to_text
from llm_gateway.documents.loading import read_s3_document
from llm_gateway.documents.tokens import estimate_text_tokens
from llm_gateway.errors import (
    AllProvidersFailedError,
    DeadlineExceededError,
    GatewayError,
    InvalidRequestError,
    NoEligibleModelError,
    ProviderError,
)
from llm_gateway.gateway import Gateway
from llm_gateway.http import framing as api
from llm_gateway.interfaces import RequestContext
from llm_gateway.models import Attempt, CacheControl, CompletionRequest, CompletionResult, Message, Tier, Usage
from llm_gateway.operations import summary_uploads as uploads
from llm_gateway.operations.extraction import (
    JOB_SOURCE_TAG,
    DocumentRef,
    document_location,
    widen_scope_for_trusted_job,
)
from llm_gateway.operations.extractive_summary import extractive_summary
from llm_gateway.resources import shared_dir
from llm_gateway.wiring import default_gateway

Strategy = Literal["stuff", "map_reduce", "refine"]
Style = Literal["paragraph", "bullets"]

MAX_TEXT_CHARS = 2_000_000  # inline text; larger documents go through S3
MAX_COLLAPSE_ROUNDS = 12
DEFAULT_STUFF_MAX_TOKENS = 32_000  # GATEWAY_SUMMARY_STUFF_MAX_TOKENS
MIN_NOTE_WORDS, MAX_NOTE_WORDS = 40, 250  # notes of a map or collapse call
MAX_NOTE_TOKENS = 2 * MAX_NOTE_WORDS + 64  # the most output a map or collapse call asks for
# Time a call is assumed to take before any has been measured: a fixed part plus generation at a
# modest speed. Replaced by what this process observes per model (an exponential moving average).
PRIOR_CALL_BASE_S = 2.0
PRIOR_TOKENS_PER_S = 120.0
FINISH_RESERVE_S = 0.5  # left at the end for building and returning the answer
# With this much time left, a resumable run that has paid for no call yet starts one wave even when the
# estimate says it will not finish: an estimate above a whole attempt's budget must not stall a job.
PROGRESS_FLOOR_S = 5.0
_OBSERVED_WEIGHT = 0.3


# --------------------------------------------------------------------------- request and result


class SummaryLength(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sentences: int | None = Field(default=None, ge=1, le=100)
    words: int | None = Field(default=None, ge=10, le=5_000)

    @model_validator(mode="after")
    def _one_unit(self) -> SummaryLength:
        if (self.sentences is None) == (self.words is None):
            raise ValueError("give exactly one of 'sentences' or 'words'")
        return self

    def describe(self) -> str:
        if self.sentences is not None:
            return f"at most {self.sentences} sentence{'s' if self.sentences > 1 else ''}"
        return f"at most {self.words} words"

    def answer_tokens(self) -> int:
        """Room for the final answer (generous: a truncated summary is useless and never cached)."""
        if self.sentences is not None:
            return 64 + 48 * self.sentences
        assert self.words is not None
        return 64 + 2 * self.words


class SummaryRequest(BaseModel):
    """``POST /v1/summaries`` and the ``summarization`` operation's payload."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(default=None, min_length=1, max_length=MAX_TEXT_CHARS)
    s3: DocumentRef | None = None  # the extraction operation's reference, and its access rules
    content_type: Literal["text", "markdown", "html"] = "text"  # for ``text``; S3 objects are sniffed
    length: SummaryLength = Field(default_factory=lambda: SummaryLength(sentences=5))
    focus: str | None = Field(default=None, min_length=1, max_length=2_000)
    style: Style = "paragraph"
    strategy: Literal["auto", "stuff", "map_reduce", "refine"] = "auto"
    model: str | None = Field(default=None, min_length=1, max_length=128)
    tier: Tier | None = None
    fallback: list[str] | None = Field(default=None, max_length=8)
    # map_reduce/refine chunk size; auto's choice of stuff depends on the model's window, not on this
    chunk_tokens: int | None = Field(default=None, ge=MIN_CHUNK_TOKENS, le=200_000)
    concurrency: int | None = Field(default=None, ge=1, le=64)
    allow_degraded: bool = False
    cache: CacheControl | None = None
    metadata: dict[str, str] = Field(default_factory=dict, max_length=16)

    @model_validator(mode="after")
    def _consistent(self) -> SummaryRequest:
        if (self.text is None) == (self.s3 is None):
            raise ValueError("give exactly one of 'text' or 's3' ({\"key\": ...})")
        if self.model is not None and self.tier is not None:
            raise ValueError("give either 'model' or 'tier', not both")
        return self


class SummaryResult(BaseModel):
    id: str = Field(default_factory=lambda: f"sum-{uuid.uuid4().hex}")
    object: str = "summary"
    summary: str
    strategy: Literal["stuff", "map_reduce", "refine", "extractive"]
    degraded: bool = False
    degraded_reason: str | None = None  # the error code that forced the extractive fallback
    chunks: int
    calls: int  # model calls made (each may be several provider attempts)
    cached_calls: int = 0
    collapse_rounds: int = 0
    provider: str | None
    model: str | None
    models: list[str] = Field(default_factory=list)  # every provider/model that answered a call
    document_tokens: int  # estimated
    usage: Usage
    cost_usd: float
    attempts: list[Attempt]
    latency_ms: float
    prompt_version: str
    source: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, str] = Field(default_factory=dict)


# --------------------------------------------------------------------------- prompts


@dataclass(frozen=True)
class Prompts:
    version: str
    system: str
    stuff: string.Template
    map: string.Template
    combine: string.Template
    refine: string.Template

    @property
    def tag(self) -> str:
        return f"summarize/{self.version}"


@cache
def load_prompts(version: str) -> Prompts:
    """The versioned templates in ``shared/prompts/summarize/<version>/``, read once per process."""
    folder = shared_dir() / "prompts" / "summarize" / version
    if not folder.is_dir():
        raise InvalidRequestError(f"unknown summarization prompt version '{version}'")

    def read(name: str) -> str:
        return (folder / f"{name}.txt").read_text(encoding="utf-8").strip()

    return Prompts(
        version=version,
        system=read("system"),
        stuff=string.Template(read("stuff")),
        map=string.Template(read("map")),
        combine=string.Template(read("combine")),
        refine=string.Template(read("refine")),
    )


def _style_text(style: Style) -> str:
    if style == "bullets":
        return 'a bulleted list, one point per line, each line starting with "- "'
    return "one paragraph of plain prose"


def _focus_text(focus: str | None) -> str:
    return f"Focus: give most room to {focus.strip()}\n" if focus else ""


# --------------------------------------------------------------------------- accounting and timing


@dataclass
class _Ledger:
    """Everything the calls of one summary cost and did."""

    calls: int = 0
    cached_calls: int = 0
    paid_calls: int = 0  # answered by a provider in this run (and now cached): the run's progress
    attempts: list[Attempt] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    models: list[str] = field(default_factory=list)
    last: CompletionResult | None = None

    def add(self, result: CompletionResult) -> None:
        self.calls += 1
        self.last = result
        name = f"{result.provider}/{result.model}"
        if name not in self.models:
            self.models.append(name)
        if result.cached:
            self.cached_calls += 1
            return  # paid for by an earlier request
        self.paid_calls += 1
        self.attempts.extend(result.attempts)
        self.usage = self.usage + result.usage
        self.cost_usd = round(self.cost_usd + result.cost_usd, 10)

    def add_failure(self, err: GatewayError) -> None:
        self.calls += 1
        failed = [a for a in err.attempts if isinstance(a, Attempt)]
        self.attempts.extend(failed)
        self.usage = sum((a.usage for a in failed), self.usage)
        self.cost_usd = round(self.cost_usd + sum(a.cost_usd for a in failed), 10)


class CallTimer:
    """Seconds per model call, learned per route in this process (warm Lambdas get better estimates)."""

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}

    def expected(self, route: str, max_tokens: int) -> float:
        observed = self._seconds.get(route)
        return observed if observed is not None else PRIOR_CALL_BASE_S + max_tokens / PRIOR_TOKENS_PER_S

    def observe(self, route: str, seconds: float) -> None:
        previous = self._seconds.get(route, seconds)
        self._seconds[route] = (1 - _OBSERVED_WEIGHT) * previous + _OBSERVED_WEIGHT * seconds


_PROCESS_TIMER = CallTimer()


# --------------------------------------------------------------------------- the summarizer


@dataclass(frozen=True)
class _Plan:
    budget: int  # document tokens per call (chunks, and notes per combine)
    hard_limit: int  # what the window allows without the speed cap (collapse may use it to progress)
    stuff_limit: int  # the largest document ``auto`` summarizes in one call
    stuff_hard_limit: int  # the largest document one call can take at all
    answer_tokens: int
    note_words: int
    note_tokens: int
    concurrency: int


class Summarizer:
    def __init__(
        self,
        gateway: Gateway,
        *,
        max_chunk_tokens: int = 3_000,
        stuff_max_tokens: int = DEFAULT_STUFF_MAX_TOKENS,
        concurrency: int = 8,
        prompt_version: str = "v1",
        timer: CallTimer | None = None,
    ) -> None:
        self.gateway = gateway
        self.max_chunk_tokens = max_chunk_tokens  # map_reduce/refine chunk size (quick calls)
        self.stuff_max_tokens = stuff_max_tokens  # auto's ceiling for one call (quality)
        self.concurrency = concurrency
        self.prompts = load_prompts(prompt_version)
        self.timer = timer or _PROCESS_TIMER

    async def summarize(
        self, text: str, request: SummaryRequest, ctx: RequestContext, *, plan_ahead: bool = False
    ) -> SummaryResult:
        """The summary; :class:`DeadlineExceededError` when it cannot finish in this invocation (resumable
        by default: what was done is cached; ``plan_ahead``: refused before a phase that would not fit)."""
        started = time.perf_counter()
        text = text.replace("\r\n", "\n").strip()
        if not text:
            raise InvalidRequestError("the document has no text to summarize", details={"param": "text"})
        run = _Run(self, request, ctx, plan_ahead=plan_ahead)
        try:
            summary, strategy, chunks, rounds = await run.execute(text)
        except GatewayError as err:
            if request.allow_degraded and _is_outage(err):
                return self._degraded(text, request, run, err, started)
            err.attempts = run.ledger.attempts  # every attempt of the run, not only the failed call's
            raise
        ledger = run.ledger
        assert ledger.last is not None
        return SummaryResult(
            summary=summary.strip(),
            strategy=strategy,
            chunks=chunks,
            calls=ledger.calls,
            cached_calls=ledger.cached_calls,
            collapse_rounds=rounds,
            provider=ledger.last.provider,
            model=ledger.last.model,
            models=ledger.models,
            document_tokens=estimate_text_tokens(text),
            usage=ledger.usage,
            cost_usd=ledger.cost_usd,
            attempts=ledger.attempts,
            latency_ms=_ms_since(started),
            prompt_version=self.prompts.tag,
            metadata=request.metadata,
        )

    def _degraded(
        self, text: str, request: SummaryRequest, run: _Run, err: GatewayError, started: float
    ) -> SummaryResult:
        summary = extractive_summary(
            text,
            max_sentences=request.length.sentences,
            max_words=request.length.words,
            focus=request.focus,
            style=request.style,
        )
        return SummaryResult(
            summary=summary,
            strategy="extractive",
            degraded=True,
            degraded_reason=err.code,
            chunks=0,
            calls=run.ledger.calls,
            provider=None,
            model=None,
            document_tokens=estimate_text_tokens(text),
            usage=run.ledger.usage,
            cost_usd=run.ledger.cost_usd,
            attempts=run.ledger.attempts,
            latency_ms=_ms_since(started),
            prompt_version=self.prompts.tag,
            metadata=request.metadata,
        )


def _is_outage(err: GatewayError) -> bool:
    """Every provider failed (or the one asked for is down): the extractive fallback may stand in."""
    return isinstance(err, AllProvidersFailedError) or (isinstance(err, ProviderError) and err.retryable)


class _Run:
    """One summary: the plan, the phases and the ledger."""

    def __init__(self, owner: Summarizer, request: SummaryRequest, ctx: RequestContext, *, plan_ahead: bool) -> None:
        self.owner = owner
        self.prompts = owner.prompts
        self.request = request
        self.ctx = ctx
        self.plan_ahead = plan_ahead
        self.ledger = _Ledger()
        self.route = request.model or f"tier:{request.tier or 'default'}"

    async def execute(self, text: str) -> tuple[str, Strategy, int, int]:
        request = self.request
        plan = self._plan(refine=request.strategy == "refine")
        tokens = estimate_text_tokens(text)
        strategy: Strategy
        if request.strategy == "auto":
            strategy = "stuff" if tokens <= plan.stuff_limit else "map_reduce"
        else:
            strategy = request.strategy
        if strategy == "stuff":
            if tokens > plan.stuff_hard_limit:
                raise InvalidRequestError(
                    f"the document (about {tokens} tokens) does not fit one call of the chosen model; "
                    "use strategy 'map_reduce' or 'refine'",
                    details={"param": "strategy", "document_tokens": tokens, "limit": plan.stuff_hard_limit},
                )
            return await self._stuff(text, plan), "stuff", 1, 0
        chunks = [c.text for c in split_text(text, plan.budget)]
        if strategy == "refine":
            return await self._refine(chunks, plan), "refine", len(chunks), 0
        summary, rounds = await self._map_reduce(chunks, plan)
        return summary, "map_reduce", len(chunks), rounds

    # ---- planning

    def _plan(self, *, refine: bool) -> _Plan:
        request = self.request
        answer_tokens = request.length.answer_tokens()
        window, max_output = self._smallest_window(answer_tokens)
        answer_tokens = min(answer_tokens, max_output)
        cap = request.chunk_tokens or self.owner.max_chunk_tokens
        overhead = max(
            self._prompt_tokens(self.prompts.stuff),
            self._prompt_tokens(self.prompts.map, words=999),
            self._prompt_tokens(self.prompts.combine),
            self._prompt_tokens(self.prompts.refine),
        )
        # refine also carries the running summary in its input
        prompt_tokens = overhead + (answer_tokens if refine else 0)
        # A chunk goes to map calls (notes of up to MAX_NOTE_TOKENS) as well as to final calls (the
        # answer): room for the larger of the two outputs.
        output_room = max(answer_tokens, min(MAX_NOTE_TOKENS, max_output))
        budget = chunk_budget(context_window=window, prompt_tokens=prompt_tokens, output_tokens=output_room, cap=cap)
        hard = chunk_budget(context_window=window, prompt_tokens=prompt_tokens, output_tokens=output_room, cap=window)
        # One stuff call answers with the final summary only; the ceiling keeps long inputs out of it.
        stuff_hard = chunk_budget(
            context_window=window,
            prompt_tokens=self._prompt_tokens(self.prompts.stuff),
            output_tokens=answer_tokens,
            cap=window,
        )
        note_words = max(MIN_NOTE_WORDS, min(MAX_NOTE_WORDS, budget // 10))
        note_tokens = min(2 * note_words + 64, max_output)
        return _Plan(
            budget=budget,
            hard_limit=hard,
            stuff_limit=min(stuff_hard, self.owner.stuff_max_tokens),
            stuff_hard_limit=stuff_hard,
            answer_tokens=answer_tokens,
            note_words=note_words,
            note_tokens=note_tokens,
            concurrency=request.concurrency or self.owner.concurrency,
        )

    def _smallest_window(self, answer_tokens: int) -> tuple[int, int]:
        """The smallest context window and output limit among the models this request may be routed
        to (its fallbacks included), so that every chunk fits whichever model ends up answering."""
        probe = self._request([Message(role="user", content="probe")], max_tokens=answer_tokens)
        candidates = self.owner.gateway.router.plan(probe).candidates
        return (
            min(c.spec.context_window for c in candidates),
            min(c.spec.max_output_tokens for c in candidates),
        )

    def _prompt_tokens(self, template: string.Template, **extra: object) -> int:
        rendered = template.substitute(
            text="", summary="", length="at most 100 sentences", style=_style_text("bullets"),
            focus=_focus_text(self.request.focus), **extra,
        )  # fmt: skip
        return estimate_text_tokens(self.prompts.system) + estimate_text_tokens(rendered) + 16

    # ---- phases

    async def _stuff(self, text: str, plan: _Plan) -> str:
        self._ensure_next("stuff", plan.answer_tokens)
        result = await self._call(self._final_prompt(self.prompts.stuff, text), plan.answer_tokens)
        return result.content

    async def _map_reduce(self, chunks: list[str], plan: _Plan) -> tuple[str, int]:
        self._ensure_phase(
            "map_reduce",
            waves=math.ceil(len(chunks) / plan.concurrency) + self._expected_collapse_waves(len(chunks), plan),
            max_tokens=plan.note_tokens,
            final_tokens=plan.answer_tokens,
        )
        prompts = [self._note_prompt(c, plan) for c in chunks]
        notes = await self._parallel("map", prompts, plan.note_tokens, plan.concurrency)
        rounds = 0
        while _joined_tokens(notes) > plan.budget:
            rounds += 1
            groups = _group(notes, plan.budget, plan.hard_limit)
            if len(groups) >= len(notes) or rounds > MAX_COLLAPSE_ROUNDS:
                raise NoEligibleModelError(
                    "the partial summaries cannot be combined within the model's context window; "
                    "choose a model with a larger window",
                    details={"notes": len(notes), "budget": plan.budget},
                )
            self._ensure_phase(
                "collapse",
                waves=math.ceil(len(groups) / plan.concurrency) + self._expected_collapse_waves(len(groups), plan),
                max_tokens=plan.note_tokens,
                final_tokens=plan.answer_tokens,
            )
            prompts = [self._collapse_prompt(group, plan) for group in groups]
            notes = await self._parallel("collapse", prompts, plan.note_tokens, plan.concurrency)
        self._ensure_next("combine", plan.answer_tokens)
        final = await self._call(self._final_prompt(self.prompts.combine, _join(notes)), plan.answer_tokens)
        return final.content, rounds

    async def _refine(self, chunks: list[str], plan: _Plan) -> str:
        summary = ""
        for index, chunk in enumerate(chunks):
            # Re-estimated before every step with what this run has measured so far.
            self._ensure_phase("refine", waves=len(chunks) - index, max_tokens=plan.answer_tokens)
            self._ensure_next("refine", plan.answer_tokens, done=index, total=len(chunks))
            if index == 0:
                prompt = self._final_prompt(self.prompts.stuff, chunk)
            else:
                prompt = self._final_prompt(self.prompts.refine, chunk, summary=summary)
            summary = (await self._call(prompt, plan.answer_tokens)).content.strip()
        return summary

    def _expected_collapse_waves(self, notes: int, plan: _Plan) -> int:
        waves = 0
        total = notes * plan.note_tokens
        while total > plan.budget and notes > 1:
            groups = max(1, min(math.ceil(total / plan.budget), notes // 2))
            waves += math.ceil(groups / plan.concurrency)
            notes, total = groups, groups * plan.note_tokens
        return waves

    # ---- time

    def _call_seconds(self, max_tokens: int) -> float:
        """Expected duration of one call; never more than the gateway lets a call take."""
        return min(self.owner.timer.expected(self.route, max_tokens), self.owner.gateway.request_timeout_s)

    def _ensure_phase(self, phase: str, *, waves: int, max_tokens: int, final_tokens: int | None = None) -> None:
        """``plan_ahead`` only: raise before a phase that would not finish, ``waves`` rounds of parallel
        calls and then (``final_tokens``) the one final call."""
        if not self.plan_ahead:
            return
        needed = waves * self._call_seconds(max_tokens) + FINISH_RESERVE_S
        if final_tokens is not None:
            needed += self._call_seconds(final_tokens)
        remaining = self.ctx.deadline.remaining()
        if needed > remaining:
            raise self._deadline_error(phase, needed, remaining)

    def _may_start(self, max_tokens: int) -> bool:
        """Whether one more call may start: it is expected to finish in time, or (resumable) this run
        has paid for nothing yet, so that each attempt moves the document forward."""
        remaining = self.ctx.deadline.remaining()
        if self._call_seconds(max_tokens) + FINISH_RESERVE_S <= remaining:
            return True
        return not self.plan_ahead and self.ledger.paid_calls == 0 and remaining >= PROGRESS_FLOOR_S

    def _ensure_next(self, phase: str, max_tokens: int, *, done: int = 0, total: int = 1) -> None:
        if not self._may_start(max_tokens):
            needed = self._call_seconds(max_tokens) + FINISH_RESERVE_S
            raise self._deadline_error(phase, needed, self.ctx.deadline.remaining(), done=done, total=total)

    def _deadline_error(
        self, phase: str, needed: float, remaining: float, *, done: int | None = None, total: int | None = None
    ) -> DeadlineExceededError:
        details: dict[str, Any] = {"phase": phase, "estimated_s": round(needed, 1), "remaining_s": round(remaining, 1)}
        if done is not None:
            details.update(done=done, total=total)
        details["paid_calls"] = self.ledger.paid_calls  # finished and cached: the next attempt skips them
        return DeadlineExceededError(
            f"summarizing this document needs about {needed:.0f} s more ({phase}); {remaining:.0f} s are left in "
            "this invocation. Submit it asynchronously, or retry: finished parts are cached",
            details=details,
        )

    # ---- prompts to requests

    def _final_prompt(self, template: string.Template, text: str, *, summary: str = "") -> str:
        return template.substitute(
            text=text,
            summary=summary,
            length=self.request.length.describe(),
            style=_style_text(self.request.style),
            focus=_focus_text(self.request.focus),
        )

    def _note_prompt(self, chunk: str, plan: _Plan) -> str:
        return self.prompts.map.substitute(text=chunk, words=plan.note_words, focus=_focus_text(self.request.focus))

    def _collapse_prompt(self, notes: list[str], plan: _Plan) -> str:
        return self.prompts.combine.substitute(
            text=_join(notes),
            length=f"at most {plan.note_words} words",
            style="plain prose notes",
            focus=_focus_text(self.request.focus),
        )

    def _request(self, messages: list[Message], *, max_tokens: int) -> CompletionRequest:
        request = self.request
        return CompletionRequest(
            messages=messages,
            model=request.model,
            tier=request.tier,
            fallback=request.fallback,
            max_tokens=max_tokens,
            temperature=0.0,  # deterministic, hence cacheable per chunk
            cache=request.cache,
            prompt_version=self.prompts.tag,
        )

    # ---- calls

    async def _call(self, prompt: str, max_tokens: int) -> CompletionResult:
        messages = [Message(role="system", content=self.prompts.system), Message(role="user", content=prompt)]
        started = time.monotonic()
        try:
            result = await self.owner.gateway.complete(self._request(messages, max_tokens=max_tokens), self.ctx)
        except GatewayError as err:
            self.ledger.add_failure(err)
            raise
        self.ledger.add(result)
        if not result.cached:
            self.owner.timer.observe(self.route, time.monotonic() - started)
        return result

    async def _parallel(self, phase: str, prompts: list[str], max_tokens: int, concurrency: int) -> list[str]:
        """Run the calls at most ``concurrency`` at a time; answers in prompt order. After a failure no
        new call starts (those in flight finish, and are cached), and the first error is raised. A call
        is started only while :meth:`_may_start` allows it; if time runs out first, the calls in flight
        finish (and are cached) and :class:`DeadlineExceededError` says how far the phase got."""
        semaphore = asyncio.Semaphore(concurrency)
        failure: list[BaseException] = []
        out_of_time: list[float] = []  # the remaining time when the first call was held back

        async def one(prompt: str) -> str | None:
            async with semaphore:
                if failure or out_of_time:
                    return None
                if not self._may_start(max_tokens):
                    out_of_time.append(self.ctx.deadline.remaining())
                    return None
                try:
                    return (await self._call(prompt, max_tokens)).content.strip()
                except Exception as exc:
                    failure.append(exc)
                    return None

        answers = await asyncio.gather(*(one(p) for p in prompts))
        if failure:
            raise failure[0]
        done = [a for a in answers if a is not None]
        if out_of_time:
            left = len(prompts) - len(done)
            needed = math.ceil(left / concurrency) * self._call_seconds(max_tokens) + FINISH_RESERVE_S
            raise self._deadline_error(phase, needed, out_of_time[0], done=len(done), total=len(prompts))
        return done


def _join(notes: list[str]) -> str:
    return "\n\n".join(notes)


def _joined_tokens(notes: list[str]) -> int:
    return estimate_text_tokens(_join(notes))


def _group(notes: list[str], budget: int, hard_limit: int) -> list[list[str]]:
    """Consecutive notes in balanced groups of at most ``budget`` tokens. A group takes a second note
    even past the budget when the window allows it, so that every collapse round makes progress."""
    sizes = [estimate_text_tokens(n) + 1 for n in notes]
    target = sum(sizes) / max(1, math.ceil(sum(sizes) / budget))
    groups: list[list[str]] = []
    current: list[str] = []
    tokens = 0
    for note, size in zip(notes, sizes, strict=True):
        if current:
            over_budget = tokens + size > budget
            pairing = len(current) == 1 and tokens + size <= hard_limit
            balanced = len(current) >= 2 and tokens >= target
            if (over_budget and not pairing) or balanced:
                groups.append(current)
                current, tokens = [], 0
        current.append(note)
        tokens += size
    if len(current) == 1 and groups and _joined_tokens(groups[-1]) + tokens <= hard_limit:
        groups[-1].append(current[0])  # a lone last note joins its neighbours
    elif current:
        groups.append(current)
    return groups


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 3)


# --------------------------------------------------------------------------- the operation


async def run_summary(payload: dict[str, Any], ctx: RequestContext, *, plan_ahead: bool = False) -> dict[str, Any]:
    """The ``summarization`` operation: a JSON-ready :class:`SummaryResult`.

    Resumable unless ``plan_ahead`` (see the module docstring). Run as a job that continues an upload
    (job source ``s3``), it also writes the upload's result objects, or its error object on a failure
    that retrying cannot fix (retryable ones are the job's to retry, ending on the dead-letter queue).
    """
    request = api.validate(SummaryRequest, payload)
    config = settings()
    upload = _continued_upload(request, ctx, config)
    started = uploads.now_iso()
    try:
        text, source = await load_document(request, ctx, config)
        summarizer = Summarizer(
            default_gateway(),
            max_chunk_tokens=config.summary_max_chunk_tokens,
            stuff_max_tokens=config.summary_stuff_max_tokens,
            concurrency=config.summary_concurrency,
            prompt_version=config.summary_prompt_version,
        )
        result = await summarizer.summarize(text, request, ctx, plan_ahead=plan_ahead)
    except GatewayError as err:
        if upload is not None and not err.retryable:
            await aws.in_thread(uploads.write_error, upload, err, started=started, job_id=ctx.tags.get("job_id"))
        raise
    result.source = source
    output = result.model_dump(mode="json")
    if upload is not None:
        await aws.in_thread(uploads.write_result, upload, output, started=started, job_id=ctx.tags.get("job_id"))
    return output


def _continued_upload(request: SummaryRequest, ctx: RequestContext, config: Settings) -> uploads.Upload | None:
    """The upload this job finishes, if it is one. Jobs that trusted entry points handed over (an
    upload, a direct invocation, a message an IAM principal queued) keep their bucket-wide read access;
    jobs submitted over HTTP stay within their tenant's prefix. The source is set by the submitter's
    code, never taken from the payload, so a caller cannot claim it."""
    if not widen_scope_for_trusted_job(ctx):
        return None
    if (
        ctx.tags.get(JOB_SOURCE_TAG) != uploads.UPLOAD_JOB_SOURCE
        or request.s3 is None
        or not uploads.is_upload_key(request.s3.key)
    ):
        return None
    return uploads.Upload(bucket=document_location(request.s3, ctx, config).bucket, key=request.s3.key)


async def load_document(request: SummaryRequest, ctx: RequestContext, config: Settings) -> tuple[str, dict[str, Any]]:
    """The text to summarize and a description of where it came from."""
    if request.s3 is not None:
        obj = document_location(request.s3, ctx, config)
        document = await read_s3_document(obj, max_bytes=config.summary_max_document_bytes)
        return document.text, {"bucket": obj.bucket, "key": obj.key, "kind": document.kind, "pages": document.pages}
    assert request.text is not None
    if request.content_type == "html":
        return html_to_text(request.text), {"kind": "html"}
    return request.text, {"kind": request.content_type}
