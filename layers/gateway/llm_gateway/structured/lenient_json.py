"""Read the JSON a model meant to write: code fences, prose around the object, trailing commas.

Native structured modes give clean JSON; JSON-in-text answers often do not. Each candidate is tried
strictly first and with trailing commas removed second, so clean JSON costs one ``json.loads``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

_FENCE = re.compile(r"```[ \t]*(?:json5?|JSON)?[ \t]*\r?\n(.*?)(?:\r?\n)?```", re.DOTALL)
_MAX_SPANS = 8  # bracket starts tried in prose: bounds the work on long, JSON-free answers
_OPENERS = {"{": "}", "[": "]"}


class LenientJsonError(ValueError):
    """No JSON value could be read from the text; the message says why, for a reask."""


def parse_json_lenient(text: str, *, prefer_object: bool = False) -> Any:
    """The JSON value in ``text``: the whole text, else a fenced block, else the first balanced value.

    With ``prefer_object`` (the caller wants an object), the first value that is an object wins over an
    earlier array or string (``'answer: ["x"] then {...}'`` gives the object); values nested inside an
    earlier one are never picked out of it. Without an object anywhere, the first value is returned.
    """
    stripped = text.strip().lstrip("\ufeff")
    if not stripped:
        raise LenientJsonError("the answer is empty")
    first_error: json.JSONDecodeError | None = None
    first_value: tuple[Any] | None = None
    parsed_spans: list[tuple[int, int]] = []
    for candidate, start, end in _candidates(stripped, parsed_spans):
        for variant in (candidate, without_trailing_commas(candidate)):
            try:
                value = _unwrap_encoded(json.loads(variant))
            except json.JSONDecodeError as exc:
                first_error = first_error or exc
                continue
            if not prefer_object or isinstance(value, dict):
                return value
            first_value = first_value or (value,)
            parsed_spans.append((start, end))
            break
    if first_value is not None:
        return first_value[0]
    if first_error is None or not any(ch in stripped for ch in _OPENERS):
        raise LenientJsonError("the answer contains no JSON object")
    raise LenientJsonError(
        f"the answer is not valid JSON: {first_error.msg} (line {first_error.lineno}, column {first_error.colno})"
    )


def _candidates(text: str, parsed: list[tuple[int, int]]) -> Iterator[tuple[str, int, int]]:
    """(candidate, start, end) in ``text``: the whole text, fenced blocks, then balanced spans; never one
    inside a range of ``parsed`` (values already read: their elements are not the answer)."""
    yield text, 0, len(text)
    for match in _FENCE.finditer(text):
        if not _inside(parsed, match.start(1)):
            yield match.group(1).strip(), match.start(1), match.end(1)
    for start, end in _balanced_ranges(text, parsed):
        yield text[start:end], start, end


def _inside(ranges: list[tuple[int, int]], pos: int) -> bool:
    return any(start <= pos < end for start, end in ranges)


def balanced_spans(text: str) -> Iterator[str]:
    """Substrings from an opening bracket to its matching close, skipping brackets inside strings."""
    for start, end in _balanced_ranges(text, []):
        yield text[start:end]


def _balanced_ranges(text: str, skip: list[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    tried = 0
    start = _next_opener(text, 0)
    while start != -1 and tried < _MAX_SPANS:
        covering = [end for s, end in skip if s <= start < end]
        if covering:  # ``skip`` grows while this runs: jump past values read meanwhile
            start = _next_opener(text, max(covering))
            continue
        tried += 1
        end = _matching_close(text, start)
        if end != -1:
            yield start, end + 1
        start = _next_opener(text, start + 1)


def _next_opener(text: str, pos: int) -> int:
    found = [i for i in (text.find("{", pos), text.find("[", pos)) if i != -1]
    return min(found) if found else -1


def _matching_close(text: str, start: int) -> int:
    stack: list[str] = []
    in_string = False
    escaped = False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in _OPENERS:
            stack.append(_OPENERS[ch])
        elif ch in "}]":
            if not stack or stack.pop() != ch:
                return -1
            if not stack:
                return i
    return -1  # unbalanced: the answer was probably cut off


def without_trailing_commas(text: str) -> str:
    """Drop commas that directly precede ``}`` or ``]`` (outside strings)."""
    out: list[str] = []
    in_string = False
    escaped = False
    pending_comma = -1  # index in ``out`` of a comma that may turn out to be trailing
    for ch in text:
        if in_string:
            out.append(ch)
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
            continue
        if ch in "}]" and pending_comma != -1:
            del out[pending_comma]
            pending_comma = -1
        elif not ch.isspace():
            pending_comma = -1
        if ch == ",":
            pending_comma = len(out)
        elif ch == '"':
            in_string = True
        out.append(ch)
    return "".join(out)


def _unwrap_encoded(value: Any) -> Any:
    """Some models return the object JSON-encoded inside a string; read through one such layer."""
    if isinstance(value, str) and value.strip()[:1] in _OPENERS:
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value
