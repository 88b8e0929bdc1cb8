"""A streamed completion on the HTTP edge: open the gateway's stream, answer Server-Sent Events.

Before the first byte, a streamed request goes through what a non-streamed one does (key, model policy
and limits, validation, ``Prefer``) and ``Gateway.open_stream``: its failures are the usual JSON errors
with their status codes (or a job with ``Prefer: defer-on-failure``). Then the handler returns a
:class:`~llm_gateway.streaming.response.StreamingResponse` whose body drives the stream on this thread's
event loop, one encoded event at a time; the writer (the streaming runtime, the local bridge) must drive
it on the thread that ran the handler, where the stream's HTTP connection lives.

The bookkeeping of a stream (ledger records, budget settlement, cache fill) is queued on a deferral of
the stream's own and run when the body ends, after its last byte: the invocation's deferral has been
handed over by then (the handler returned before the body ran).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any, Protocol, cast

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.metrics import MetricUnit

from llm_gateway import after_response
from llm_gateway.errors import GatewayError
from llm_gateway.guardrails.logs import loggable_messages
from llm_gateway.http import answers, framing, key_checks, observe, prefer
from llm_gateway.http.sse import EventEncoder
from llm_gateway.observability import metrics as operator_metrics
from llm_gateway.runtime import run_sync
from llm_gateway.stream_runtime import serving
from llm_gateway.streaming.events import GatewayEvent, StreamDone, TextDelta, ToolCallDelta
from llm_gateway.streaming.protocol import CompletionStream
from llm_gateway.streaming.response import StreamingResponse
from llm_gateway.wiring import services

if TYPE_CHECKING:
    from llm_gateway.http.edge import HttpEdge
    from llm_gateway.interfaces import RequestContext
    from llm_gateway.keys import Admission
    from llm_gateway.models import CompletionRequest

EVENT_STREAM = "text/event-stream; charset=utf-8"
NOT_STREAMED_HERE = (
    "this route is not served by a streaming integration here (or the call did not come over HTTPS); "
    "send stream=false, or call the streaming route"
)

Encoders = Callable[[CompletionStream], EventEncoder]


def streaming_runtime() -> bool:
    """Whether this invocation runs under the streaming runtime loop (``llm_gateway.stream_runtime``)."""
    return serving.active()


class StreamingGateway(Protocol):
    async def open_stream(self, request: CompletionRequest, ctx: RequestContext) -> CompletionStream: ...


def serve(
    edge: HttpEdge,
    request: CompletionRequest,
    encoder: Encoders,
    *,
    job_input: Callable[[], dict[str, Any]],
    limits: tuple[list[str], int],
) -> Response[str]:
    """Answer ``request`` as a stream (or as a job with ``Prefer``); a 400 naming ``stream`` on a route
    that API Gateway does not stream."""
    started = time.monotonic()
    if not edge.streams_here():
        raise framing.invalid("stream", NOT_STREAMED_HERE)
    current = services()
    admission = edge.admit(*limits)
    if prefer.wants_async(edge.event, current):
        return edge.accept_job("completion", job_input(), prefer.RESPOND_ASYNC, None)
    ctx = edge.context("completion", streaming=True)
    bookkeeping = ctx.defer = after_response.Deferral(ctx.request_id, later=True)
    if ctx.log_prompts:
        edge.logger.info("prompt", messages=loggable_messages(request.messages))
    try:
        # Gateway.open_stream is the streaming contract (streaming/protocol.py); typed through it.
        gateway = cast(StreamingGateway, current.gateway())
        stream = run_sync(gateway.open_stream(request, ctx))
    except GatewayError as err:
        _hand_over(bookkeeping)
        if prefer.should_defer(edge.event, err, current):  # nothing was sent yet: a job can still take it
            return edge.accept_job("completion", job_input(), prefer.DEFER_ON_FAILURE, err)
        key_checks.settle_later(admission, spent_tokens(err), current)
        raise
    except BaseException:
        _hand_over(bookkeeping)
        key_checks.settle_later(admission, 0, current)
        raise
    run = _Run(edge, stream, admission, bookkeeping, started, ctx, observe.looks_up_cache(request))
    try:
        body = StreamBody(run.events(encoder(stream)), run.abandon)
        edge.metrics.add_metric(name="StreamsOpened", unit=MetricUnit.Count, value=1)
        headers = {
            "content-type": EVENT_STREAM,
            "cache-control": "no-cache",
            "x-request-id": edge.request_id(),
            "x-gateway-provider": stream.provider,
            "x-gateway-model": stream.model,
            "x-gateway-cache": "hit" if stream.cached else "miss",
        }
        return edge.respond_streaming(StreamingResponse(200, headers, body))
    except BaseException:
        run.abandon()  # nothing will read the stream: close it now
        raise


def spent_tokens(err: GatewayError) -> int:
    """Tokens the failed attempts used (a broken stream's attempt carries the tokens seen)."""
    return sum(a.usage.input_tokens + a.usage.output_tokens for a in err.attempts)


class _Run:
    """One stream being written: the events, their metrics, and the bookkeeping when it ends."""

    def __init__(
        self,
        edge: HttpEdge,
        stream: CompletionStream,
        admission: Admission,
        bookkeeping: after_response.Deferral,
        started: float,
        ctx: RequestContext,
        cacheable: bool,
    ) -> None:
        self.edge, self.stream = edge, stream
        self.admission, self.bookkeeping = admission, bookkeeping
        self.started, self.ctx, self.tenant, self.cacheable = started, ctx, ctx.tenant, cacheable
        self.tokens: int | None = None  # None: unknown (the caller left), the reservation stands
        self._ended = False

    def events(self, encoder: EventEncoder) -> Iterator[bytes]:
        first_token = True
        try:
            yield encoder.opening()
            events = self.stream.__aiter__()
            while (event := run_sync(_next(events))) is not None:
                if first_token and isinstance(event, TextDelta | ToolCallDelta):
                    first_token = False
                    ttft = _ms_since(self.started)
                    operator_metrics.first_token(self.stream.provider, self.stream.model, ttft, tenant=self.tenant)
                if isinstance(event, StreamDone):
                    self._done(event)
                if piece := encoder.event(event):
                    yield piece
            yield encoder.closing()
        except GatewayError as err:
            self.tokens = spent_tokens(err)
            self.edge.logger.warning("stream interrupted", code=err.code, attempts=len(err.attempts))
            self._metric("StreamsInterrupted", 1, MetricUnit.Count)
            observe.failure("completion", err, tenant=self.tenant, key_id=self.ctx.tags.get("key_id", ""))
            yield encoder.error(err)
        except Exception as exc:
            self.tokens = 0
            framing.log_unexpected(self.edge.logger, exc, "stream failed", log_prompts=_log_prompts())
            self._metric("StreamsInterrupted", 1, MetricUnit.Count)
            yield encoder.error(answers.internal_error())
        finally:
            self.abandon()

    def abandon(self) -> None:
        """Close the stream (the provider call stops when it is not over) and do the bookkeeping; once."""
        if self._ended:
            return
        self._ended = True
        try:
            run_sync(self.stream.aclose())
        except Exception as exc:  # the answer is over either way: the bookkeeping below must still run
            framing.log_unexpected(self.edge.logger, exc, "stream close failed", log_prompts=_log_prompts())
        finally:
            if self.tokens is None:  # the caller left before the end
                self.edge.logger.info("stream cancelled", tenant=self.tenant, provider=self.stream.provider)
                self._metric("StreamsCancelled", 1, MetricUnit.Count)
            self._metric("StreamDuration", _ms_since(self.started), MetricUnit.Milliseconds)
            tokens = self.admission.reserved_tokens if self.tokens is None else self.tokens
            key_checks.settle_later(self.admission, tokens, services())
            self.bookkeeping.flush()
            self.edge.metrics.flush_metrics()  # the handler's own flush ran before the body did

    def _done(self, done: StreamDone) -> None:
        result = done.result
        self.tokens = result.usage.input_tokens + result.usage.output_tokens
        observe.completion(
            self.edge.logger, self.edge.metrics, result, tenant=self.tenant, ctx=self.ctx, cacheable=self.cacheable
        )

    def _metric(self, name: str, value: float, unit: MetricUnit) -> None:
        self.edge.metrics.add_metric(name=name, unit=unit, value=value)


class StreamBody(Generator[bytes, None, None]):
    """The response body: the events' generator, and a clean-up that runs even when the writer closes
    the body before it ever started (a generator's ``finally`` only runs once it has started)."""

    def __init__(self, events: Iterator[bytes], abandon: Callable[[], None]) -> None:
        self._events = cast(Generator[bytes, None, None], events)
        self._abandon = abandon

    def send(self, value: None) -> bytes:
        return self._events.send(value)

    def throw(self, *args: Any) -> bytes:
        return self._events.throw(*args)

    def close(self) -> None:
        try:
            self._events.close()
        finally:
            self._abandon()  # a no-op when the events' own finally already ran


async def _next(events: Any) -> GatewayEvent | None:
    try:
        return cast(GatewayEvent, await events.__anext__())
    except StopAsyncIteration:
        return None


def _log_prompts() -> bool:
    return services().settings.log_prompts


def _ms_since(started: float) -> float:
    return round((time.monotonic() - started) * 1000.0, 1)


def _hand_over(own: after_response.Deferral) -> None:
    """Bookkeeping queued before the stream opened (the attempts that failed): the invocation's now."""
    invocation = after_response.current()
    work, own.pending = list(own.pending), []
    own.pending = [w for w in work if not invocation.defer(w)]
    own.flush()
