"""The guardrail pipeline: the request's input checked before the cache and the provider, the answer
checked after, each check in the mode its policy gives it.

``Gateway.complete`` and ``Gateway.open_stream`` call :func:`screen` first; it returns a
:class:`Screening` whose ``request`` is what goes on (to the cache key, the provider, the ledger):
redacted where a check redacts, so personal data never reaches them. A ``block`` finding on the input is
a 400 ``guardrail_blocked`` (and a ``blocked`` ledger record), before any provider call. The answer goes
through ``Screening.checked`` (block: a 422 ``guardrail_blocked`` with ``stage: output``; redact; monitor)
before it is cached, then ``Screening.restored`` puts the request's own values back into the answer's
placeholders when the policy restores them. Streams: ``Screening.stream`` (guardrails/stream.py).

Checks never see roles except here: on the input, injection screening skips system and assistant turns
(the deployment's own prompt and the model's earlier answers); every other check reads every turn.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, NoReturn

from llm_gateway.errors import GuardrailBlockedError, OutputBlockedError
from llm_gateway.guardrails import policy as policies
from llm_gateway.guardrails.findings import Check, Finding, Mode
from llm_gateway.guardrails.policy import GuardrailPolicy, Stage
from llm_gateway.guardrails.redaction import Vault, redact, restore_json
from llm_gateway.guardrails.request import Verdicts
from llm_gateway.guardrails.texts import TextMap, map_message, map_result, message_texts
from llm_gateway.models import Attempt, CacheControl, CompletionRequest, CompletionResult, Message
from llm_gateway.observability import metrics as operator_metrics

if TYPE_CHECKING:
    from llm_gateway.gateway import Gateway
    from llm_gateway.guardrails.bedrock import BedrockGuardrail, Source
    from llm_gateway.interfaces import RequestContext
    from llm_gateway.streaming.protocol import CompletionStream

log = logging.getLogger("llm_gateway.guardrails")
CALLER_ROLES = frozenset({"user", "tool"})  # what injection screening and Bedrock's INPUT read


class GuardrailPipeline:
    """The checks a deployment has, and its default settings (``GATEWAY_GUARDRAILS``)."""

    def __init__(
        self,
        checks: Mapping[str, Check],
        *,
        default: policies.Settings | None = None,
        bedrock: BedrockGuardrail | None = None,
    ) -> None:
        self.checks = dict(checks)
        self.default = dict(default or {})
        self.bedrock = bedrock

    def policy_for(self, ctx: RequestContext) -> GuardrailPolicy:
        """The edge's resolution; for a job, the one its submission resolved (its ``guardrails`` tag);
        else the deployment's default."""
        request = ctx.guardrails
        if request is not None:
            return request.policy
        if (resolved := ctx.tags.get(policies.JOB_TAG)) is not None:
            return policies.policy_from(policies.parse(resolved, param=policies.JOB_TAG))
        return policies.policy_from(self.default)

    def has(self, check: str) -> bool:
        return check in self.checks or (check == "bedrock" and self.bedrock is not None)


async def screen(gateway: Gateway, request: CompletionRequest, ctx: RequestContext) -> Screening:
    """The request's input through the pipeline (a pass-through when the gateway has none)."""
    pipeline = gateway.guardrails
    if pipeline is None:
        return Screening(None, GuardrailPolicy(), ctx, request)
    found = ctx.guardrails
    # Verdicts are counted per call (a summary of ten chunks counts ten): jobs and uploads, which have no
    # edge resolution, count them as the edge's requests do.
    verdicts = Verdicts(found.verdicts.observe if found is not None else operator_metrics.guardrail_verdict)
    screening = Screening(pipeline, pipeline.policy_for(ctx), ctx, request, verdicts)
    try:
        await screening.check_input()
    except GuardrailBlockedError as err:
        attempt = Attempt(
            provider="guardrails",
            model=f"{err.details['check']}/{err.details['kind']}",
            outcome="blocked",
            error_class=type(err).__name__,
            error_code=err.code,
            status_code=err.http_status,
        )
        await gateway.account(ctx, attempt, [], ok=None)  # the ledger; no provider, no breaker
        err.attempts = [attempt]
        raise
    return screening


