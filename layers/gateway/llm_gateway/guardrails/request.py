"""What a request carries into the core about guardrails (``RequestContext.guardrails``): the policy the
edge resolved for it, and where its verdicts go (the edge's metrics).

A verdict is one per check, stage and model call: ``pass`` (nothing found), ``monitored``, ``redacted`` or
``blocked``. Findings are logged by check, kind and count, never with the text they matched.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from llm_gateway.guardrails.findings import Finding, Mode
from llm_gateway.guardrails.policy import GuardrailPolicy, Stage

log = logging.getLogger("llm_gateway.guardrails")
VERDICTS = {"monitor": "monitored", "redact": "redacted", "block": "blocked"}
Observer = Callable[[str, Stage, str], None]  # (check, stage, verdict)


class Verdicts:
    """One request's findings, counted per check and stage, and each stage's verdict reported once."""

    def __init__(self, observe: Observer | None = None) -> None:
        self.observe = observe
        self.found_kinds: dict[tuple[str, Stage], Counter[str]] = {}
        self.settled: dict[tuple[str, Stage], str] = {}

    def found(self, check: str, stage: Stage, mode: Mode, findings: Sequence[Finding]) -> None:
        kinds = self.found_kinds.setdefault((check, stage), Counter())
        kinds.update(f.kind for f in findings)
        log.info(
            "guardrail finding",
            extra={"check": check, "stage": stage, "mode": mode, "kinds": sorted({f.kind for f in findings}),
                   "count": len(findings), "score": max(f.score for f in findings)},
        )  # fmt: skip

    def settle(self, check: str, stage: Stage, mode: Mode) -> str:
        """The stage's verdict for ``check`` (reported the first time only: a stream settles once)."""
        key = (check, stage)
        if key in self.settled:
            return self.settled[key]
        verdict = VERDICTS[mode] if self.found_kinds.get(key) else "pass"
        self.settled[key] = verdict
        if self.observe is not None:
            try:
                self.observe(check, stage, verdict)
            except Exception as exc:  # a metric must never fail the request
                log.warning("guardrail verdict not recorded", extra={"error": type(exc).__name__})
        return verdict


@dataclass
class GuardrailRequest:
    """``RequestContext.guardrails``: set by the edge; without it the deployment's default applies."""

    policy: GuardrailPolicy
    verdicts: Verdicts = field(default_factory=Verdicts)
