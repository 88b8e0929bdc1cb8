"""Extractive summaries without a model: the degraded mode used when no provider can answer.

Sentences are ranked by the document frequency of their distinct content words (stop words left out),
normalised by the square root of their length; after each pick the picked words weigh less, so that
the next pick favours what has not been said yet (the idea of SumBasic). Words of the caller's focus
weigh more. The picks are returned in document order. Deterministic, no network, and bounded work.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from llm_gateway.documents.chunking import split_sentences

_WORDS = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)?", re.UNICODE)
_MARKUP = re.compile(r"^\s*(?:#{1,6}\s+|[-*+]\s+|\d+[.)]\s+|>\s*)")
_MIN_WORDS = 4  # shorter "sentences" are headings, captions or list debris
_FOCUS_WEIGHT = 4.0
_MAX_SKIPS = 50  # sentences passed over for being too long before the word limit counts as reached
_SAID_FACTOR = 0.3  # a picked sentence's words weigh this much less afterwards: favour what is new
_MAX_SENTENCES_RANKED = 5_000  # bounds the work on huge documents; later sentences still count in frequencies
_STOPWORD_TEXT = """a about above after again against all also am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further had has have having he
    her here hers herself him himself his how i if in into is it its itself just me more most my myself no nor not
    now of off on once only or other our ours ourselves out over own same she should so some such than that the
    their theirs them themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself yourselves may might must
    shall one two also its it's they're we're i'm said says"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


@dataclass(frozen=True)
class _Sentence:
    position: int
    text: str
    words: tuple[str, ...]  # content words, lowercased


def extractive_summary(
    text: str,
    *,
    max_sentences: int | None = 5,
    max_words: int | None = None,
    focus: str | None = None,
    style: str = "paragraph",
) -> str:
    """The most representative sentences of ``text``, within the sentence and/or word limit."""
    sentences = _candidates(text)
    if not sentences:
        stripped = " ".join(text.split())
        return _truncate_words(stripped, max_words) if max_words else stripped
    picked = _pick(sentences, _focus_words(focus), max_sentences, max_words)
    lines = [s.text for s in sorted(picked, key=lambda s: s.position)]
    if max_words:
        lines = _fit_words(lines, max_words)
    if style == "bullets":
        return "\n".join(f"- {line}" for line in lines)
    return " ".join(lines)


def _candidates(text: str) -> list[_Sentence]:
    candidates = []
    for position, raw in enumerate(split_sentences(text)):
        cleaned = " ".join(_MARKUP.sub("", raw).split())
        words = tuple(w.lower() for w in _WORDS.findall(cleaned))
        if len(words) < _MIN_WORDS:
            continue
        content = tuple(w for w in words if w not in _STOPWORDS and not w.isdigit())
        if content:
            candidates.append(_Sentence(position, cleaned, content))
    return candidates


def _focus_words(focus: str | None) -> frozenset[str]:
    if not focus:
        return frozenset()
    return frozenset(w.lower() for w in _WORDS.findall(focus) if w.lower() not in _STOPWORDS)


def _pick(
    sentences: list[_Sentence], focus: frozenset[str], max_sentences: int | None, max_words: int | None
) -> list[_Sentence]:
    weights = _weights(s.words for s in sentences)
    for word in focus & weights.keys():
        weights[word] *= _FOCUS_WEIGHT
    pool = sentences[:_MAX_SENTENCES_RANKED]
    limit = max_sentences if max_sentences else len(pool)
    picked: list[_Sentence] = []
    seen_texts: set[str] = set()
    words_used = 0
    skipped = 0
    while pool and len(picked) < limit:
        best = max(pool, key=lambda s: (_score(s, weights), -s.position))
        pool.remove(best)
        if best.text.lower() in seen_texts:
            continue
        length = len(best.text.split())
        if max_words and picked and words_used + length > max_words:
            skipped += 1
            if skipped > _MAX_SKIPS:
                break
            continue  # a shorter sentence may still fit
        picked.append(best)
        seen_texts.add(best.text.lower())
        words_used += length
        for word in set(best.words):
            weights[word] *= _SAID_FACTOR
        if max_words and words_used >= max_words:
            break
    return picked


def _weights(word_lists: Iterable[tuple[str, ...]]) -> dict[str, float]:
    counts: Counter[str] = Counter()
    for words in word_lists:
        counts.update(words)
    total = sum(counts.values())
    return {word: n / total for word, n in counts.items()}


def _score(sentence: _Sentence, weights: dict[str, float]) -> float:
    # Distinct words only (a repeated word says nothing new); the square root keeps long sentences
    # from winning on length alone and short ones from winning on a single frequent word.
    distinct = set(sentence.words)
    return sum(weights[w] for w in distinct) / math.sqrt(len(sentence.words))


def _fit_words(lines: list[str], max_words: int) -> list[str]:
    kept: list[str] = []
    used = 0
    for line in lines:
        length = len(line.split())
        if used + length > max_words:
            if not kept:
                kept.append(_truncate_words(line, max_words))
            break
        kept.append(line)
        used += length
    return kept


def _truncate_words(text: str, max_words: int) -> str:
    words = text.split()
    return text if len(words) <= max_words else " ".join(words[:max_words]) + " \u2026"
