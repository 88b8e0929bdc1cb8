"""Token-aware splitting of long documents into chunks that fit one model call.

Chunks end on the coarsest boundary that keeps them within budget: a paragraph break when one falls
in the second half of the chunk, else a sentence (or line) break; a sentence longer than a whole
chunk is cut between words, and a "word" longer than that (a URL, a base64 blob) between characters.
Consecutive chunks share a small overlap of whole sentences so that no statement is cut off from its
context. Token counts are the no-network estimate of :mod:`llm_gateway.documents.tokens`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from llm_gateway.documents.tokens import estimate_text_tokens
from llm_gateway.errors import InvalidRequestError

MIN_CHUNK_TOKENS = 32  # below this a "chunk" holds a sentence fragment and summaries become noise
MAX_OVERLAP_TOKENS = 150
MIN_PIECE_TOKENS = 8  # word runs of an over-long sentence are at least this large
ESTIMATE_SAFETY = 0.10  # head room for the estimate being low against a provider's real tokenizer

TokenCounter = Callable[[str], int]

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
# A sentence ends at . ! ? or an ellipsis (then optional closing quotes/brackets and whitespace),
# at CJK full stops, or at a line break (list items, headings, table rows).
_SENTENCE_END = re.compile(r"[.!?\u2026]+[\"'\u201d\u2019)\]]*\s+|[\u3002\uff01\uff1f]+\s*|\n+")
_ABBREVIATION_WORDS = (
    "mr mrs ms dr prof sr jr st vs etc e.g i.e cf fig no vol pp inc ltd co corp dept approx est jan feb mar apr "
    "jun jul aug sep sept oct nov dec"
)
_ABBREVIATIONS = frozenset(_ABBREVIATION_WORDS.split())
_WORD = re.compile(r"\S+\s*")


@dataclass(frozen=True)
class Chunk:
    index: int
    text: str
    start: int  # offsets of ``text`` in the source (after stripping surrounding whitespace)
    end: int
    tokens: int


@dataclass(frozen=True)
class _Unit:
    """A sentence (or smaller piece) with its trailing whitespace; units tile the text exactly."""

    start: int
    end: int
    tokens: int
    paragraph_end: bool


def chunk_budget(*, context_window: int, prompt_tokens: int, output_tokens: int, cap: int) -> int:
    """Tokens of document text per call: what the window leaves after the prompt and the answer,
    less a safety margin for estimate error, capped so that each call stays quick."""
    room = int((context_window - prompt_tokens - output_tokens) * (1.0 - ESTIMATE_SAFETY))
    budget = min(cap, room)
    if budget < MIN_CHUNK_TOKENS:
        raise InvalidRequestError(
            f"the model's context window ({context_window} tokens) leaves no room for document text after the "
            f"prompt ({prompt_tokens}) and the answer ({output_tokens}); choose a larger model or a shorter summary",
            details={"context_window": context_window, "prompt_tokens": prompt_tokens, "output_tokens": output_tokens},
        )
    return budget


def default_overlap(max_tokens: int) -> int:
    return min(MAX_OVERLAP_TOKENS, max_tokens // 10)


def split_text(
    text: str,
    max_tokens: int,
    *,
    overlap_tokens: int | None = None,
    count: TokenCounter = estimate_text_tokens,
) -> list[Chunk]:
    """Split ``text`` into chunks of at most ``max_tokens`` (estimated) tokens, in document order."""
    if max_tokens < 1:
        raise ValueError("max_tokens must be positive")
    overlap = default_overlap(max_tokens) if overlap_tokens is None else max(0, overlap_tokens)
    overlap = min(overlap, max_tokens // 4)  # the overlap never crowds out new text
    if not text.strip():
        return []
    whole = count(text.strip())
    if whole <= max_tokens:  # summing per-sentence estimates would round up past the budget
        return [_make_chunk(text, [_Unit(0, len(text), whole, True)], 0, 0, 0, count)]
    units = list(_units(text, max_tokens, overlap, count))
    chunks: list[Chunk] = []
    first = 0
    previous_last = -1
    while first < len(units):
        last = _pack(units, first, max_tokens)
        if last <= previous_last:  # the overlap left no room for new text: start afresh
            first = previous_last + 1
            continue
        chunk = _make_chunk(text, units, first, last, len(chunks), count)
        if chunk.text:
            chunks.append(chunk)
        if last == len(units) - 1:
            break
        previous_last = last
        first = _overlap_start(units, first, last, overlap)
    return chunks


def _pack(units: list[_Unit], first: int, max_tokens: int) -> int:
    """Index of the last unit of the chunk starting at ``first``."""
    total = 0
    last = first - 1
    paragraph_cut: int | None = None
    paragraph_cut_tokens = 0
    for i in range(first, len(units)):
        if total + units[i].tokens > max_tokens and i > first:
            break
        total += units[i].tokens
        last = i
        if units[i].paragraph_end:
            paragraph_cut, paragraph_cut_tokens = i, total
    ended_early = last < len(units) - 1 and not units[last].paragraph_end
    if ended_early and paragraph_cut is not None and paragraph_cut_tokens * 2 >= max_tokens:
        return paragraph_cut
    return last


def _overlap_start(units: list[_Unit], first: int, last: int, overlap: int) -> int:
    """First unit of the next chunk: whole units from the end of this one, up to ``overlap`` tokens."""
    start = last + 1
    carried = 0
    while start - 1 > first and carried + units[start - 1].tokens <= overlap:
        start -= 1
        carried += units[start].tokens
    return start


def _make_chunk(text: str, units: list[_Unit], first: int, last: int, index: int, count: TokenCounter) -> Chunk:
    start, end = units[first].start, units[last].end
    raw = text[start:end]
    stripped = raw.strip()
    offset = start + (len(raw) - len(raw.lstrip()))
    return Chunk(index=index, text=stripped, start=offset, end=offset + len(stripped), tokens=count(stripped))


def split_sentences(text: str) -> list[str]:
    """The sentences (and lines) of ``text``, stripped, in order."""
    sentences = []
    for p_start, p_end in _spans(text, _PARAGRAPH_BREAK, 0, len(text)):
        for a, b in _sentence_spans(text, p_start, p_end):
            if sentence := text[a:b].strip():
                sentences.append(sentence)
    return sentences


# --------------------------------------------------------------------------- units


def _units(text: str, max_tokens: int, overlap: int, count: TokenCounter) -> Iterator[_Unit]:
    # A sentence longer than a chunk is cut into word runs no larger than the overlap, so that
    # consecutive chunks of one giant sentence still share some text.
    piece_tokens = overlap if overlap >= MIN_PIECE_TOKENS else max_tokens
    for p_start, p_end in _spans(text, _PARAGRAPH_BREAK, 0, len(text)):
        sentences = list(_sentence_spans(text, p_start, p_end))
        for n, (s_start, s_end) in enumerate(sentences):
            is_last = n == len(sentences) - 1
            tokens = count(text[s_start:s_end])
            if tokens <= max_tokens:
                yield _Unit(s_start, s_end, tokens, is_last)
                continue
            pieces = list(_small_pieces(text, s_start, s_end, piece_tokens, count))
            for m, (a, b, t) in enumerate(pieces):
                yield _Unit(a, b, t, is_last and m == len(pieces) - 1)


def _spans(text: str, separator: re.Pattern[str], start: int, end: int) -> Iterator[tuple[int, int]]:
    """Pieces of ``text[start:end]`` each ending just after a separator match (the last one at ``end``)."""
    position = start
    for match in separator.finditer(text, start, end):
        if match.end() > position and match.start() > position:
            yield position, match.end()
            position = match.end()
    if position < end:
        yield position, end


def _sentence_spans(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    position = start
    for match in _SENTENCE_END.finditer(text, start, end):
        if match.start() <= position or not _ends_sentence(text, match, end):
            continue
        yield position, match.end()
        position = match.end()
    if position < end:
        yield position, end


def _ends_sentence(text: str, match: re.Match[str], end: int) -> bool:
    mark = match.group()
    if mark[0] != ".":
        return True
    if match.end() >= end:
        return True
    following = text[match.end()]
    if following.islower():  # "e.g. the", "approx. ten"
        return False
    before = text[max(0, match.start() - 16) : match.start()].split()
    word = before[-1].lstrip("(\"'").lower() if before else ""
    if len(word) == 1 and word.isalpha():  # an initial: "J. Smith"
        return False
    return word not in _ABBREVIATIONS


def _small_pieces(
    text: str, start: int, end: int, max_tokens: int, count: TokenCounter
) -> Iterator[tuple[int, int, int]]:
    """Runs of whole words of at most ``max_tokens``; a word longer than that: runs of characters."""
    run_start, run_tokens = start, 0
    for match in _WORD.finditer(text, start, end):
        a, b = match.start(), match.end()
        if a > run_start and run_tokens == 0:  # leading whitespace joins the first word
            a = run_start
        tokens = count(text[a:b])
        if tokens > max_tokens:
            if run_tokens:
                yield run_start, a, run_tokens
            yield from _char_pieces(text, a, b, max_tokens, count)
            run_start, run_tokens = b, 0
            continue
        extended = run_tokens + tokens  # an upper bound (per-word rounding); recount near the limit
        if extended > max_tokens and run_tokens:
            extended = count(text[run_start:b])
        if extended > max_tokens:
            yield run_start, a, run_tokens
            run_start, extended = a, tokens
        run_tokens = extended
    if run_start < end:
        yield run_start, end, count(text[run_start:end])


def _char_pieces(
    text: str, start: int, end: int, max_tokens: int, count: TokenCounter
) -> Iterator[tuple[int, int, int]]:
    a = start
    while a < end:
        b = min(end, a + max_tokens * 4)  # ASCII: 4 characters a token; shrink for denser scripts
        while b - a > 1 and count(text[a:b]) > max_tokens:
            b = a + max(1, (b - a) * 3 // 4)
        yield a, b, count(text[a:b])
        a = b
