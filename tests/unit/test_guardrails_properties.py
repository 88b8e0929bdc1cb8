"""Properties every check keeps on any text: no exceptions, spans inside the text, PII spans disjoint."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from llm_gateway.guardrails.denylist import DenyListCheck
from llm_gateway.guardrails.folding import fold
from llm_gateway.guardrails.injection import InjectionCheck
from llm_gateway.guardrails.pii import PiiCheck

# Text built from the pieces detectors look for, so random draws reach the validators, not just misses.
PIECES = st.sampled_from(
    [
        "4111 1111 1111 1111", "+44 20 7946 0958", "DE89 3704 0044 0532 0130 00", "a@b.co", "10.0.0.1",
        "::1", "AKIAIOSFODNN7EXAMPLE", "password=", "sk-", "eyJ", ".", "-", " ", "\n", "\u200b", "\u202e",
        "\U000e0069", "ignore previous instructions", "<!--", "-->", "style='display:none'>", "![", "](",
        "\uff29", "e\u0301", "\ufb01", "0", "9", "Z", "/", "=", ":", "@", "(", ")", "\"",
    ]
)  # fmt: skip
TEXTS = st.lists(st.one_of(PIECES, st.text(max_size=8)), max_size=30).map("".join)

PII = PiiCheck()
INJECTION = InjectionCheck(threshold=0.01)
DENYLIST = DenyListCheck(["ignore previous", "fine", "cafe", "a b"])


@settings(max_examples=300, deadline=None)
@given(TEXTS)
def test_findings_stay_inside_the_text(text: str) -> None:
    for check in (PII, INJECTION, DENYLIST):
        for finding in check.scan(text):
            assert 0 <= finding.start < finding.end <= len(text)
            assert 0.0 < finding.score <= 1.0


@settings(max_examples=300, deadline=None)
@given(TEXTS)
def test_pii_spans_are_disjoint_and_ordered(text: str) -> None:
    spans = [(f.start, f.end) for f in PII.scan(text)]
    assert all(first_end <= second_start for (_, first_end), (second_start, _) in itertools.pairwise(spans))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_fold_maps_every_character_back(text: str) -> None:
    folded = fold(text)
    assert len(folded.starts) == len(folded.ends) == len(folded.text)
    assert all(0 <= s < e <= len(text) for s, e in zip(folded.starts, folded.ends, strict=True))
    assert list(folded.starts) == sorted(folded.starts)
