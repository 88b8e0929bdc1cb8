"""Amazon Bedrock Guardrails' ``ApplyGuardrail`` (``POST /guardrail/{id}/version/{version}/apply`` on
bedrock-runtime, here under ``/bedrock``), as the gateway's ``bedrock`` guardrail check calls it.

Like the Converse dialect it refuses a call without a well-formed SigV4 ``Authorization`` header (the same
check: :meth:`BedrockDialect.check_auth`). It intervenes when a text contains one of the configured terms
(``POST /_sim/guardrail {"terms": [...], "blocked_message": ...}``; always on the marker
``[[sim:guardrail]]``): ``action: GUARDRAIL_INTERVENED``, the blocked message as ``outputs``, a word
policy assessment naming the term. Otherwise ``action: NONE`` and the text unchanged.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from local.simulator.bedrock_dialect import BedrockDialect
from local.simulator.wire import Response, _json_response

ROUTE = re.compile(r"^/bedrock/guardrail/([^/]+)/version/([^/]+)/apply$")
MARKER = "[[sim:guardrail]]"
_VERSION = re.compile(r"^([1-9][0-9]{0,7}|DRAFT)$")
_IDENTIFIER = re.compile(r"^([a-z0-9]+|arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}:[0-9]{12}:guardrail/[a-z0-9]+)$")
DEFAULT_BLOCKED = "Sorry, the guardrail blocked this text."


@dataclass
class GuardrailConfig:
    terms: list[str] = field(default_factory=list)
    blocked_message: str = DEFAULT_BLOCKED
    lock: threading.Lock = field(default_factory=threading.Lock)

    def configure(self, terms: list[str] | None = None, blocked_message: str | None = None) -> None:
        if terms is not None and not (isinstance(terms, list) and all(isinstance(t, str) and t for t in terms)):
            raise ValueError("terms must be a list of non-empty strings")
        with self.lock:
            if terms is not None:
                self.terms = list(terms)
            if blocked_message is not None:
                self.blocked_message = str(blocked_message)

    def reset(self) -> None:
        with self.lock:
            self.terms, self.blocked_message = [], DEFAULT_BLOCKED

    def matched(self, text: str) -> str | None:
        with self.lock:
            terms = [MARKER, *self.terms]
        lowered = text.lower()
        return next((term for term in terms if term.lower() in lowered), None)


def handle(config: GuardrailConfig, headers: dict[str, str], raw: bytes, match: re.Match[str]) -> tuple[Response, Any]:
    """(the answer, the parsed body) of one ApplyGuardrail call."""
    dialect = BedrockDialect()
    body: Any = None
    with contextlib.suppress(ValueError):
        body = json.loads(raw) if raw else None
    denied = dialect.check_auth(headers, {})
    if denied is not None:
        return denied, body
    identifier, version = unquote(match.group(1)), unquote(match.group(2))
    if not _IDENTIFIER.fullmatch(identifier) or not _VERSION.fullmatch(version):
        return dialect.error(400, "ValidationException", "guardrailIdentifier or guardrailVersion is not valid"), body
    texts = _texts(body)
    if texts is None:
        message = "source must be INPUT or OUTPUT and content a list of {text: {text}} blocks"
        return dialect.error(400, "ValidationException", message), body
    term = next((found for text in texts if (found := config.matched(text)) is not None), None)
    usage = {"contentPolicyUnits": len(texts), "wordPolicyUnits": len(texts)}
    if term is None:
        answer = {"action": "NONE", "outputs": [], "assessments": [{}], "usage": usage}
    else:
        answer = {
            "action": "GUARDRAIL_INTERVENED",
            "actionReason": "Guardrail blocked.",
            "outputs": [{"text": config.blocked_message}],
            "assessments": [{"wordPolicy": {"customWords": [{"match": term, "action": "BLOCKED", "detected": True}]}}],
            "usage": usage,
        }
    return _json_response(200, answer, {"x-amzn-RequestId": "sim-guardrail"}), body


def _texts(body: Any) -> list[str] | None:
    if not isinstance(body, dict) or body.get("source") not in ("INPUT", "OUTPUT"):
        return None
    content = body.get("content")
    if not isinstance(content, list) or not content:
        return None
    texts = []
    for block in content:
        text = block.get("text") if isinstance(block, dict) else None
        if not isinstance(text, dict) or not isinstance(text.get("text"), str):
            return None
        texts.append(text["text"])
    return texts
