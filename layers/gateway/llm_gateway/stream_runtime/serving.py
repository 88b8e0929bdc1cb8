"""Whether the code running now serves an invocation of the streaming runtime loop.

The edge asks before it answers with a stream: under the managed runtime (a buffered function, a direct
invocation) a streamed body could not be written. A context variable, not an environment variable: the
local harness runs buffered and streaming functions in one process, each invocation in its own thread.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

_serving: contextvars.ContextVar[bool] = contextvars.ContextVar("llm_gateway_streaming_runtime", default=False)


def active() -> bool:
    return _serving.get()


@contextlib.contextmanager
def streaming_invocation() -> Iterator[None]:
    """The handler call and the writing of its answer: the answer may stream."""
    token = _serving.set(True)
    try:
        yield
    finally:
        _serving.reset(token)
