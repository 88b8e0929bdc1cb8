"""Text a human reader does not see but a model does: hidden HTML, comments, markdown alt text and link
titles, invisible Unicode, base64 blobs. Each hiding place is scanned for instruction phrases; hiding
plus instructions is a strong signal, hiding alone a weak one (plenty of pages hide menus).

Signals carry spans in the original text.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import re
from collections.abc import Iterator

from llm_gateway.guardrails.folding import fold
from llm_gateway.guardrails.injection_phrases import phrase_signals
from llm_gateway.guardrails.injection_signals import Signal

_HIDDEN_STYLE = re.compile(
    r"\bstyle\s{0,3}=\s{0,3}[\"'][^\"'<>]{0,300}?(?:display\s{0,3}:\s{0,3}none|visibility\s{0,3}:\s{0,3}hidden"
    r"|font-size\s{0,3}:\s{0,3}0(?:\.0{1,4})?(?:px|pt|em|rem|%)?\s{0,3}(?=[;\"'])"
    r"|opacity\s{0,3}:\s{0,3}0(?:\.0{1,4})?\s{0,3}(?=[;\"'])"
    r"|color\s{0,3}:\s{0,3}(?:#fff(?:fff)?|white|transparent)\s{0,3}(?=[;\"']))",
    re.IGNORECASE,
)
_HIDDEN_ATTRIBUTE = re.compile(r"<[a-z][a-z0-9]{0,10}\b[^<>]{0,300}?\shidden(?=[\s>=/])", re.IGNORECASE)
_MARKDOWN_ALT = re.compile(r"!\[([^\[\]\n]{1,500})\]\(")
_MARKDOWN_TITLE = re.compile(r"\]\([^\s()]{1,2000} [\"']([^\"'\n]{1,500})[\"']\)")
_MARKDOWN_EXFIL = re.compile(
    r"!\[[^\]\n]{0,200}\]\(https?://[^\s)]{1,2000}?[?&][\w\-]{1,30}=[^\s)]{0,60}?"
    r"(?:\{|\[|%7b|%5b|<)[^\s)]{0,60}?(?:conversation|history|secret|password|summary|data|message|email)",
    re.IGNORECASE,
)
_BASE64 = re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{24,4000}={0,2}(?![A-Za-z0-9+/=])")
# Words that make hidden text read as addressed to a model rather than a hidden menu or a build note
# ("do not edit by hand" is every generated file's comment, so plain imperatives do not count).
_DIRECTIVE = re.compile(
    r"\b(?:ignore|disregard|instructions?|assistant|ai|llm|language model|chatbot|tell the user|system prompt)\b"
)
# Hidden text with such words but no instruction phrase: a hint, below the threshold on its own.
_DIRECTIVE_ONLY = 0.35

_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")
_ZERO_WIDTH = re.compile("[\u200b-\u200d\u2060\ufeff]")
_TAG_RUN = re.compile("[\U000e0000-\U000e007f]+")
_TAG_BLACK_FLAG = "\U0001f3f4"  # subdivision flags spell their region in tag characters after it
# Each hiding place is folded and scanned; past these counts a text is hostile enough already and the
# rest is skipped, which keeps the check linear on inputs built from thousands of them.
_MAX_BLOBS = 16
_MAX_HIDING_PLACES = 64


def _instructions_in(hidden: str) -> tuple[float, str] | None:
    """How strongly a hidden passage reads as instructions: phrase rules first, directive words second."""
    folded = fold(hidden).text
    strongest = max((s.weight for s in phrase_signals(folded)), default=0.0)
    if strongest > 0:
        return strongest, "instruction phrases"
    if _DIRECTIVE.search(folded):
        return 0.0, "directive words"
    return None


def _hidden_weight(found: tuple[float, str], base: float) -> float:
    weight = found[0]
    return min(0.9, base + weight) if weight > 0 else _DIRECTIVE_ONLY


def _hidden_html(text: str) -> Iterator[Signal]:
    for pattern, what in ((_HIDDEN_STYLE, "hidden by CSS"), (_HIDDEN_ATTRIBUTE, "hidden attribute")):
        for match in itertools.islice(pattern.finditer(text), _MAX_HIDING_PLACES):
            close = text.find(">", match.end(), match.end() + 500)
            if close < 0:
                continue
            content_end = text.find("<", close + 1, close + 2001)
            content_end = content_end if content_end >= 0 else min(len(text), close + 2001)
            hidden = text[close + 1 : content_end]
            if not hidden.strip():
                continue
            found = _instructions_in(hidden)
            weak = 0.15 if "color" in match.group().lower() else 0.25
            yield Signal("hidden_text", weak, match.start(), content_end, f"text {what}")
            if found is not None:
                weight = _hidden_weight(found, 0.4)
                yield Signal("hidden_instructions", weight, close + 1, content_end, f"{found[1]} in text {what}")


def _html_comments(text: str) -> Iterator[Signal]:
    position = 0
    for _ in range(_MAX_HIDING_PLACES):
        start = text.find("<!--", position)
        if start < 0:
            return
        end = text.find("-->", start + 4)
        stop = len(text) if end < 0 else end + 3
        found = _instructions_in(text[start + 4 : stop])
        if found is not None:
            weight = _hidden_weight(found, 0.3)
            yield Signal("hidden_instructions", weight, start, stop, f"{found[1]} in an HTML comment")
        if end < 0:
            return
        position = stop


def _markdown(text: str) -> Iterator[Signal]:
    for pattern, what in ((_MARKDOWN_ALT, "image alt text"), (_MARKDOWN_TITLE, "link title")):
        for match in itertools.islice(pattern.finditer(text), _MAX_HIDING_PLACES):
            found = _instructions_in(match.group(1))
            if found is not None and found[0] >= 0.4:
                yield Signal(
                    "hidden_instructions",
                    min(0.9, 0.2 + found[0]),
                    match.start(1),
                    match.end(1),
                    f"{found[1]} in {what}",
                )
    for match in _MARKDOWN_EXFIL.finditer(text):
        yield Signal("data_exfiltration", 0.5, match.start(), match.end(), "image URL asks to be filled with data")


def _invisible_characters(text: str) -> Iterator[Signal]:
    bidi = [match.start() for match in _BIDI.finditer(text)]
    if bidi:
        yield Signal("invisible_characters", 0.35, bidi[0], bidi[-1] + 1, "bidirectional control characters")
    zero_width = [
        match.start()
        for match in _ZERO_WIDTH.finditer(text)
        if not (match.group() == "\ufeff" and match.start() == 0)
        and not (match.group() == "\u200d" and _between_emoji(text, match.start()))
    ]
    if zero_width:
        weight = 0.35 if len(zero_width) >= 3 else 0.2
        yield Signal("invisible_characters", weight, zero_width[0], zero_width[-1] + 1, "zero-width characters")
    yield from _tag_characters(text)


def _between_emoji(text: str, index: int) -> bool:
    """A zero-width joiner between two pictographs builds one emoji (family, profession): not hiding."""
    return 0 < index < len(text) - 1 and ord(text[index - 1]) >= 0x2600 and ord(text[index + 1]) >= 0x2600


def _tag_characters(text: str) -> Iterator[Signal]:
    """Unicode tag characters (U+E0000..E007F) mirror ASCII invisibly: decode a run and read it."""
    for run in itertools.islice(_TAG_RUN.finditer(text), _MAX_HIDING_PLACES):
        start, end = run.span()
        if start > 0 and text[start - 1] == _TAG_BLACK_FLAG:
            continue
        decoded = "".join(chr(ord(c) - 0xE0000) for c in run.group() if 0xE0020 <= ord(c) <= 0xE007E)
        found = _instructions_in(decoded) if decoded else None
        weight = min(0.95, 0.5 + found[0]) if found else 0.5
        yield Signal("hidden_instructions", weight, start, end, "text in invisible Unicode tag characters")


def _base64_blobs(text: str) -> Iterator[Signal]:
    for count, match in enumerate(_BASE64.finditer(text)):
        if count >= _MAX_BLOBS:
            return
        blob = match.group()
        if len(blob) % 4:
            continue
        try:
            decoded = base64.b64decode(blob, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            continue
        if sum(c.isprintable() or c.isspace() for c in decoded) < 0.95 * len(decoded):
            continue
        found = _instructions_in(decoded)
        if found is not None and found[0] >= 0.5:
            yield Signal("encoded_instructions", 0.8, match.start(), match.end(), "base64 text decodes to instructions")


def hidden_signals(text: str) -> list[Signal]:
    return [
        *_hidden_html(text),
        *_html_comments(text),
        *_markdown(text),
        *_invisible_characters(text),
        *_base64_blobs(text),
    ]
