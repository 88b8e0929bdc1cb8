"""The extractive (no model) summary used in degraded mode, and HTML to text."""

from llm_gateway.documents.html_text import html_to_text, looks_like_html
from llm_gateway.operations.extractive_summary import extractive_summary

ARTICLE = """# Harbour report

The harbour authority approved a new container terminal for the northern harbour.
The container terminal will double the harbour capacity for container ships by 2030.
Local fishermen worry that the terminal will close their traditional moorings.
It rained on Tuesday.
The authority promised new moorings for the fishermen next to the old lighthouse.
Costs of the container terminal are estimated at 400 million euros, paid by the port and the state.
A spokesperson said that the weather was pleasant.
"""


def test_picks_the_central_sentence_first():
    assert extractive_summary(ARTICLE, max_sentences=1) == (
        "The harbour authority approved a new container terminal for the northern harbour."
    )


def test_later_picks_favour_what_has_not_been_said_and_keep_document_order():
    summary = extractive_summary(ARTICLE, max_sentences=3)
    assert summary.startswith("The harbour authority approved")
    assert "fishermen" in summary and "Costs" in summary  # not a second sentence on container capacity
    assert "double the harbour capacity" not in summary
    assert "weather" not in summary and "rained" not in summary
    assert summary.index("fishermen") < summary.index("Costs")


def test_focus_words_weigh_more():
    summary = extractive_summary(ARTICLE, max_sentences=1, focus="costs in euros")
    assert summary.startswith("Costs of the container terminal")


def test_word_limit_is_respected():
    summary = extractive_summary(ARTICLE, max_sentences=None, max_words=30)
    assert 0 < len(summary.split()) <= 30
    long_sentence = " ".join(["harbour"] * 60) + "."
    assert len(extractive_summary(long_sentence, max_sentences=None, max_words=10).split()) <= 11  # + ellipsis


def test_bullets_style_and_markup_removed():
    summary = extractive_summary(ARTICLE, max_sentences=2, style="bullets")
    lines = summary.splitlines()
    assert len(lines) == 2 and all(line.startswith("- ") and not line.startswith("- -") for line in lines)
    assert "#" not in summary


def test_deterministic_and_no_duplicates():
    doubled = ARTICLE + "\n\n" + ARTICLE
    first = extractive_summary(doubled, max_sentences=4)
    assert first == extractive_summary(doubled, max_sentences=4)
    sentences = [s for s in first.split(". ") if s]
    assert len(sentences) == len(set(sentences))


def test_text_without_sentences_comes_back_whole():
    assert extractive_summary("  just   a few words  ", max_sentences=3) == "just a few words"
    assert extractive_summary("", max_sentences=3) == ""


def test_html_to_text_keeps_visible_text_as_paragraphs():
    html = """<!doctype html><html><head><title>T</title><style>p{color:red}</style>
    <script>var s = "<p>not text</p>";</script></head><body><h1>Big &amp; bold</h1>
    <p>First   line<br>second line.</p><ul><li>one</li><li>two</li></ul><pre>keep  this
    layout</pre><table><tr><td>a</td><td>b</td></tr></table></body></html>"""
    assert html_to_text(html) == "Big & bold\n\nFirst line\nsecond line.\n\n- one\n- two\n\nkeep  this\nlayout\n\na b"
    assert looks_like_html(html) and not looks_like_html("if a < b and b > c then done")
