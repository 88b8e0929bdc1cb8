"""Redaction: found spans replaced by placeholders, and (for ``restore``) put back in the answer.

A placeholder names the kind and a number, ``[EMAIL_1]``, ``[CREDIT_CARD_2]``: models copy such tokens
faithfully, and they read as what they stand for. The same value gets the same placeholder throughout
one request, and numbering starts at 1 in every request, so two requests that differ only in the
personal data they carry redact to the same text (and share a cache entry, whose answer each request
restores with its own values). A number already written in the caller's text is skipped, so a literal
``[EMAIL_1]`` is never mistaken for a placeholder.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from llm_gateway.guardrails.findings import Finding

PLACEHOLDER = re.compile(r"\[([A-Z][A-Z0-9_]*?)_(\d{1,6})\]")
LONGEST_PLACEHOLDER = 72  # a stream holds back at most this many characters that may start one


def label(kind: str) -> str:
    cleaned = re.sub(r"[^A-Z0-9]+", "_", kind.upper()).strip("_")
    return cleaned[:48] if cleaned and cleaned[0].isalpha() else f"X_{cleaned}"[:48]


class Vault:
    """One request's placeholders and the values they stand for."""

    def __init__(self) -> None:
        self.originals: dict[str, str] = {}  # placeholder -> value, for the placeholders restore puts back
        self._by_value: dict[tuple[str, str], str] = {}
        self._counts: dict[str, int] = {}
        self._taken: set[str] = set()  # written by the caller: never handed out

    def reserve_literals(self, text: str) -> None:
        self._taken.update(m.group(0) for m in PLACEHOLDER.finditer(text))

    def placeholder(self, kind: str, value: str, *, restorable: bool = True) -> str:
        """The value's placeholder; ``restorable`` ones (the input's) are put back by :func:`restore`,
        the others (what the model itself wrote, redacted from the answer) never are."""
        name = label(kind)
        found = self._by_value.get((name, value))
        if found is not None:
            return found
        while True:
            self._counts[name] = self._counts.get(name, 0) + 1
            candidate = f"[{name}_{self._counts[name]}]"
            if candidate not in self._taken:
                break
        self._by_value[(name, value)] = candidate
        if restorable:
            self.originals[candidate] = value
        return candidate

    def __bool__(self) -> bool:
        return bool(self.originals)


def merged_spans(findings: Sequence[Finding], length: int) -> list[Finding]:
    """Non-overlapping findings in text order (an overlap keeps the earlier, then the longer one)."""
    ordered = sorted(
        (f for f in findings if 0 <= f.start < f.end <= length), key=lambda f: (f.start, -(f.end - f.start))
    )
    kept: list[Finding] = []
    for finding in ordered:
        if kept and finding.start < kept[-1].end:
            continue
        kept.append(finding)
    return kept


def redact(text: str, findings: Sequence[Finding], vault: Vault, *, restorable: bool = True) -> str:
    """``text`` with every finding's span replaced by its placeholder (only PII placeholders of the
    input may be restored: a deny-listed term or an injection attempt never comes back)."""
    if not findings:
        return text
    pieces, last = [], 0
    for finding in merged_spans(findings, len(text)):
        pieces += [
            text[last : finding.start],
            vault.placeholder(
                finding.kind, text[finding.start : finding.end], restorable=restorable and finding.check == "pii"
            ),
        ]
        last = finding.end
    pieces.append(text[last:])
    return "".join(pieces)


def restore(text: str, vault: Vault, *, json_string: bool = False) -> str:
    """The placeholders this request handed out, replaced by their values (others left as written).
    ``json_string``: the text is inside a JSON string (a streamed JSON answer), so each value goes in
    escaped, as JSON needs a quote, a backslash or a newline written there."""
    if not vault or "[" not in text:
        return text

    def value(match: re.Match[str]) -> str:
        found = vault.originals.get(match.group(0))
        if found is None:
            return match.group(0)
        return json.dumps(found, ensure_ascii=False)[1:-1] if json_string else found

    return PLACEHOLDER.sub(value, text)


def restore_json(text: str, vault: Vault) -> str:
    """Tool-call arguments (or a JSON answer) restored inside the JSON's strings when it parses, so a
    value that needs escaping there (a quote, a PEM key's newlines) keeps it JSON; else as text. Text
    with none of this request's placeholders is returned as written."""
    if not vault or not any(m.group(0) in vault.originals for m in PLACEHOLDER.finditer(text)):
        return text
    return map_json_strings(text, lambda s: restore(s, vault)) or restore(text, vault)


def map_json_strings(text: str, change: Callable[[str], str]) -> str | None:
    """JSON text with ``change`` applied to every string (keys too); None when ``text`` is not JSON."""
    try:
        value = json.loads(text)
    except ValueError:
        return None

    def walk(node: Any) -> Any:
        if isinstance(node, str):
            return change(node)
        if isinstance(node, list):
            return [walk(item) for item in node]
        if isinstance(node, dict):
            return {change(k): walk(v) for k, v in node.items()}
        return node

    return json.dumps(walk(value), ensure_ascii=False)


class StreamRestorer:
    """Restores placeholders in text that arrives in pieces: a piece that ends inside what may be a
    placeholder keeps that tail until the next piece (or the end) says what it is."""

    def __init__(self, vault: Vault, *, json_answer: bool = False) -> None:
        self.vault = vault
        # A JSON answer's placeholders stand inside its strings: their values go in escaped, so the text
        # streamed stays the JSON the buffered answer would be (restore_json).
        self.json_answer = json_answer
        self._held = ""

    def feed(self, piece: str) -> str:
        text = self._held + piece
        cut = _possible_start(text)
        text, self._held = text[:cut], text[cut:]
        return restore(text, self.vault, json_string=self.json_answer)

    def flush(self) -> str:
        text, self._held = self._held, ""
        return restore(text, self.vault, json_string=self.json_answer)


def _possible_start(text: str) -> int:
    """Where an unfinished placeholder may begin in ``text`` (its length when none may)."""
    start = text.rfind("[", max(0, len(text) - LONGEST_PLACEHOLDER))
    if start < 0 or "]" in text[start:]:
        return len(text)
    tail = text[start + 1 :]
    return start if re.fullmatch(r"[A-Z0-9_]*", tail) else len(text)
