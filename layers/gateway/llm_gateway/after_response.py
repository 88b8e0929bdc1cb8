"""Bookkeeping that may finish after the caller has its answer: ledger writes, budget settlement, cache fills.

A request waits on none of it. On Lambda, an *internal extension* (a thread registered with the Extensions
API during init) keeps the sandbox alive after the handler returns: Lambda sends the response as soon as the
runtime posts it, but does not freeze the sandbox, nor deliver the next event, until every extension has
called ``/event/next`` again. The extension thread calls it only once the work of that invocation is done,
so the work is as durable as it was inline (each piece keeps its own failure path: a usage write that fails
goes to the retry queue) and never overlaps the next invocation.

Modes (``GATEWAY_AFTER_RESPONSE``):

* ``inline``: the work runs before the handler returns (the default off Lambda, and what tests rely on);
* ``extension``: the Lambda internal extension above (the default when ``AWS_LAMBDA_RUNTIME_API`` is set);
* ``thread``: a background thread runs it (the local harness: the same latency profile without Lambda);
* ``runtime`` (installed by that loop, not read from the variable): our own Lambda runtime loop
  (``llm_gateway.stream_runtime``) runs it after it has posted the answer and before it asks for the next
  event, which holds the sandbox as the extension would, without one.
  The loop opens :func:`invocation`, which spans the writing of the answer: a streamed body defers work while
  it is consumed, after the handler has returned, and that work must neither be lost nor run early.

Usage: the handler is wrapped in :func:`handler` (or :func:`scope`), which opens one :class:`Deferral` per
invocation. The edge takes it with :func:`current` and passes it down in the request context; code with
deferrable work awaits ``ctx.defer.soon(factory)``, which queues it, or runs it at once (inline mode, or
:data:`RUN_NOW`: the retry worker and the jobs API never defer, so a job's usage records are written
within the job). Nothing below the edge reads this module's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

log = logging.getLogger("llm_gateway.after_response")

Mode = Literal["inline", "thread", "extension", "runtime"]
Work = Callable[[], Coroutine[Any, Any, None]]

EXTENSION_NAME = "llm-gateway-after-response"
API_VERSION = "2020-01-01"


@dataclass
class _Batch:
    request_id: str
    work: list[Work] = field(default_factory=list)


class _Runner:
    """Runs batches on one daemon thread, in order; ``extension`` subclasses it to pace Lambda."""

    def __init__(self) -> None:
        self._batches: queue.Queue[_Batch] = queue.Queue()
        self._idle = threading.Condition()
        self._in_flight = 0

    def start(self) -> None:
        threading.Thread(target=self._loop, name="after-response", daemon=True).start()

    def submit(self, batch: _Batch) -> None:
        with self._idle:
            self._in_flight += 1
        self._batches.put(batch)

    def wait_idle(self, timeout_s: float) -> bool:
        """True once every submitted batch has run (tests and the bench; Lambda never needs it)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout_s)

    def _loop(self) -> None:
        while True:
            self._run(self._batches.get())

    def _run(self, batch: _Batch) -> None:
        _run_batch(batch)
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()


