"""Prompt text bound for the logs (only with ``GATEWAY_LOG_PROMPTS``): always through PII redaction,
whatever the request's guardrail mode, so a log line never holds an email, a card or a key."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from llm_gateway.guardrails.redaction import Vault, redact
from llm_gateway.guardrails.texts import map_message

if TYPE_CHECKING:
    from llm_gateway.guardrails.pii import PiiCheck
    from llm_gateway.models import Message


@functools.cache
def _pii() -> PiiCheck:
    from llm_gateway.guardrails.pii import PiiCheck  # loaded only when prompts are logged

    return PiiCheck()


def loggable_text(text: str, vault: Vault | None = None) -> str:
    check = _pii()
    return redact(text, check.scan(text), vault or Vault(), restorable=False)


def loggable_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    vault = Vault()  # one per request: the same value gets the same placeholder throughout
    return [map_message(m, lambda text, _: loggable_text(text, vault)).model_dump() for m in messages]
