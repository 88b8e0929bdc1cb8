"""Planning a summary: note sizes, the per-call plan, what the calls cost, how long they take, and
how notes are grouped for collapsing."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from llm_gateway.documents.tokens import estimate_text_tokens
from llm_gateway.errors import GatewayError
from llm_gateway.models import Attempt, CompletionResult, Usage

MAX_COLLAPSE_ROUNDS = 12
DEFAULT_STUFF_MAX_TOKENS = 32_000  # GATEWAY_SUMMARY_STUFF_MAX_TOKENS
MIN_NOTE_WORDS, MAX_NOTE_WORDS = 40, 250  # notes of a map or collapse call
MAX_NOTE_TOKENS = 2 * MAX_NOTE_WORDS + 64  # the most output a map or collapse call asks for
# Time a call is assumed to take before any has been measured: a fixed part plus generation at a
# modest speed. Replaced by what this process observes per model (an exponential moving average).
PRIOR_CALL_BASE_S = 2.0
PRIOR_TOKENS_PER_S = 120.0
_OBSERVED_WEIGHT = 0.3


@dataclass
class Ledger:
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


@dataclass(frozen=True)
class Plan:
    budget: int  # document tokens per call (chunks, and notes per combine)
    hard_limit: int  # what the window allows without the speed cap (collapse may use it to progress)
    stuff_limit: int  # the largest document ``auto`` summarizes in one call
    stuff_hard_limit: int  # the largest document one call can take at all
    answer_tokens: int
    note_words: int
    note_tokens: int
    concurrency: int


def join_notes(notes: list[str]) -> str:
    return "\n\n".join(notes)


def joined_tokens(notes: list[str]) -> int:
    return estimate_text_tokens(join_notes(notes))


def group_notes(notes: list[str], budget: int, hard_limit: int) -> list[list[str]]:
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
    if len(current) == 1 and groups and joined_tokens(groups[-1]) + tokens <= hard_limit:
        groups[-1].append(current[0])  # a lone last note joins its neighbours
    elif current:
        groups.append(current)
    return groups