class _Extension(_Runner):
    """The Lambda internal extension: registered during init, paces each invocation's end."""

    def __init__(self, runtime_api: str) -> None:
        super().__init__()
        import http.client  # only on Lambda: it costs a few ms of cold start

        host, _, port = runtime_api.partition(":")
        self._conn = http.client.HTTPConnection(host, int(port or 80), timeout=None)  # /next blocks by design
        self._id = ""

    def register(self) -> None:
        body = json.dumps({"events": ["INVOKE"]})  # internal extensions cannot register for SHUTDOWN
        headers = {"Lambda-Extension-Name": EXTENSION_NAME, "Content-Type": "application/json"}
        self._conn.request("POST", f"/{API_VERSION}/extension/register", body=body, headers=headers)
        response = self._conn.getresponse()
        payload = response.read()
        if response.status != 200:
            raise RuntimeError(f"extension register failed: HTTP {response.status} {payload[:200]!r}")
        self._id = response.getheader("Lambda-Extension-Identifier") or ""

    def _next_event(self) -> dict[str, Any]:
        self._conn.request(
            "GET", f"/{API_VERSION}/extension/event/next", headers={"Lambda-Extension-Identifier": self._id}
        )
        response = self._conn.getresponse()
        payload = response.read()
        if response.status != 200:
            raise RuntimeError(f"extension next failed: HTTP {response.status} {payload[:200]!r}")
        event: dict[str, Any] = json.loads(payload or b"{}")
        return event

    def _loop(self) -> None:
        while True:
            try:
                event = self._next_event()
            except Exception as exc:
                # Without /next Lambda would time the invocation out: run the work inline from now on.
                log.error("after-response extension stopped", extra={"error": type(exc).__name__})
                _fall_back_to_inline(self)
                super()._loop()  # run what is still queued, as a plain background thread
                return
            if event.get("eventType") != "INVOKE":
                continue
            self._finish_invocation(str(event.get("requestId") or ""), event.get("deadlineMs"))

    def _finish_invocation(self, request_id: str, deadline_ms: Any) -> None:
        """Run batches until this invocation's own has run (or its deadline passed), then return to /next."""
        deadline = float(deadline_ms) / 1000.0 if isinstance(deadline_ms, int | float) else time.time() + 900
        while True:
            try:
                batch = self._batches.get(timeout=max(0.0, deadline - time.time()))
            except queue.Empty:
                return  # the handler never finished (it timed out): Lambda resets the sandbox anyway
            self._run(batch)
            if not request_id or batch.request_id == request_id:
                return


def _run_batch(batch: _Batch) -> None:
    from llm_gateway.runtime import run_sync  # this thread's own event loop, kept for its lifetime

    for work in batch.work:
        try:
            run_sync(work())
        except Exception as exc:  # each piece has its own failure path; this is the last guard
            log.error("after-response work failed", extra={"error": type(exc).__name__})


_runner: _Runner | None = None
_mode: Mode = "inline"
_lock = threading.Lock()


def configured_mode(environ: Mapping[str, str] | None = None) -> Mode:
    env = os.environ if environ is None else environ
    value = (env.get("GATEWAY_AFTER_RESPONSE") or "").strip().lower()
    if value in ("inline", "thread", "extension"):
        if value == "extension" and not env.get("AWS_LAMBDA_RUNTIME_API"):
            return "inline"  # nothing to register with
        return value  # type: ignore[return-value]
    if value not in ("", "auto"):
        log.warning("unknown GATEWAY_AFTER_RESPONSE %r: running bookkeeping inline", value)
        return "inline"
    return "extension" if env.get("AWS_LAMBDA_RUNTIME_API") else "inline"


def install(mode: Mode | None = None) -> Mode:
    """Set the mode once per process. Call it at handler-module import: Lambda accepts extension
    registration only during init. Off Lambda it starts at most a thread; it never fails the import."""
    global _runner, _mode
    with _lock:
        if _runner is not None or (mode is None and _mode != "inline"):
            return _mode
        wanted = mode or configured_mode()
        try:
            if wanted == "extension":
                extension = _Extension(os.environ["AWS_LAMBDA_RUNTIME_API"])
                extension.register()
                _runner = extension
            elif wanted == "thread":
                _runner = _Runner()
            if _runner is not None:
                _runner.start()
            _mode = wanted
        except Exception as exc:
            log.error("after-response %s mode unavailable, running inline", wanted, extra={"error": repr(exc)})
            _runner, _mode = None, "inline"
        return _mode


def _fall_back_to_inline(runner: _Runner) -> None:
    global _mode
    with _lock:
        if _runner is runner:  # not a runner that tests already replaced
            _mode = "inline"


