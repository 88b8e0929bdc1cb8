"""Trace spans for the core, with no tracing library: a no-op until the edge installs a span factory.

The core marks what is worth a subsegment (``with span("provider.call", Provider=...)`` or
``@traced("cache.lookup")``); :mod:`llm_gateway.observability.tracing` installs the X-Ray factory when the
function traces. Without one a span is a ``nullcontext``: no import, next to no cost.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")
SpanFactory = Callable[[str, Mapping[str, str]], AbstractContextManager[object]]

_factory: SpanFactory | None = None


def install(factory: SpanFactory | None) -> None:
    """Make every later span a real one (None: back to no-ops)."""
    global _factory
    _factory = factory


def span(name: str, **annotations: str) -> AbstractContextManager[object]:
    """A named span around a block; ``annotations`` are indexed (never prompt text, only names)."""
    factory = _factory
    return nullcontext() if factory is None else factory(name, annotations)


def traced(name: str) -> Callable[[Callable[P, Coroutine[Any, Any, T]]], Callable[P, Coroutine[Any, Any, T]]]:
    """The same around every call of an async function."""

    def decorate(function: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        @functools.wraps(function)
        async def run(*args: P.args, **kwargs: P.kwargs) -> T:
            with span(name):
                return await function(*args, **kwargs)

        return run

    return decorate
