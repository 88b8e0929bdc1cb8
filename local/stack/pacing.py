"""After-response pacing: a function's next invocation starts once its earlier ones' deferred work is done.

On Lambda the gateway's after-response work (cache fills, ledger writes, budget settlement) runs in an
internal extension that holds the sandbox: Lambda does not hand that sandbox its next event until the
work is done, so a sequential repeat of a deterministic request finds the cache already filled. Locally
the work runs on the layer's background thread (``GATEWAY_AFTER_RESPONSE=thread``), which nothing used
to wait for: a repeat sent a few milliseconds after the first answer made a second provider call.

The harness models the hold per function: when an invocation ends, it queues a marker behind the work
that invocation deferred (the layer runs deferred work in order, on one thread); the function's next
invocation waits for the markers of the invocations that ended before it started. Invocations that
overlap do not wait for each other, as concurrent sandboxes would not. Only the layer's public
``scope``/``defer`` API is used; in inline mode nothing is deferred and nothing waits.
"""

from __future__ import annotations

import sys
import threading
import time

from local.stack.settings import log

AFTER_RESPONSE_MODULE = "llm_gateway.after_response"


class AfterResponsePacing:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, list[threading.Event]] = {}  # function -> markers not yet reached

    def wait_for_earlier(self, function: str, timeout_s: float) -> None:
        """Block until the work deferred by ``function``'s finished invocations has run. Bounded by the
        function's timeout: Lambda's extension cannot hold a sandbox past the invocation's deadline."""
        with self._lock:
            markers = list(self._pending.get(function, ()))
        if not markers:
            return
        deadline = time.monotonic() + timeout_s
        for marker in markers:
            if not marker.wait(max(0.0, deadline - time.monotonic())):
                log.warning("%s: after-response work still running after %.0f s; invoking anyway", function, timeout_s)
                break
        with self._lock:
            self._pending[function] = [m for m in self._pending.get(function, ()) if not m.is_set()]

    def invocation_ended(self, function: str) -> None:
        """Queue a marker behind what this invocation deferred (nothing to do when nothing is deferred)."""
        module = sys.modules.get(AFTER_RESPONSE_MODULE)
        if module is None:
            return  # no handler has loaded the layer: nothing can have been deferred
        reached = threading.Event()

        async def mark() -> None:
            reached.set()

        with module.scope(f"local-pacing-{function}") as deferral:  # main's API: the scope yields a Deferral
            deferred = deferral.defer(mark)
        if deferred:
            with self._lock:
                self._pending.setdefault(function, []).append(reached)
