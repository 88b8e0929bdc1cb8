"""The parts injection signals are made of: a Signal (a weighted hint with a span), a PhraseRule (a
pattern that yields one), the matching loop, and the quotation test that damps quoted phrases.

The rules themselves are in ``injection_phrases.py``; the hiding places in ``injection_hidden.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Signal:
    kind: str
    weight: float
    start: int
    end: int
    reason: str


@dataclass(frozen=True)
class PhraseRule:
    kind: str
    weight: float
    pattern: re.Pattern[str]
    reason: str
    source: str  # the pattern as written, leading word boundaries included
    word_start: bool  # the match must start at a word boundary (checked outside the regex, see phrase_rule)
    unless_after: re.Pattern[str] | None = None  # no signal when the text before the match ends like this


# Up to N filler words between two anchors, each maybe after a comma, colon or full stop.
WORDS = "(?:[,.:;!?]? [\\w'\u2019]{1,20}){0,%d}?"


def phrase_rule(kind: str, weight: float, pattern: str, reason: str, unless_after: str | None = None) -> PhraseRule:
    """A leading ``\\b`` hides the pattern's first letters from the engine, which then tries every
    position instead of jumping to candidates: on long texts that is ~50x slower. So the boundary is
    stripped from the regex (also after each top-level ``|``; no rule has one nested in a group) and
    checked on each match in ``rule_matches`` instead; a test proves both forms find the same spans."""
    word_start = pattern.startswith(r"\b")
    fast = pattern.removeprefix(r"\b").replace(r"|\b", "|") if word_start else pattern
    after = re.compile(unless_after) if unless_after else None
    return PhraseRule(kind, weight, re.compile(fast), reason, pattern, word_start, after)


# Quoting or discussing an attack is not making one: these damp a phrase's weight (see injection.py).
_QUOTES = "\"'`\u201c\u201d\u2018\u2019\u00ab\u00bb"
DISCUSSION_MARKERS = re.compile(
    r"\b(?:prompt injections?|injection attacks?|jailbreak(?:ing)? (?:attacks?|attempts?|prompts?)|attackers?"
    r"|adversarial|researchers?|red[- ]team\w*|for example|such as|defen[cs]es?|mitigat\w+|classifiers?|detect\w*"
    r"|papers?|study|studies|benchmarks?|taxonomy|phrases? like|known as|examples? of)\b"
)


def quoted(text: str, start: int, end: int) -> bool:
    """Whether text[start:end] sits inside one quotation: an opening mark before it in the same sentence
    (a mark at a word start, so the apostrophe in "don't" is no quote) and a closing mark after it."""
    before = text[max(0, start - 120) : start]
    opening = -1
    for index in range(len(before) - 1, -1, -1):
        char = before[index]
        if char in ".!?" or (char in _QUOTES and index + 1 < len(before) and not before[index + 1].isalnum()):
            return False  # the sentence ended, or a quotation closed, before the phrase
        if char in _QUOTES and (index == 0 or not before[index - 1].isalnum()):
            opening = index
            break
    if opening < 0:
        return False
    after = text[end : end + 120]
    return any(char in _QUOTES and (i + 1 == len(after) or not after[i + 1].isalnum()) for i, char in enumerate(after))


def _starts_a_word(text: str, index: int) -> bool:
    return index == 0 or not (text[index - 1].isalnum() or text[index - 1] == "_")


def rule_matches(rule: PhraseRule, text: str) -> Iterator[re.Match[str]]:
    """The rule's matches; one rejected for its start moves the search on by one character, not past
    its end, so a real match overlapping it is still found."""
    position = 0
    while (match := rule.pattern.search(text, position)) is not None:
        start = match.start()
        if rule.word_start and not _starts_a_word(text, start):
            position = start + 1
            continue
        position = max(match.end(), start + 1)
        if rule.unless_after is not None and rule.unless_after.search(text, max(0, start - 12), start):
            continue
        yield match
