"""The deny-list check: configured terms and phrases, whole words, matched on folded text.

Folding (``folding.py``) makes full-width "foo", "FOO", "fóo" and "f\u200boo" all read "foo", and a phrase matches
across any run of whitespace (or a single hyphen, underscore or dot between its words). Spans index
the original text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TypeAlias

from llm_gateway.guardrails.findings import Finding
from llm_gateway.guardrails.folding import fold

# Between the words of a phrase: the one space folding leaves of any whitespace run, or a joiner.
_PHRASE_GAP = r"[ \-_.]{1,3}"


def _canonical(phrase: str) -> str:
    return re.sub(_PHRASE_GAP, " ", phrase)


MAX_TERM_LENGTH = 200  # a term is a word or a phrase; the trie below recurses once per character
_END = ""  # trie key marking that a term ends at this node
_Trie: TypeAlias = dict[str, "_Trie"]


def _trie_regex(phrases: list[str]) -> str:
    """One regex for many phrases, factored by common prefix ("ab|ac" -> "a(?:b|c)"): a flat alternation
    of thousands of terms is tried branch by branch at every position; a trie tries a handful."""
    root: _Trie = {}
    for phrase in phrases:
        node = root
        for char in phrase:
            node = node.setdefault(char, {})
        node[_END] = {}

    def render(node: _Trie) -> str:
        branches = [
            (_PHRASE_GAP if char == " " else re.escape(char)) + render(child)
            for char, child in node.items()
            if char != _END
        ]
        if _END in node:
            branches.append("")  # last, so a longer term at the same place wins
        if len(branches) == 1:
            return branches[0]
        return "(?:" + "|".join(branches) + ")"

    return render(root)


class DenyListCheck:
    """Reports each occurrence of a deny-listed term. The reason names the term's position in the
    list, never the term as written in the text."""

    name = "denylist"

    def __init__(self, terms: Iterable[str], *, kind: str = "denied_term") -> None:
        folded_terms = list(dict.fromkeys(" ".join(fold(term).text.split()) for term in terms))
        if "" in folded_terms:
            folded_terms.remove("")
        if any(len(term) > MAX_TERM_LENGTH for term in folded_terms):
            raise ValueError(f"deny-list terms are at most {MAX_TERM_LENGTH} characters")
        self.kind = kind
        self.terms: tuple[str, ...] = tuple(folded_terms)
        # A match read back with its gaps as single spaces names its term; terms that read the same
        # ("acme-secret", "acme secret") share the first one's number.
        self._numbers: dict[str, int] = {}
        for number, term in enumerate(folded_terms, start=1):
            self._numbers.setdefault(_canonical(term), number)
        self._pattern: re.Pattern[str] | None = None
        if folded_terms:
            self._pattern = re.compile(rf"(?<!\w){_trie_regex(folded_terms)}(?!\w)")

    def scan(self, text: str) -> list[Finding]:
        if self._pattern is None or not text:
            return []
        folded = fold(text)
        findings = []
        for match in self._pattern.finditer(folded.text):
            start, end = folded.span(match.start(), match.end())
            term_number = self._numbers.get(_canonical(match.group()), 0)
            findings.append(
                Finding(
                    check=self.name,
                    kind=self.kind,
                    start=start,
                    end=end,
                    reason=f"deny-listed term #{term_number}",
                )
            )
        return findings
