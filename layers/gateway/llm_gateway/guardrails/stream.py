"""Output guardrails on a streamed answer: checked in windows as it streams, the last ``HOLD`` characters
held back until more text (or the end) shows they are clean.

Only ``block`` and ``redact`` checks hold text back (``monitor`` ones read the whole answer at the end,
and restoring holds back at most an unfinished placeholder). Why windows: the caller keeps the stream's
point (text as it is generated) and pays at most ``HOLD`` characters of delay; every local check's
finding is shorter than ``HOLD`` (an email, a card, an IBAN, a key, a deny-listed term), so it is whole in
the text scanned before any of its characters is released, and a cut never falls inside one. A ``block``
finding ends the stream with the edge's error event (a ``guardrail_blocked`` error with ``stage:
output``) before the text that held it is sent; ``redact`` replaces it in the text sent. Placeholders the
request's input got are restored in what is released, a placeholder split across two deltas included
(the restorer holds an unfinished one back).

Two things wait for the end instead: Amazon Bedrock Guardrails on the output (one network call on the
whole answer: with it on, the text is released when the answer is complete), and, when a check may
change or stop them or placeholders are restored, tool-call arguments (released whole, checked and
restored, just before the final event: a call is usable only whole).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from llm_gateway.guardrails.findings import Finding
from llm_gateway.guardrails.redaction import StreamRestorer, redact
from llm_gateway.streaming.events import GatewayEvent, StreamDone, TextDelta, ToolCallDelta

if TYPE_CHECKING:
    from llm_gateway.guardrails.pipeline import Screening
    from llm_gateway.streaming.protocol import CompletionStream

HOLD = 96  # characters held back: longer than any local finding
STEP = 32  # new characters that trigger the next window's scan


class GuardedStream:
    """A ``CompletionStream`` whose text and final result went through a request's output guardrails."""

    def __init__(self, inner: CompletionStream, screening: Screening) -> None:
        self.id, self.created = inner.id, inner.created
        self.provider, self.model, self.cached = inner.provider, inner.model, inner.cached
        self._inner = inner
        self._screening = screening
        runs = screening.runs("output")
        # Only checks that change or stop the text need a window; monitor ones read the whole answer at
        # the end (through Screening.checked), so a monitored stream is released as it comes.
        self._local = [(check, mode) for check, mode in runs if check != "bedrock" and mode != "monitor"]
        self._whole = any(check == "bedrock" for check, _ in runs)  # released at the end only
        json_answer = screening.request.response_format is not None
        self._restorer = StreamRestorer(screening.vault, json_answer=json_answer) if screening.policy.restore else None
        self._raw = ""  # the model's text so far
        self._released = 0  # how much of it was released
        self._redacted: list[str] = []  # what was released, redacted, before restoring
        self._sent: list[str] = []  # what the caller got
        self._calls: dict[int, list[ToolCallDelta]] = {}
        self._hold_calls = bool(self._local) or self._whole or self._restorer is not None

    def __aiter__(self) -> AsyncIterator[GatewayEvent]:
        return self._iterate()

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def _iterate(self) -> AsyncIterator[GatewayEvent]:
        try:
            async for event in self._inner:
                if isinstance(event, TextDelta):
                    self._raw += event.text
                    if piece := self._release(final=False):
                        yield TextDelta(piece)
                elif isinstance(event, ToolCallDelta):
                    if not self._hold_calls:
                        yield event
                        continue
                    self._calls.setdefault(event.index, []).append(event)
                else:
                    async for last in self._finish(event):
                        yield last
        finally:
            await self.aclose()

    async def _finish(self, done: StreamDone) -> AsyncIterator[GatewayEvent]:
        screening = self._screening
        if self._whole:
            final = screening.restored(await screening.checked(done.result))
            if final.content:
                yield TextDelta(final.content)
        else:
            if piece := self._release(final=True):
                yield TextDelta(piece)
            redacted = done.result.model_copy(update={"content": "".join(self._redacted)})
            final = screening.restored(await screening.checked(redacted))
            final = final.model_copy(update={"content": "".join(self._sent)})
        for index, call in enumerate((final.tool_calls or []) if self._hold_calls else []):
            first = self._calls.get(index, [ToolCallDelta(index)])[0]
            yield ToolCallDelta(index, first.id or call.id, first.name or call.function.name, call.function.arguments)
        yield StreamDone(final, usage_estimated=done.usage_estimated)

    def _release(self, *, final: bool) -> str:
        """The next clean piece of text (redacted, restored), or "" while it must wait."""
        text, start = self._raw, self._released
        if self._whole:
            return ""
        findings: list[Finding] = []
        if not self._local:
            cut = len(text)
        elif final or len(text) - start >= HOLD + STEP:
            findings, cut = self._scan(text, start, final)
        else:
            return ""
        segment = redact(text[start:cut], findings, self._screening.vault, restorable=False)
        self._released = cut
        self._redacted.append(segment)
        piece = segment if self._restorer is None else self._restorer.feed(segment)
        if final and self._restorer is not None:
            piece += self._restorer.flush()
        self._sent.append(piece)
        return piece

    def _scan(self, text: str, start: int, final: bool) -> tuple[list[Finding], int]:
        """The findings to redact in ``text[start:cut]`` (shifted to it) and the cut; a block raises."""
        screening = self._screening
        checks = screening.pipeline.checks if screening.pipeline is not None else {}
        window_start = max(0, start - HOLD)
        window = text[window_start:]
        cut = len(text) if final else len(text) - HOLD
        found: list[tuple[str, Finding]] = []
        for check, mode in self._local:
            for f in checks[check].scan(window):
                shifted = Finding(f.check, f.kind, f.start + window_start, f.end + window_start, f.score, f.reason)
                if shifted.end <= start:
                    continue  # released already
                if mode == "block":
                    screening.verdicts.found(check, "output", mode, [shifted])
                    for name, other in self._local:
                        screening.verdicts.settle(name, "output", other)
                    screening.block(check, shifted.kind, "output", shifted.reason)
                found.append((mode, shifted))
        for _, f in found:  # never cut inside a finding
            if f.start < cut < f.end:
                cut = f.start
        cut = max(cut, start)
        released = [(mode, f) for mode, f in found if f.start >= start and f.end <= cut]
        for check, mode in self._local:
            mine = [f for m, f in released if f.check == check]
            if mine:
                screening.verdicts.found(check, "output", mode, mine)
        to_redact = [
            Finding(f.check, f.kind, f.start - start, f.end - start, f.score, f.reason)
            for mode, f in released
            if mode == "redact"
        ]
        return to_redact, cut
