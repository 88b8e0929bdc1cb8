"""One request per thread in Powertools' event handler, as one invocation per sandbox on Lambda.

Powertools keeps the request being resolved on its router class (``BaseRouter.current_event`` and
``lambda_context``, assigned on the class in ``resolve``) and the request's context dict on the resolver.
That is right in a Lambda sandbox, which runs one invocation at a time. The local stack runs concurrent
invocations of a function on threads of one process: without this, a handler that reads its event after a
slow provider call reads whichever request was resolved last (its ``x-request-id``, its path, its key).

Here those three live per thread: data descriptors on ``BaseRouter`` for reads and instance assignments, and
the module's name ``BaseRouter`` bound to a stand-in whose attribute assignments land in the same place.
Process-wide and idempotent; local only (the layer never imports this).
"""

from __future__ import annotations

import threading
from typing import Any

_state = threading.local()
_applied = False
_lock = threading.Lock()
PER_REQUEST = ("current_event", "lambda_context")


class _PerThread:
    """A request attribute of every router: one value per thread."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        return getattr(_state, self.name, None)

    def __set__(self, obj: object, value: Any) -> None:
        setattr(_state, self.name, value)


class _PerThreadContext:
    """``resolver.context``: a dict per resolver and thread (Powertools clears it after every request)."""

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        if obj is None:
            return self
        contexts: dict[int, dict[str, Any]] = _state.__dict__.setdefault("contexts", {})
        return contexts.setdefault(id(obj), {})

    def __set__(self, obj: object, value: dict[str, Any]) -> None:
        _state.__dict__.setdefault("contexts", {})[id(obj)] = value


class _RouterClass:
    """What ``BaseRouter`` names inside Powertools' module: class-level request attributes go per thread,
    everything else to the real class."""

    def __init__(self, real: type) -> None:
        object.__setattr__(self, "_real", real)

    def __getattr__(self, name: str) -> Any:
        if name in PER_REQUEST:
            return getattr(_state, name, None)
        return getattr(object.__getattribute__(self, "_real"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in PER_REQUEST:
            setattr(_state, name, value)
        else:
            setattr(object.__getattribute__(self, "_real"), name, value)


def apply() -> None:
    global _applied
    with _lock:
        if _applied:
            return
        from aws_lambda_powertools.event_handler import api_gateway

        real = api_gateway.BaseRouter
        for name in PER_REQUEST:
            setattr(real, name, _PerThread(name))
        real.context = _PerThreadContext()  # type: ignore[assignment]
        api_gateway.BaseRouter = _RouterClass(real)  # type: ignore[misc,assignment]
        _applied = True
