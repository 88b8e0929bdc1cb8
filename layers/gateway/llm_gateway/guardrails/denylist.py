"""The deny-list check: configured terms and phrases, whole words, matched on folded text.

Folding (``folding.py``) makes full-width "foo", "FOO", "fóo" and "f\u200boo" all read "foo", and a phrase matches
across any run of whitespace (or a single hyphen, underscore or dot between its words). Spans index
the original text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from llm_gateway.guardrails.findings import Finding
from llm_gateway.guardrails.folding import fold

# Between the words of a phrase: the one space folding leaves of any whitespace run, or a joiner.
_PHRASE_GAP = r"[ \-_.]{1,3}"


class DenyListCheck:
    """Reports each occurrence of a deny-listed term. The reason names the term's position in the
    list, never the term as written in the text."""

    name = "denylist"

    def __init__(self, terms: Iterable[str], *, kind: str = "denied_term") -> None:
        folded_terms: list[str] = []
        for term in terms:
            words = fold(term).text.split()
            phrase = " ".join(words)
            if phrase and phrase not in folded_terms:
                folded_terms.append(phrase)
        self.kind = kind
        self.terms: tuple[str, ...] = tuple(folded_terms)
        self._pattern: re.Pattern[str] | None = None
        if folded_terms:
            # Longest first, so "credit card number" wins over "credit card" at the same place.
            alternatives = sorted(folded_terms, key=len, reverse=True)
            body = "|".join(_PHRASE_GAP.join(re.escape(word) for word in phrase.split(" ")) for phrase in alternatives)
            self._pattern = re.compile(rf"(?<!\w)(?:{body})(?!\w)")

    def scan(self, text: str) -> list[Finding]:
        if self._pattern is None or not text:
            return []
        folded = fold(text)
        findings = []
        for match in self._pattern.finditer(folded.text):
            start, end = folded.span(match.start(), match.end())
            term_number = self._term_number(match.group())
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

    def _term_number(self, matched: str) -> int:
        canonical = re.sub(_PHRASE_GAP, " ", matched)
        for number, term in enumerate(self.terms, start=1):
            if re.sub(_PHRASE_GAP, " ", term) == canonical:
                return number
        return 0