async def screen_inputs(gateway: Gateway, texts: list[str], ctx: RequestContext) -> list[str]:
    """Texts that are all input (embeddings): each screened as a user turn; the (redacted) texts back."""
    if gateway.guardrails is None:
        return texts
    turns = [Message.model_construct(role="user", content=text, tool_calls=None, tool_call_id=None) for text in texts]
    screening = await screen(gateway, CompletionRequest.model_construct(messages=turns), ctx)
    return [message.content if isinstance(message.content, str) else "" for message in screening.request.messages]


class Screening:
    """One request's pass through the pipeline: its (redacted) request, its placeholders, its verdicts."""

    def __init__(
        self,
        pipeline: GuardrailPipeline | None,
        policy: GuardrailPolicy,
        ctx: RequestContext,
        request: CompletionRequest,
        verdicts: Verdicts | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.policy = policy
        self.ctx = ctx
        self.request = request
        self.vault = Vault()
        self.verdicts = verdicts if verdicts is not None else Verdicts()

    def runs(self, stage: Stage) -> list[tuple[str, Mode]]:
        if self.pipeline is None:
            return []
        return [(check, mode) for check, mode in self.policy.checks(stage) if self.pipeline.has(check)]

    def _bedrock_mode(self, stage: Stage) -> Mode | None:
        return next((mode for check, mode in self.runs(stage) if check == "bedrock"), None)

    # --- input ------------------------------------------------------------------------------------

    async def check_input(self) -> None:
        local = [(c, m) for c, m in self.runs("input") if c != "bedrock"]
        if local:
            for message in self.request.messages:
                for text in message_texts(message):
                    self.vault.reserve_literals(text)
            blocked: list[Finding] = []
            scan = self._scanner(local, "input", blocked)
            messages = [map_message(m, scan) for m in self.request.messages]
            self._finish_stage(local, "input", blocked)
            self.request = self.request.model_copy(update={"messages": messages})
        if (mode := self._bedrock_mode("input")) is not None:
            await self._bedrock_input(mode)

    async def _bedrock_input(self, mode: Mode) -> None:
        texts = [t for m in self.request.messages if m.role in CALLER_ROLES for t in message_texts(m)]
        replaced = await self._bedrock(texts, "INPUT", mode, "input")
        if replaced:
            messages = [
                map_message(m, lambda t, role: replaced.get(t, t) if role in CALLER_ROLES else t)
                for m in self.request.messages
            ]
            self.request = self.request.model_copy(update={"messages": messages})

    # --- output -----------------------------------------------------------------------------------

    async def checked(self, result: CompletionResult) -> CompletionResult:
        """The answer through the output checks: a 422 when one blocks, redacted where one redacts."""
        local = [(c, m) for c, m in self.runs("output") if c != "bedrock"]
        if local:
            blocked: list[Finding] = []
            result = map_result(result, self._scanner(local, "output", blocked))
            self._finish_stage(local, "output", blocked)
        if (mode := self._bedrock_mode("output")) is not None:
            texts = [result.content, *(c.content for c in result.alternatives)]
            replaced = await self._bedrock(texts, "OUTPUT", mode, "output")
            if replaced:
                result = map_result(result, lambda t, _: replaced.get(t, t), arguments=False)
        return result

    def restored(self, result: CompletionResult) -> CompletionResult:
        """The request's own values back in the answer's placeholders (when the policy restores)."""
        if not self.policy.restore or not self.vault:
            return result
        # restore_json: a JSON answer (structured output, extraction) stays valid JSON once restored.
        return map_result(result, lambda t, _: restore_json(t, self.vault), arguments=False, restore_args=self.vault)

    async def answer(self, result: CompletionResult) -> CompletionResult:
        return self.restored(await self.checked(result))

    def stream_request(self) -> CompletionRequest:
        """The request a stream is opened with. A stream fills the cache as its provider ends it, before
        this screening's output checks ran: with a check that may change or stop the answer, the stream
        reads the cache but does not fill it (a buffered answer fills it after its checks)."""
        if not any(mode != "monitor" for _, mode in self.runs("output")):
            return self.request
        control = self.request.cache.model_copy(update={"no_store": True}) if self.request.cache else None
        return self.request.model_copy(update={"cache": control or CacheControl(no_store=True)})

    def stream(self, stream: CompletionStream) -> CompletionStream:
        if not self.runs("output") and not (self.policy.restore and self.vault):
            return stream
        from llm_gateway.guardrails.stream import GuardedStream

        return GuardedStream(stream, self)

    # --- the work ---------------------------------------------------------------------------------

    def _scanner(self, runs: list[tuple[str, Mode]], stage: Stage, blocked: list[Finding]) -> TextMap:
        """A text map that runs ``runs`` on each text: block findings collected in ``blocked``, redact
        findings replaced, monitor findings counted (in ``self.verdicts``)."""
        assert self.pipeline is not None
        checks = self.pipeline.checks

        def scan(text: str, role: str) -> str:
            if not text:
                return text
            to_redact: list[Finding] = []
            for check, mode in runs:
                if check == "injection" and stage == "input" and role not in CALLER_ROLES:
                    continue
                findings = checks[check].scan(text)
                if findings:
                    self.verdicts.found(check, stage, mode, findings)
                    (blocked if mode == "block" else to_redact if mode == "redact" else []).extend(findings)
            return redact(text, to_redact, self.vault, restorable=stage == "input") if to_redact else text

        return scan

    def _finish_stage(self, runs: list[tuple[str, Mode]], stage: Stage, blocked: list[Finding]) -> None:
        for check, mode in runs:
            self.verdicts.settle(check, stage, mode)
        if blocked:
            first = min(blocked, key=lambda f: policies.CHECKS.index(f.check) if f.check in policies.CHECKS else 9)
            self.block(first.check, first.kind, stage, first.reason)

    async def _bedrock(self, texts: list[str], source: Source, mode: Mode, stage: Stage) -> dict[str, str]:
        """Bedrock's verdict on each text: blocks, or the replacements to make (redact), or nothing."""
        assert self.pipeline is not None and self.pipeline.bedrock is not None
        started = time.perf_counter()
        verdicts = await self.pipeline.bedrock.scan_all(texts, source, self.ctx.deadline.remaining())
        log.info("bedrock guardrail", extra={"stage": stage, "ms": round((time.perf_counter() - started) * 1000, 1)})
        replaced: dict[str, str] = {}
        for text, verdict in zip(texts, verdicts, strict=True):
            if verdict.findings:
                self.verdicts.found("bedrock", stage, mode, verdict.findings)
                if mode == "redact" and verdict.output is not None:
                    replaced[text] = verdict.output
        self.verdicts.settle("bedrock", stage, mode)
        if mode == "block" and (hit := next((v for v in verdicts if v.findings), None)) is not None:
            self.block("bedrock", hit.findings[0].kind, stage, hit.findings[0].reason)
        return replaced

    def block(self, check: str, kind: str, stage: Stage, reason: str) -> NoReturn:
        """Raise the stage's ``guardrail_blocked`` error, naming the check and the kind, never the text."""
        details = {"check": check, "kind": kind, "stage": stage}
        log.info("guardrail blocked", extra={**details, "tenant": self.ctx.tenant})
        error = GuardrailBlockedError if stage == "input" else OutputBlockedError
        what = "request" if stage == "input" else "answer"
        because = f": {reason}" if reason else ""
        raise error(f"the {what} was blocked by the {check} guardrail ({kind}){because}", details=details)
