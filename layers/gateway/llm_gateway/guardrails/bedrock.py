"""Amazon Bedrock Guardrails as a check: ``ApplyGuardrail`` on bedrock-runtime, SigV4-signed with the
function's role, as the Bedrock provider signs Converse.

``POST /guardrail/{id}/version/{version}/apply`` with ``{"source": "INPUT"|"OUTPUT", "content": [{"text":
{"text": ...}}]}``; the answer's ``action`` is ``NONE`` or ``GUARDRAIL_INTERVENED``, with the guardrail's
own text in ``outputs`` (its masked text, or its blocked message) and why in ``assessments``. One call
per text, so each verdict (and each replacement) belongs to one message. An intervention is a finding
over the whole text; the pipeline's mode decides what it means (block, redact with the guardrail's
output text, monitor). The call is never retried here: one attempt within the request's deadline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import httpx

from llm_gateway.errors import GuardrailUnavailableError
from llm_gateway.guardrails.findings import Finding

log = logging.getLogger("llm_gateway.guardrails")
SIGNING_NAME = "bedrock"
Source = Literal["INPUT", "OUTPUT"]
# assessments key -> (list key, the field naming what was found)
_POLICIES = {
    "topicPolicy": ("topics", "name"),
    "contentPolicy": ("filters", "type"),
    "wordPolicy": ("customWords", None),
    "sensitiveInformationPolicy": ("piiEntities", "type"),
}


@dataclass(frozen=True)
class GuardrailVerdict:
    findings: list[Finding]  # empty: NONE; else one finding over the whole text
    output: str | None  # the guardrail's replacement text when it intervened


class BedrockGuardrail:
    """One configured guardrail (id and version) in one region."""

    name = "bedrock"

    def __init__(
        self,
        *,
        guardrail_id: str,
        version: str,
        region: str,
        base_url: str,
        client: Callable[[], httpx.AsyncClient],
        timeout_s: float = 5.0,
        fail_open: bool = False,
    ) -> None:
        self.guardrail_id = guardrail_id
        self.version = version
        self.region = region
        self.url = f"{base_url}/guardrail/{quote(guardrail_id, safe='')}/version/{quote(version, safe='')}/apply"
        self._client = client
        self.timeout_s = timeout_s
        self.fail_open = fail_open
        self._credential_source: Any = None
        self._lock = threading.Lock()

    async def scan_all(self, texts: Sequence[str], source: Source, remaining_s: float) -> list[GuardrailVerdict]:
        return list(await asyncio.gather(*(self.scan(text, source, remaining_s) for text in texts)))

    async def scan(self, text: str, source: Source, remaining_s: float) -> GuardrailVerdict:
        if not text.strip():
            return GuardrailVerdict([], None)
        content = json.dumps(
            {"source": source, "content": [{"text": {"text": text}}]}, ensure_ascii=False, separators=(",", ":")
        ).encode("utf-8")
        try:
            response = await self._client().post(
                self.url,
                content=content,
                headers=self._signed_headers(content),
                timeout=httpx.Timeout(max(0.1, min(self.timeout_s, remaining_s))),
            )
            data = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError) as exc:
            return self._unavailable(f"{type(exc).__name__}")
        if not isinstance(data, dict):
            error_type = response.headers.get("x-amzn-errortype", "").split(":", 1)[0]
            return self._unavailable(f"status {response.status_code} {error_type}".strip())
        return _verdict(data, len(text))

    def _unavailable(self, why: str) -> GuardrailVerdict:
        log.warning("bedrock guardrail gave no verdict", extra={"error": why, "fail_open": self.fail_open})
        if self.fail_open:
            return GuardrailVerdict([], None)
        raise GuardrailUnavailableError(
            "the Bedrock guardrail could not check the text; retry shortly", details={"check": "bedrock"}
        )

    def _signed_headers(self, content: bytes) -> dict[str, str]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        credentials = self._credentials()
        if credentials is None:
            raise GuardrailUnavailableError("no AWS credentials to sign the Bedrock guardrail call")
        request = AWSRequest(
            method="POST",
            url=self.url,
            data=content,
            headers={"content-type": "application/json", "accept": "application/json"},
        )
        SigV4Auth(credentials.get_frozen_credentials(), SIGNING_NAME, self.region).add_auth(request)
        return {key: str(value) for key, value in request.headers.items()}

    def _credentials(self) -> Any:
        with self._lock:
            if self._credential_source is None:
                import botocore.session

                self._credential_source = botocore.session.get_session().get_credentials()
            return self._credential_source


def _verdict(data: dict[str, Any], length: int) -> GuardrailVerdict:
    if data.get("action") != "GUARDRAIL_INTERVENED":
        return GuardrailVerdict([], None)
    outputs = [o.get("text") for o in data.get("outputs") or [] if isinstance(o, dict)]
    output = "".join(t for t in outputs if isinstance(t, str))
    kind = _kind(data.get("assessments") or [])
    reason = str(data.get("actionReason") or "the guardrail intervened")[:200]
    return GuardrailVerdict([Finding("bedrock", kind, 0, length, 1.0, reason)], output)


def _kind(assessments: list[Any]) -> str:
    """What the guardrail found first, e.g. ``content:HATE``, ``pii:EMAIL``, ``word``, ``topic:Finance``."""
    for assessment in assessments:
        if not isinstance(assessment, dict):
            continue
        for policy, (entries, field) in _POLICIES.items():
            for entry in (assessment.get(policy) or {}).get(entries) or []:
                short = policy.removesuffix("Policy").replace("sensitiveInformation", "pii")
                named = entry.get(field) if field and isinstance(entry, dict) else None
                return f"{short}:{named}" if named else short
    return "intervened"
