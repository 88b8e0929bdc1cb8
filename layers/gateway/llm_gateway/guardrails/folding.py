"""Fold text for matching (NFKC, accents off, case folded, whitespace runs as one space, invisible
format characters dropped) while remembering where every folded character came from.

Matching on the folded text defeats the cheap evasions (full-width letters, ``IgNoRe``, a zero-width
space inside a word, two spaces inside a phrase); ``Folded.span`` maps a match back to the original
text, so findings index what the caller sent.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class Folded:
    text: str
    starts: tuple[int, ...]  # starts[i]: index in the original text of the character folded text[i] came from
    ends: tuple[int, ...]  # ends[i]: index just past the original characters text[i] accounts for

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original span of folded ``text[start:end]`` (``end > start``)."""
        return self.starts[start], self.ends[end - 1]


@lru_cache(maxsize=4096)
def _fold_char(char: str) -> str:
    if unicodedata.category(char) == "Cf":  # zero-width, bidi controls, soft hyphen, tag characters
        return ""
    composed = unicodedata.normalize("NFKC", char)
    bare = "".join(c for c in unicodedata.normalize("NFD", composed) if not unicodedata.combining(c))
    return bare.casefold()


def fold(text: str) -> Folded:
    out: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    previous_space = False
    for index, char in enumerate(text):
        if char.isspace():
            if previous_space:
                ends[-1] = index + 1
                continue
            out.append(" ")
            starts.append(index)
            ends.append(index + 1)
            previous_space = True
            continue
        piece = _fold_char(char)
        if not piece:
            if ends:  # a dropped character belongs to the one before it (an accent to its letter)
                ends[-1] = index + 1
            continue
        previous_space = piece.isspace()
        for folded_char in piece:
            out.append(folded_char)
            starts.append(index)
            ends.append(index + 1)
    return Folded("".join(out), tuple(starts), tuple(ends))
