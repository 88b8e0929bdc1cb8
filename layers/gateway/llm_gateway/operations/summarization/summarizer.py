"""The summarizer: runs a summary, and falls back to an extractive one when every provider is down."""

from __future__ import annotations

import time

from llm_gateway.documents.tokens import estimate_text_tokens
from llm_gateway.errors import AllProvidersFailedError, GatewayError, InvalidRequestError, ProviderError
from llm_gateway.gateway import Gateway
from llm_gateway.interfaces import RequestContext
from llm_gateway.operations.extractive_summary import extractive_summary
from llm_gateway.operations.summarization.planning import DEFAULT_STUFF_MAX_TOKENS, CallTimer
from llm_gateway.operations.summarization.prompts import load_prompts
from llm_gateway.operations.summarization.request import SummaryRequest, SummaryResult
from llm_gateway.operations.summarization.run import SummaryRun

_PROCESS_TIMER = CallTimer()


class Summarizer:
    def __init__(
        self,
        gateway: Gateway,
        *,
        max_chunk_tokens: int = 3_000,
        stuff_max_tokens: int = DEFAULT_STUFF_MAX_TOKENS,
        concurrency: int = 8,
        prompt_version: str = "v1",
        timer: CallTimer | None = None,
    ) -> None:
        self.gateway = gateway
        self.max_chunk_tokens = max_chunk_tokens  # map_reduce/refine chunk size (quick calls)
        self.stuff_max_tokens = stuff_max_tokens  # auto's ceiling for one call (quality)
        self.concurrency = concurrency
        self.prompts = load_prompts(prompt_version)
        self.timer = timer or _PROCESS_TIMER

    async def summarize(
        self, text: str, request: SummaryRequest, ctx: RequestContext, *, plan_ahead: bool = False
    ) -> SummaryResult:
        """The summary; :class:`DeadlineExceededError` when it cannot finish in this invocation (resumable
        by default: what was done is cached; ``plan_ahead``: refused before a phase that would not fit)."""
        started = time.perf_counter()
        text = text.replace("\r\n", "\n").strip()
        if not text:
            raise InvalidRequestError("the document has no text to summarize", details={"param": "text"})
        run = SummaryRun(self, request, ctx, plan_ahead=plan_ahead)
        try:
            summary, strategy, chunks, rounds = await run.execute(text)
        except GatewayError as err:
            if request.allow_degraded and _is_outage(err):
                return self._degraded(text, request, run, err, started)
            err.attempts = run.ledger.attempts  # every attempt of the run, not only the failed call's
            raise
        ledger = run.ledger
        assert ledger.last is not None
        return SummaryResult(
            summary=summary.strip(),
            strategy=strategy,
            chunks=chunks,
            calls=ledger.calls,
            cached_calls=ledger.cached_calls,
            collapse_rounds=rounds,
            provider=ledger.last.provider,
            model=ledger.last.model,
            models=ledger.models,
            document_tokens=estimate_text_tokens(text),
            usage=ledger.usage,
            cost_usd=ledger.cost_usd,
            attempts=ledger.attempts,
            latency_ms=_ms_since(started),
            prompt_version=self.prompts.tag,
            metadata=request.metadata,
        )

    def _degraded(
        self, text: str, request: SummaryRequest, run: SummaryRun, err: GatewayError, started: float
    ) -> SummaryResult:
        summary = extractive_summary(
            text,
            max_sentences=request.length.sentences,
            max_words=request.length.words,
            focus=request.focus,
            style=request.style,
        )
        return SummaryResult(
            summary=summary,
            strategy="extractive",
            degraded=True,
            degraded_reason=err.code,
            chunks=0,
            calls=run.ledger.calls,
            provider=None,
            model=None,
            document_tokens=estimate_text_tokens(text),
            usage=run.ledger.usage,
            cost_usd=run.ledger.cost_usd,
            attempts=run.ledger.attempts,
            latency_ms=_ms_since(started),
            prompt_version=self.prompts.tag,
            metadata=request.metadata,
        )


def _is_outage(err: GatewayError) -> bool:
    """Every provider failed (or the one asked for is down): the extractive fallback may stand in."""
    return isinstance(err, AllProvidersFailedError) or (isinstance(err, ProviderError) and err.retryable)


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 3)
