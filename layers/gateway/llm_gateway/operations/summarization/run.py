"""One summary's run: strategy choice, the stuff / map-reduce / refine phases, and keeping time."""

from __future__ import annotations

import asyncio
import math
import string
import time
from typing import TYPE_CHECKING, Any, Protocol

from llm_gateway.documents.chunking import chunk_budget, split_text
from llm_gateway.documents.tokens import estimate_text_tokens
from llm_gateway.errors import DeadlineExceededError, GatewayError, InvalidRequestError, NoEligibleModelError
from llm_gateway.interfaces import RequestContext
from llm_gateway.models import CompletionRequest, CompletionResult, Message
from llm_gateway.operations.summarization.planning import (
    MAX_COLLAPSE_ROUNDS,
    MAX_NOTE_TOKENS,
    MAX_NOTE_WORDS,
    MIN_NOTE_WORDS,
    CallTimer,
    Ledger,
    Plan,
    group_notes,
    join_notes,
    joined_tokens,
)
from llm_gateway.operations.summarization.prompts import Prompts, focus_text, style_text
from llm_gateway.operations.summarization.request import Strategy, SummaryRequest

if TYPE_CHECKING:
    from llm_gateway.gateway import Gateway

FINISH_RESERVE_S = 0.5  # left at the end for building and returning the answer
# With this much time left, a resumable run that has paid for no call yet starts one wave even when the
# estimate says it will not finish: an estimate above a whole attempt's budget must not stall a job.
PROGRESS_FLOOR_S = 5.0


class RunOwner(Protocol):
    """What a run uses of the summarizer that starts it (a protocol: this module does not import it)."""

    gateway: Gateway
    prompts: Prompts
    timer: CallTimer
    max_chunk_tokens: int
    stuff_max_tokens: int
    concurrency: int


class SummaryRun:
    """One summary: the plan, the phases and the ledger."""

    def __init__(self, owner: RunOwner, request: SummaryRequest, ctx: RequestContext, *, plan_ahead: bool) -> None:
        self.owner = owner
        self.prompts = owner.prompts
        self.request = request
        self.ctx = ctx
        self.plan_ahead = plan_ahead
        self.ledger = Ledger()
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

    def _plan(self, *, refine: bool) -> Plan:
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
        return Plan(
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
            text="", summary="", length="at most 100 sentences", style=style_text("bullets"),
            focus=focus_text(self.request.focus), **extra,
        )  # fmt: skip
        return estimate_text_tokens(self.prompts.system) + estimate_text_tokens(rendered) + 16

    # ---- phases

    async def _stuff(self, text: str, plan: Plan) -> str:
        self._ensure_next("stuff", plan.answer_tokens)
        result = await self._call(self._final_prompt(self.prompts.stuff, text), plan.answer_tokens)
        return result.content

    async def _map_reduce(self, chunks: list[str], plan: Plan) -> tuple[str, int]:
        self._ensure_phase(
            "map_reduce",
            waves=math.ceil(len(chunks) / plan.concurrency) + self._expected_collapse_waves(len(chunks), plan),
            max_tokens=plan.note_tokens,
            final_tokens=plan.answer_tokens,
        )
        prompts = [self._note_prompt(c, plan) for c in chunks]
        notes = await self._parallel("map", prompts, plan.note_tokens, plan.concurrency)
        rounds = 0
        while joined_tokens(notes) > plan.budget:
            rounds += 1
            groups = group_notes(notes, plan.budget, plan.hard_limit)
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
        final = await self._call(self._final_prompt(self.prompts.combine, join_notes(notes)), plan.answer_tokens)
        return final.content, rounds

    async def _refine(self, chunks: list[str], plan: Plan) -> str:
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

    def _expected_collapse_waves(self, notes: int, plan: Plan) -> int:
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
            style=style_text(self.request.style),
            focus=focus_text(self.request.focus),
        )

    def _note_prompt(self, chunk: str, plan: Plan) -> str:
        return self.prompts.map.substitute(text=chunk, words=plan.note_words, focus=focus_text(self.request.focus))

    def _collapse_prompt(self, notes: list[str], plan: Plan) -> str:
        return self.prompts.combine.substitute(
            text=join_notes(notes),
            length=f"at most {plan.note_words} words",
            style="plain prose notes",
            focus=focus_text(self.request.focus),
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
