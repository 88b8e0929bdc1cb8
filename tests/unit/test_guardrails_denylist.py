"""The deny-list: whole words, folded for case, width, accents and invisible characters, spans on the original."""

from __future__ import annotations

import pytest

from llm_gateway.guardrails.denylist import DenyListCheck

CHECK = DenyListCheck(["Project Falcon", "acme-secret", "widget"])


def fullwidth(text: str) -> str:
    """The full-width twin of ASCII text (U+FF01..U+FF5E), an old trick to slip past plain matching."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def matched(text: str) -> list[str]:
    return [text[f.start : f.end] for f in CHECK.scan(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("status of project falcon?", ["project falcon"]),
        ("PROJECT   FALCON launches", ["PROJECT   FALCON"]),
        ("project\n\tfalcon", ["project\n\tfalcon"]),
        (fullwidth("Project Falcon"), [fullwidth("Project Falcon")]),
        ("wíd\u200bget sales", ["wíd\u200bget"]),
        ("the Widget, the WIDGET.", ["Widget", "WIDGET"]),
        ("leaked ACME-SECRET today", ["ACME-SECRET"]),
        ("project-falcon and project_falcon", ["project-falcon", "project_falcon"]),
    ],
)
def test_matches_folded_terms_and_maps_spans_back(text: str, expected: list[str]) -> None:
    assert matched(text) == expected


@pytest.mark.parametrize("text", ["widgets and gadgets", "subwidget", "projects falconry", "falcon project", ""])
def test_whole_words_only(text: str) -> None:
    assert matched(text) == []


def test_findings_name_the_term_by_number_not_by_text() -> None:
    [finding] = CHECK.scan("Ask about PROJECT FALCON now")
    assert finding.check == "denylist" and finding.kind == "denied_term"
    assert finding.reason == "deny-listed term #1" and "falcon" not in finding.reason.lower()


def test_spans_after_expanding_and_dropped_characters() -> None:
    # "ﬁ" folds to two letters and the combining accent is dropped: spans still land on the original.
    check = DenyListCheck(["fine", "cafe"])
    text = "ok ﬁne — café and cafe\u0301!"
    assert [text[f.start : f.end] for f in check.scan(text)] == ["ﬁne", "café", "cafe\u0301"]


def test_empty_list_finds_nothing() -> None:
    assert DenyListCheck([]).scan("anything at all") == []
    assert DenyListCheck(["  ", ""]).scan("anything") == []


def test_term_numbers_follow_the_list_and_many_terms_stay_fast() -> None:
    terms = [f"term{i}" for i in range(5000)] + ["needle phrase"]
    check = DenyListCheck(terms)
    text = " ".join(["hay"] * 20000 + ["NEEDLE  phrase", "term4999"])
    findings = check.scan(text)
    assert [f.reason for f in findings] == ["deny-listed term #5001", "deny-listed term #5000"]


def test_overlong_terms_are_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="at most 200"):
        DenyListCheck(["x" * 201])
    assert DenyListCheck(["y" * 200]).scan("a " + "Y" * 200 + " b")
