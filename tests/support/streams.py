"""Streaming providers and bookkeeping fakes for the routed stream's unit tests.

Providers play scripts: a list of events per call, where an exception is raised at its place and a
``Pause`` waits; the ledger, budget and breaker fakes are test_gateway's.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from llm_gateway.after_response import Deferral
from llm_gateway.catalog import default_catalog
from llm_gateway.interfaces import RequestContext
from llm_gateway.models import CompletionRequest, Usage
from llm_gateway.routing.deadline import Deadline
from llm_gateway.streaming.events import StreamEnd, TextDelta
from tests.unit.test_gateway import ScriptedProvider, make

CATALOG = default_catalog()
USAGE = Usage(input_tokens=200, output_tokens=30)


@dataclass
class Pause:
    seconds: float


def answer(*texts: str, usage: Usage | None = USAGE, finish_reason: str = "stop") -> list[object]:
    return [*(TextDelta(t) for t in texts), StreamEnd(finish_reason=finish_reason, usage=usage)]  # type: ignore[arg-type]


class StreamingProvider(ScriptedProvider):
    """A provider whose ``stream`` plays one script per call (the last script again when they run out)."""

    def __init__(self, name: str, *scripts: list[object]) -> None:
        super().__init__(name)
        self.scripts = list(scripts) or [answer(f"{name} ", "says hi")]
        self.stream_calls: list[dict[str, float]] = []
        self.closed_early = 0  # closed (aclose, cancellation) before the script ended
        self.open_streams = 0

    def stream(self, request, *, client, timeout_s, first_byte_timeout_s, idle_timeout_s):
        self.stream_calls.append(
            {"timeout_s": timeout_s, "first_byte_timeout_s": first_byte_timeout_s, "idle_timeout_s": idle_timeout_s}
        )
        script = self.scripts.pop(0) if len(self.scripts) > 1 else self.scripts[0]
        return self._play(script)

    async def _play(self, script):
        self.open_streams += 1
        try:
            for step in script:
                if isinstance(step, BaseException):
                    raise step
                if isinstance(step, Pause):
                    await asyncio.sleep(step.seconds)
                    continue
                yield step
        except (GeneratorExit, asyncio.CancelledError):
            self.closed_early += 1
            raise
        finally:
            self.open_streams -= 1


class Ledger:
    def __init__(self) -> None:
        self.attempts = []

    async def record(self, ctx, attempt):
        self.attempts.append(attempt)


class HeldWork(Deferral):
    """After-response work held until the test runs it (as the runtime does after the response)."""

    def __init__(self) -> None:
        super().__init__(later=True)
        self.held = []

    async def soon(self, work) -> None:
        self.held.append(work)

    async def run(self) -> None:
        while self.held:
            await self.held.pop(0)()


def build(providers, *, budget=None, breaker=None, cache=None, **kw):
    gateway = make(providers)
    gateway.usage = Ledger()
    gateway.budget, gateway.breaker, gateway.cache = budget, breaker, cache
    for name, value in kw.items():
        setattr(gateway, name, value)
    return gateway


def request(**body) -> CompletionRequest:
    body.setdefault("messages", [{"role": "user", "content": "hello"}])
    return CompletionRequest.model_validate(body)


def context(seconds: float = 30.0, defer: Deferral | None = None) -> RequestContext:
    ctx = RequestContext(tenant="t", request_id="r", deadline=Deadline(seconds))
    if defer is not None:
        ctx.defer = defer
    return ctx


async def drain(stream):
    return [event async for event in stream]


def stream_all(gateway, ctx=None, **body):
    """Open the stream and read it to its end: (the stream, its events)."""

    async def run():
        stream = await gateway.open_stream(request(**body), ctx or context())
        return stream, await drain(stream)

    return asyncio.run(run())


def texts(events) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))
