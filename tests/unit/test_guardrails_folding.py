"""Folding keeps a map back to the original: every folded character knows the original span it covers."""

from __future__ import annotations

import pytest

from llm_gateway.guardrails.folding import fold


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("Hello   World", "hello world"),
        ("tab\tand\n\nnewlines", "tab and newlines"),
        ("Caf\u00e9 cafe\u0301", "cafe cafe"),
        ("\uff28\uff49", "hi"),  # full-width
        ("\ufb01ne", "fine"),  # the fi ligature
        ("Stra\u00dfe", "strasse"),  # casefold
        ("ze\u200bro\u00adwidth", "zerowidth"),
        ("a \u200b b", "a b"),
        ("", ""),
    ],
)
def test_fold(text: str, folded: str) -> None:
    assert fold(text).text == folded


def test_spans_cover_the_original_characters() -> None:
    text = "Gr\u00fc\u00dfe,  \ufb01ne cafe\u0301\u200b!"
    folded = fold(text)
    assert folded.text == "grusse, fine cafe!"
    assert len(folded.starts) == len(folded.ends) == len(folded.text)
    index = folded.text.index("fine")
    assert text[slice(*folded.span(index, index + 4))] == "\ufb01ne"
    index = folded.text.index("cafe")
    assert text[slice(*folded.span(index, index + 4))] == "cafe\u0301\u200b"
    index = folded.text.index("grusse")
    assert text[slice(*folded.span(index, index + 6))] == "Gr\u00fc\u00dfe"
    space = folded.text.index(" ")
    assert text[slice(*folded.span(space, space + 1))] == "  "