class Deferral:
    """The after-response work of one invocation. ``soon`` queues a coroutine factory (or runs it now),
    ``flush`` runs what is queued so far on the calling thread."""

    def __init__(self, request_id: str = "", *, later: bool, spans_response: bool = False) -> None:
        self.request_id = request_id
        self._later = later
        self.spans_response = spans_response  # opened by a runtime loop around the answer's writing
        self.pending: list[Work] = []

    def defer(self, work: Work) -> bool:
        """Queue ``work`` for after the response. False: not deferred (inline mode, or RUN_NOW): run it now."""
        if not self._later or _mode == "inline":
            return False
        self.pending.append(work)
        return True

    async def soon(self, work: Work) -> None:
        """Run ``work`` after the response when this invocation may defer, else now."""
        if not self.defer(work):
            await work()

    def flush(self) -> None:
        """Run now what this invocation has deferred so far. Called before a hand-off to the job queue: a
        job may start at once in another sandbox, and must find this invocation's cache fills (finished
        parts of a long summary) and ledger records already written."""
        if not self.pending:
            return
        try:
            asyncio.get_running_loop()
            return  # inside the event loop (never the case at a hand-off): it cannot block on it, keep the queue
        except RuntimeError:
            pass
        work = list(self.pending)
        self.pending.clear()
        _run_batch(_Batch("", work))


RUN_NOW = Deferral(later=False)  # no invocation scope: everything runs at once, within the caller
_current: contextvars.ContextVar[Deferral] = contextvars.ContextVar("after_response_deferral", default=RUN_NOW)


def current() -> Deferral:
    """The running invocation's deferral (:data:`RUN_NOW` outside :func:`scope`). For the edge only: it
    passes the deferral down in the request context."""
    return _current.get()


@contextlib.contextmanager
def scope(request_id: str = "") -> Iterator[Deferral]:
    """One invocation: work deferred inside it is handed over when it ends, whatever the outcome. Inside
    :func:`invocation` (a runtime loop), it joins that one: the work is handed over once the answer is written."""
    outer = _current.get()
    if outer.spans_response:
        yield outer
        return
    with _opened(Deferral(request_id, later=True)) as deferral:
        yield deferral


@contextlib.contextmanager
def invocation(request_id: str = "") -> Iterator[Deferral]:
    """One invocation as a runtime loop serves it: the handler call *and* the writing of its answer (a
    streamed body is consumed here, after the handler returned). In ``runtime`` mode its work runs on this
    thread when it ends, which the loop does after posting the answer and before its next ``/next``."""
    with _opened(Deferral(request_id, later=True, spans_response=True)) as deferral:
        yield deferral


@contextlib.contextmanager
def _opened(deferral: Deferral) -> Iterator[Deferral]:
    token = _current.set(deferral)
    request_id = deferral.request_id
    try:
        yield deferral
    finally:
        _current.reset(token)
        pending = deferral.pending
        runner = _runner
        if runner is not None and _mode == "extension":
            runner.submit(_Batch(request_id, pending))  # even empty: it ends the extension's invocation
        elif runner is not None and _mode == "thread":
            if pending:
                runner.submit(_Batch(request_id, pending))
        elif pending:  # runtime mode (the answer is out), or the mode fell back to inline mid-invocation
            _run_batch(_Batch(request_id, pending))


def handler(fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """Decorator for a Lambda handler: everything it defers is handed over when it returns or raises.

    Installs the mode at decoration time (module import, i.e. Lambda's init phase). In extension mode
    every invocation of the function must pass through a wrapped handler, or the extension would hold
    the sandbox until the invocation's deadline.
    """
    install()

    @functools.wraps(fn)
    def wrapped(event: Any, context: Any) -> Any:
        with scope(str(getattr(context, "aws_request_id", "") or "")):
            return fn(event, context)

    return wrapped


def wait_idle(timeout_s: float = 10.0) -> bool:
    """Block until all handed-over work has run (tests, the local harness and the bench)."""
    runner = _runner
    return True if runner is None else runner.wait_idle(timeout_s)


def _reset_for_tests() -> None:
    """Forget the mode (the running thread, if any, stays idle; it is a daemon)."""
    global _runner, _mode
    with _lock:
        _runner, _mode = None, "inline"
