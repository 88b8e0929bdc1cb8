"""The prompt-injection check: heuristic signals add up to a score; at the threshold it reports.

Signals come from instruction phrases (matched on folded text, so case, full-width letters and
zero-width characters do not hide them) and from hiding places (``injection_hidden.py``). Scores combine
as a noisy OR over rules, 1 - prod(1 - weight), with the strongest occurrence of each rule counting
once (a phrase repeated ten times is still one hint): two weak hints make a moderate score, one strong
phrase a high one. A phrase inside
quotation marks, or in a text that reads like a discussion of attacks, counts for less.
"""

from __future__ import annotations

from dataclasses import dataclass

from llm_gateway.guardrails.findings import Finding
from llm_gateway.guardrails.folding import fold
from llm_gateway.guardrails.injection_hidden import hidden_signals
from llm_gateway.guardrails.injection_phrases import phrase_signals
from llm_gateway.guardrails.injection_signals import DISCUSSION_MARKERS, Signal, quoted

DEFAULT_THRESHOLD = 0.5
_QUOTED_FACTOR = 0.5
_DISCUSSION_FACTOR = 0.6
_DISCUSSION_MIN_MARKERS = 2


@dataclass(frozen=True)
class Assessment:
    score: float
    signals: tuple[Signal, ...]  # spans in the original text, strongest first


def one_per_region(signals: list[Signal]) -> list[Signal]:
    """Two rules of one kind firing on the same words are one piece of evidence, not two: of signals
    of a kind whose spans overlap, only the strongest stays. A sweep per kind keeps this O(n log n)."""
    kept: list[Signal] = []
    by_kind: dict[str, list[Signal]] = {}
    for signal in signals:
        by_kind.setdefault(signal.kind, []).append(signal)
    for group in by_kind.values():
        group.sort(key=lambda s: s.start)
        cluster_end, best = -1, None
        for signal in group:
            if best is not None and signal.start < cluster_end:
                cluster_end = max(cluster_end, signal.end)
                best = max(best, signal, key=lambda s: s.weight)
                continue
            if best is not None:
                kept.append(best)
            cluster_end, best = signal.end, signal
        if best is not None:
            kept.append(best)
    return kept


def combine(signals: list[Signal]) -> float:
    strongest: dict[tuple[str, str], float] = {}
    for signal in signals:
        rule = (signal.kind, signal.reason)
        strongest[rule] = max(strongest.get(rule, 0.0), signal.weight)
    remaining = 1.0
    for weight in strongest.values():
        remaining *= 1.0 - weight
    return round(1.0 - remaining, 4)


class InjectionCheck:
    """Reports one finding, spanning the signals, when the combined score reaches ``threshold``."""

    name = "injection"

    def __init__(self, threshold: float = DEFAULT_THRESHOLD) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError("injection threshold must be in (0, 1]")
        self.threshold = threshold

    def assess(self, text: str) -> Assessment:
        if not text:
            return Assessment(0.0, ())
        folded = fold(text)
        discussion = len(set(DISCUSSION_MARKERS.findall(folded.text))) >= _DISCUSSION_MIN_MARKERS
        signals: list[Signal] = []
        for signal in phrase_signals(folded.text):
            weight = signal.weight
            if quoted(folded.text, signal.start, signal.end):
                weight *= _QUOTED_FACTOR
            if discussion:
                weight *= _DISCUSSION_FACTOR
            start, end = folded.span(signal.start, signal.end)
            signals.append(Signal(signal.kind, round(weight, 4), start, end, signal.reason))
        signals.extend(hidden_signals(text))
        signals = one_per_region(signals)
        signals.sort(key=lambda s: (-s.weight, s.start))
        return Assessment(combine(signals), tuple(signals))

    def scan(self, text: str) -> list[Finding]:
        assessment = self.assess(text)
        if not assessment.signals or assessment.score < self.threshold:
            return []
        top = assessment.signals[0]
        kinds = list(dict.fromkeys(s.kind for s in assessment.signals))
        reason = f"{top.reason}; signals: {', '.join(kinds)} (score {assessment.score:.2f})"
        return [
            Finding(
                check=self.name,
                kind=top.kind,
                start=min(s.start for s in assessment.signals),
                end=max(s.end for s in assessment.signals),
                score=assessment.score,
                reason=reason,
            )
        ]
