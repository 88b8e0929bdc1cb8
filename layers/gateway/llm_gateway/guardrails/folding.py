"""Fold text for matching (NFKC, accents off, case folded, whitespace runs as one space, invisible
format characters dropped) while remembering where every folded character came from.

Matching on the folded text defeats the cheap evasions (full-width letters, ``IgNoRe``, a zero-width
space inside a word, two spaces inside a phrase); ``Folded.span`` maps a match back to the original
text, so findings index what the caller sent.
"""

from __future__ import annotations

import re
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


# Whitespace runs, printable-ASCII runs (folded a run at a time), and single other characters.
_TOKENS = re.compile(r"\s+|[!-~]+|[^\s!-~]")


def fold(text: str) -> Folded:
    out: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    previous_space = False
    for token in _TOKENS.finditer(text):
        begin, stop = token.span()
        first = text[begin]
        if first.isspace():
            if previous_space:
                ends[-1] = stop
                continue
            out.append(" ")
            starts.append(begin)
            ends.append(stop)
            previous_space = True
        elif first <= "~":
            out.append(token.group().lower())
            starts.extend(range(begin, stop))
            ends.extend(range(begin + 1, stop + 1))
            previous_space = False
        elif piece := _fold_char(first):
            out.append(piece)
            starts.extend([begin] * len(piece))
            ends.extend([stop] * len(piece))
            previous_space = piece.isspace()
        elif ends:  # a dropped character belongs to the one before it (an accent to its letter)
            ends[-1] = stop
    return Folded("".join(out), tuple(starts), tuple(ends))
