"""Token estimates and chunking: sizes, boundaries, overlap, coverage."""

import re
from itertools import pairwise

import pytest

from llm_gateway.documents.chunking import (
    MAX_OVERLAP_TOKENS,
    chunk_budget,
    default_overlap,
    split_sentences,
    split_text,
)
from llm_gateway.documents.tokens import estimate_text_tokens
from llm_gateway.errors import InvalidRequestError


def paragraph(n: int, sentences: int = 6) -> str:
    return " ".join(f"Paragraph {n} makes point {k} about the harbour and its ships." for k in range(sentences))


def document(paragraphs: int, sentences: int = 6) -> str:
    return "\n\n".join(paragraph(n, sentences) for n in range(paragraphs))


# --------------------------------------------------------------------------- token estimate


def test_estimate_is_chars_over_four_for_plain_english():
    assert estimate_text_tokens("abcd" * 25) == 25
    assert estimate_text_tokens("") == 0
    assert estimate_text_tokens("a") == 1


def test_estimate_counts_digits_and_other_scripts_higher():
    assert estimate_text_tokens("1234567890" * 3) == 10  # three digits per token
    assert estimate_text_tokens("\u6f22" * 30) == 30  # a CJK character is three UTF-8 bytes: one token
    for text in ("hello world", "12345", "\u00e9t\u00e9 \u00e0 Paris", "\u6f22\u5b57"):
        assert estimate_text_tokens(text) >= len(text) / 4


def test_estimate_of_pieces_adds_up_to_at_least_the_whole():
    text = document(3) + " 2024-05-01 \u6f22\u5b57 \u00e9t\u00e9"
    pieces = [text[i : i + 37] for i in range(0, len(text), 37)]
    assert sum(estimate_text_tokens(p) for p in pieces) >= estimate_text_tokens(text)


# --------------------------------------------------------------------------- budget


def test_budget_leaves_room_for_prompt_and_answer_and_is_capped():
    assert chunk_budget(context_window=8192, prompt_tokens=300, output_tokens=500, cap=100_000) == int(7392 * 0.9)
    assert chunk_budget(context_window=1_000_000, prompt_tokens=300, output_tokens=500, cap=3000) == 3000


def test_budget_refuses_a_window_with_no_room():
    with pytest.raises(InvalidRequestError, match="no room"):
        chunk_budget(context_window=1000, prompt_tokens=600, output_tokens=400, cap=3000)


# --------------------------------------------------------------------------- sentences


def test_sentence_split_keeps_abbreviations_initials_and_decimals_together():
    text = "Dr. Smith met J. Doe at 5 p.m. on Monday. Growth was 3.5 percent, e.g. in Q2! Was it enough? Yes."
    assert split_sentences(text) == [
        "Dr. Smith met J. Doe at 5 p.m. on Monday.",
        "Growth was 3.5 percent, e.g. in Q2!",
        "Was it enough?",
        "Yes.",
    ]


def test_line_breaks_and_cjk_full_stops_end_sentences():
    assert split_sentences("# Title\n- item one\n- item two") == ["# Title", "- item one", "- item two"]
    assert split_sentences("\u4eca\u65e5\u306f\u3002\u660e\u65e5\u3082\u3002") == [
        "\u4eca\u65e5\u306f\u3002",
        "\u660e\u65e5\u3082\u3002",
    ]


# --------------------------------------------------------------------------- chunks


@pytest.mark.parametrize("max_tokens", [40, 100, 333, 1000])
def test_chunks_respect_the_budget_and_cover_the_text_in_order(max_tokens):
    text = document(30)
    chunks = split_text(text, max_tokens)
    assert all(c.tokens <= max_tokens for c in chunks)
    assert all(c.tokens == estimate_text_tokens(c.text) for c in chunks)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert chunks[0].start == 0 and chunks[-1].end == len(text)
    for previous, current in pairwise(chunks):
        assert previous.start < current.start <= previous.end + 2  # no gap (only the blank line between)
        assert text[current.start : current.end] == current.text
    covered = set()
    for chunk in chunks:
        covered.update(range(chunk.start, chunk.end))
    assert all(i in covered or text[i].isspace() for i in range(len(text)))


def test_a_text_that_fits_is_one_chunk():
    text = document(2)
    [chunk] = split_text(text, estimate_text_tokens(text))
    assert chunk.text == text


def test_chunks_end_on_paragraph_breaks_when_one_is_in_the_second_half():
    text = document(12, sentences=5)  # paragraphs of about 75 tokens
    chunks = split_text(text, 200, overlap_tokens=0)
    assert len(chunks) > 3
    for chunk in chunks:
        assert chunk.text.startswith("Paragraph ") and chunk.text.endswith("ships.")
        assert text[chunk.end : chunk.end + 2] in ("\n\n", "")  # cut at a blank line (or the end)


def test_chunks_end_on_sentence_breaks_inside_long_paragraphs():
    text = paragraph(0, sentences=80)  # one paragraph, far over the budget
    chunks = split_text(text, 120, overlap_tokens=0)
    assert len(chunks) > 4
    for chunk in chunks:
        assert chunk.text.endswith("ships.")
        assert re.match(r"Paragraph 0 makes point \d+ ", chunk.text)


def test_consecutive_chunks_overlap_by_whole_sentences_within_the_limit():
    text = paragraph(0, sentences=80)
    chunks = split_text(text, 200, overlap_tokens=30)
    for previous, current in pairwise(chunks):
        shared = text[current.start : previous.end]
        assert shared, "no overlap"
        assert estimate_text_tokens(shared) <= 30 + 1
        assert shared.endswith("ships.") and re.match(r"Paragraph 0 makes point \d+ ", shared)


def test_default_overlap_is_small():
    assert default_overlap(100) == 10
    assert default_overlap(100_000) == MAX_OVERLAP_TOKENS


def test_a_sentence_longer_than_a_chunk_is_cut_between_words_with_overlap():
    words = [f"w{i:04d}" for i in range(2000)]
    text = " ".join(words) + "."
    chunks = split_text(text, 100)
    assert len(chunks) > 10 and all(c.tokens <= 100 for c in chunks)
    for chunk in chunks:
        assert re.fullmatch(r"w\d{4}( w\d{4})*\.?", chunk.text), chunk.text[:40]
    for previous, current in pairwise(chunks):
        assert current.start < previous.end  # words shared with the previous chunk
    seen = " ".join(c.text for c in chunks)
    assert all(w in seen for w in words)


def test_a_word_longer_than_a_chunk_is_cut_between_characters():
    blob = "A" * 1000 + "\u6f22" * 300
    chunks = split_text(f"Intro sentence here. {blob} Outro.", 64)
    assert all(c.tokens <= 64 for c in chunks)
    assert "".join(c.text for c in chunks).count("A") >= 1000
    assert "".join(c.text for c in chunks).count("\u6f22") >= 300


def test_empty_and_blank_text_give_no_chunks():
    assert split_text("", 100) == []
    assert split_text("  \n\n  ", 100) == []


def test_max_tokens_must_be_positive():
    with pytest.raises(ValueError):
        split_text("hello", 0)
