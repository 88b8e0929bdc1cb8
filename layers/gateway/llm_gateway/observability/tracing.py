"""X-Ray tracing at the edge: Powertools Tracer around each handler, and the core's spans as subsegments.

Off when ``POWERTOOLS_TRACE_DISABLED`` is true (template parameter ``Tracing: Disabled``): then nothing
here imports the tracer or the X-Ray SDK, so a cold start does not pay for them. Powertools' Tracer also
turns itself off outside Lambda (the local harness, tests).

The core's spans (:mod:`llm_gateway.observability.spans`) run inside asyncio tasks that may overlap
(parallel choices, map-reduce summaries): the X-Ray SDK's own ``begin/end_subsegment`` keep one stack per
thread, which overlapping tasks would corrupt. So a span is attached to the entity open when it starts
(the handler's subsegment) and never pushed: overlapping spans stay siblings. A span with no handler
subsegment around it (a streamed body, after-response work) is sent on its own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar

from llm_gateway.observability import spans

Handler = TypeVar("Handler", bound=Callable[..., Any])
_tracer: Any = None


def enabled() -> bool:
    return os.environ.get("POWERTOOLS_TRACE_DISABLED", "false").strip().lower() not in {"true", "1"}


def trace_handler(handler: Handler) -> Handler:
    """``handler`` under Powertools' ``capture_lambda_handler`` when tracing is on; else ``handler`` as is.
    Never the response or an error's text in the trace: they may hold prompts."""
    if not enabled():
        return handler
    tracer = _powertools_tracer()
    if tracer.disabled:
        return handler
    traced: Handler = tracer.capture_lambda_handler(handler, capture_response=False, capture_error=False)
    return traced


def _powertools_tracer() -> Any:
    """One Tracer per process (it configures the SDK's global recorder), installing the core's spans."""
    global _tracer
    if _tracer is None:
        from aws_lambda_powertools import Tracer  # lazy: the X-Ray SDK only when tracing is on

        _tracer = Tracer(auto_patch=False)  # the spans below cover what matters; patching adds cold start
        if not _tracer.disabled:
            spans.install(xray_spans(_tracer.provider))
    return _tracer


def xray_spans(recorder: Any) -> spans.SpanFactory:
    from aws_xray_sdk.core.models.subsegment import Subsegment  # type: ignore[import-untyped]

    @contextmanager
    def open_span(name: str, annotations: Mapping[str, str]) -> Iterator[object]:
        segment = recorder.current_segment()
        if segment is None or not getattr(segment, "sampled", False):
            yield None
            return
        parent = recorder.current_subsegment() or segment
        sub = Subsegment(name, "local", segment)
        parent.add_subsegment(sub)
        for key, value in annotations.items():
            sub.put_annotation(key, value)
        try:
            yield sub
        except BaseException:
            sub.add_fault_flag()  # the flag only: an error's text may quote a prompt
            raise
        finally:
            sub.close()
            if parent is segment:  # no handler subsegment will carry it: send it now
                segment.remove_subsegment(sub)
                recorder.emitter.send_entity(sub)

    def factory(name: str, annotations: Mapping[str, str]) -> AbstractContextManager[object]:
        return open_span(name, annotations)

    return factory
