"""HTML to plain text with the standard library: readable paragraphs, no markup, no scripts.

Block elements become paragraph breaks, ``<br>`` a line break, list items ``- `` lines; script, style
and other non-content elements are dropped with their contents; entities are decoded.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

_SKIPPED = frozenset({"script", "style", "noscript", "template", "head", "svg", "math", "iframe", "object", "canvas"})
_BLOCKS = frozenset(
    {
        "address", "article", "aside", "blockquote", "caption", "dd", "details", "dialog", "div", "dl", "dt",
        "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header",
        "hr", "main", "nav", "ol", "p", "pre", "section", "summary", "table", "tbody", "thead", "tfoot",
        "tr", "ul",
    }
)  # fmt: skip
_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")
_BLANK_LINES = re.compile(r"\n[ \t]*(?:\n[ \t]*)+")
# An HTML document's first bytes: optional BOM, whitespace, <?xml ...?> and comments, then the doctype or <html>.
_HTML_START = re.compile(
    r"^\ufeff?\s*(?:<\?xml[^>]*\?>\s*)?(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html)[\s>]", re.I | re.S
)
_HTML_HINT = re.compile(r"<\s*(?:!doctype\s+html|html|body|p|div|br|h[1-6]|article|section|span|li|table)\b", re.I)


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip_depth = 0
        self._pre_depth = 0
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        if tag in _SKIPPED:
            self._skip_depth += 1
            return
        if self._skip_depth:
            return
        if tag == "br":
            self.parts.append("\n")
        elif tag == "li":
            self.parts.append("\n- ")
        elif tag in _BLOCKS:
            self.parts.append("\n\n")
            if tag == "pre":
                self._pre_depth += 1
        elif tag in ("td", "th"):
            self.parts.append(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br" and not self._skip_depth:
            self.parts.append("\n")
        elif tag in _BLOCKS and not self._skip_depth:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        if tag in _SKIPPED:
            self._skip_depth = max(0, self._skip_depth - 1)
            return
        if self._skip_depth:
            return
        if tag in _BLOCKS:
            self.parts.append("\n\n")
            if tag == "pre":
                self._pre_depth = max(0, self._pre_depth - 1)

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        if self._skip_depth:
            return
        self.parts.append(data if self._pre_depth else _SPACES.sub(" ", data.replace("\n", " ")))


def html_to_text(html: str) -> str:
    """The visible text of ``html`` as paragraphs separated by blank lines."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    body = "".join(parser.parts)
    if not body.strip() and parser.title.strip():
        body = parser.title
    lines = [line.strip() for line in body.split("\n")]
    text = "\n".join(lines)
    return _BLANK_LINES.sub("\n\n", text).strip()


def looks_like_html(text: str) -> bool:
    """A cheap sniff of the first few kilobytes, for text that arrives without a content type."""
    return bool(_HTML_HINT.search(text[:4096]))


def starts_like_html(text: str) -> bool:
    """Whether ``text`` opens as an HTML document (``<!doctype html`` or ``<html``), for documents that
    arrive without a telling name or content type. Stricter than :func:`looks_like_html`: Markdown with
    inline tags stays Markdown."""
    return bool(_HTML_START.match(text[:4096]))
