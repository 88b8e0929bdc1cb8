"""The routed stream's bookkeeping: usage (reported or estimated), budget reservations, the cache (the
real CompletionCache over an in-memory backend), the ledger's counters, the shared breaker's probes."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from llm_gateway.accounting.cache import CompletionCache
from llm_gateway.documents.tokens import estimate_message_tokens, estimate_text_tokens
from llm_gateway.errors import (
    ProviderConnectionError,
    ProviderUnavailableError,
    StreamInterruptedError,
)
from llm_gateway.models import Message, Usage
from llm_gateway.streaming.events import StreamDone, StreamEnd, TextDelta, ToolCallDelta
from tests.support.streams import (
    CATALOG,
    USAGE,
    HeldWork,
    StreamingProvider,
    answer,
    build,
    context,
    drain,
    request,
    stream_all,
    texts,
)
from tests.unit.test_cache_policy import MemoryBackend
from tests.unit.test_gateway import RecordingBudget

# --------------------------------------------------------------------------- usage and budgets


def test_usage_is_estimated_when_the_provider_sends_none():
    openai = StreamingProvider("openai", answer("a reply of some words", usage=None))
    gateway = build({"openai": openai})
    _, events = stream_all(gateway, model="gpt-4o-mini")
    done = events[-1]
    assert done.usage_estimated
    assert done.result.usage == Usage(
        input_tokens=estimate_message_tokens([Message(role="user", content="hello")]),
        output_tokens=estimate_text_tokens("a reply of some words"),
    )
    assert done.result.cost_usd == CATALOG.get("gpt-4o-mini").cost(done.result.usage) > 0


def test_each_model_reserves_before_its_call_and_the_stream_settles_after_the_response():
    openai = StreamingProvider("openai", [ProviderUnavailableError("503")])
    anthropic = StreamingProvider("anthropic")
    budget, held = RecordingBudget(), HeldWork()
    gateway = build({"openai": openai, "anthropic": anthropic}, budget=budget)
    ctx = context(defer=held)
    _, events = stream_all(gateway, ctx, model="gpt-4o-mini", fallback=["claude-3-5-haiku-latest"])
    assert len(budget.reserved) == 2
    assert budget.settled == [0.0]  # the failed model's room back at once, for the fallback
    asyncio.run(held.run())
    assert budget.settled == [0.0, events[-1].result.cost_usd]


# --------------------------------------------------------------------------- cache


def cached_gateway(*providers):
    backend = MemoryBackend()
    cache = CompletionCache(backend, catalog_version="test")
    return build({p.name: p for p in providers}, cache=cache), backend


def test_a_completed_stream_fills_the_cache_that_a_buffered_call_then_reads():
    openai = StreamingProvider("openai", answer("cached ", "answer"))
    gateway, backend = cached_gateway(openai)
    stream_all(gateway, model="gpt-4o-mini", temperature=0)
    assert len(backend.items) == 1
    hit = asyncio.run(gateway.complete(request(model="gpt-4o-mini", temperature=0), context()))
    assert hit.cached and hit.content == "cached answer" and openai.calls == []


def test_a_cache_hit_is_replayed_as_a_stream():
    long_text = "word " * 200
    openai = StreamingProvider("openai")
    openai.outcomes = []
    gateway, backend = cached_gateway(openai)
    # A buffered answer fills the cache (ScriptedProvider.complete), a stream of the same request reads it.
    first = asyncio.run(gateway.complete(request(model="gpt-4o-mini", temperature=0), context()))
    assert not first.cached and len(backend.items) == 1
    stream, events = stream_all(gateway, model="gpt-4o-mini", temperature=0)
    assert stream.cached and openai.stream_calls == []
    assert texts(events) == first.content and events[-1].result.cached
    # A long cached answer comes in several pieces.
    backend.items.clear()
    openai.scripts = [answer(long_text)]
    stream_all(gateway, model="gpt-4o-mini", temperature=0, max_tokens=500)
    stream, events = stream_all(gateway, model="gpt-4o-mini", temperature=0, max_tokens=500)
    assert stream.cached and len(openai.stream_calls) == 1
    pieces = [e for e in events if isinstance(e, TextDelta)]
    assert len(pieces) > 1 and texts(events) == long_text
    assert isinstance(events[-1], StreamDone) and events[-1].result.latency_ms >= 0


def test_cached_tool_calls_are_replayed_as_deltas():
    script = [
        ToolCallDelta(index=0, id="call_a", name="lookup", arguments='{"q": "x"}'),
        StreamEnd("tool_calls", USAGE),
    ]
    gateway, _ = cached_gateway(StreamingProvider("openai", script))
    stream_all(gateway, model="gpt-4o-mini", temperature=0)
    stream, events = stream_all(gateway, model="gpt-4o-mini", temperature=0)
    assert stream.cached
    assert events[:-1] == [
        ToolCallDelta(index=0, id="call_a", name="lookup"),
        ToolCallDelta(index=0, arguments='{"q": "x"}'),
    ]
    assert events[-1].result.tool_calls[0].function.arguments == '{"q": "x"}'


def test_truncated_and_cancelled_streams_never_fill_the_cache():
    broken = StreamingProvider("openai", [TextDelta("half"), ProviderConnectionError("reset")])
    gateway, backend = cached_gateway(broken)
    with pytest.raises(StreamInterruptedError):
        stream_all(gateway, model="gpt-4o-mini", temperature=0)
    assert backend.items == {}

    async def leave_early():
        stream = await gateway.open_stream(request(model="gpt-4o-mini", temperature=0), context())
        await anext(stream)
        await stream.aclose()

    gateway.providers["openai"].scripts = [answer("whole", " answer")]
    asyncio.run(leave_early())
    assert backend.items == {}


def test_aclose_of_a_replay_ends_it():
    gateway, _ = cached_gateway(StreamingProvider("openai", answer("some ", "text")))
    stream_all(gateway, model="gpt-4o-mini", temperature=0)

    async def run():
        stream = await gateway.open_stream(request(model="gpt-4o-mini", temperature=0), context())
        first = await anext(stream)
        await stream.aclose()
        return stream, first, await drain(stream)

    stream, first, rest = asyncio.run(run())
    assert stream.cached and first == TextDelta("some text") and rest == []


# --------------------------------------------------------------------------- wiring and the ledger


def test_the_stream_timeouts_come_from_settings():
    from llm_gateway.config import Settings
    from llm_gateway.wiring import build_gateway

    settings = Settings(openai_api_key="k", stream_first_byte_timeout_s=4.0, stream_idle_timeout_s=9.0)
    gateway = build_gateway(settings, keys={"openai": "k"})
    assert (gateway.stream_first_byte_timeout_s, gateway.stream_idle_timeout_s) == (4.0, 9.0)


@pytest.mark.parametrize(
    ("outcome", "counted"),
    [
        ("success", {"requests": 1, "attempts": 1, "errors": 0}),
        ("truncated", {"requests": 0, "attempts": 1, "errors": 1}),
        ("cancelled", {"requests": 0, "attempts": 1, "errors": 0}),
    ],
)
def test_the_ledger_counts_streamed_outcomes_with_their_tokens_and_cost(outcome, counted):
    from llm_gateway.accounting.usage import record_for_attempt
    from llm_gateway.models import Attempt

    attempt = Attempt(provider="openai", model="gpt-4o-mini", outcome=outcome, usage=USAGE, cost_usd=0.25)
    increments = record_for_attempt(context(), attempt, now=time.time()).increments()
    assert {name: increments[name] for name in counted} == counted
    assert (increments["input_tokens"], increments["output_tokens"], increments["cost_pusd"]) == (
        200,
        30,
        250_000_000_000,
    )


@pytest.mark.parametrize(("ending", "reopened"), [("truncated", True), ("cancelled", False), ("completed", False)])
def test_a_half_open_probe_made_by_a_stream_reports_how_it_ended(ending, reopened):
    """The shared breaker (in-memory store): a probe stream that breaks mid-way reopens the circuit; one
    the caller left, or that completed, proves the provider answers and closes it."""
    from tests.unit.test_breaker_state import Clock, MemoryStore, instance

    store, clock = MemoryStore(), Clock()
    breaker = instance(store, clock, failure_threshold=1)
    asyncio.run(breaker.record("openai", "gpt-4o-mini", ok=False))  # open
    clock.now += 31  # half-open: the next call is the probe
    scripts = {
        "truncated": [TextDelta("half"), ProviderConnectionError("reset")],
        "cancelled": [TextDelta("half"), *answer("more")],
        "completed": answer("whole"),
    }
    gateway = build({"openai": StreamingProvider("openai", scripts[ending])}, breaker=breaker)

    async def run():
        stream = await gateway.open_stream(request(model="gpt-4o-mini", fallback=[]), context())
        if ending == "cancelled":
            await anext(stream)
            await stream.aclose()
        else:
            with contextlib.suppress(StreamInterruptedError):
                await drain(stream)

    asyncio.run(run())
    assert [a.outcome for a in gateway.usage.attempts] == [ending.replace("completed", "success")]
    assert store.states[breaker.circuit("openai", "gpt-4o-mini")].phase(clock.now) == ("open" if reopened else "closed")
