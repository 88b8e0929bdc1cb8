"""The routed stream (Gateway.open_stream) before and after its first event, and when the caller leaves,
with in-memory streaming providers (tests/support/streams.py)."""

from __future__ import annotations

import asyncio
import time

import pytest

from llm_gateway.documents.tokens import estimate_message_tokens, estimate_text_tokens
from llm_gateway.errors import (
    AllProvidersFailedError,
    InvalidRequestError,
    ProviderBadRequestError,
    ProviderConnectionError,
    ProviderUnavailableError,
    RateLimitedError,
    StreamInterruptedError,
)
from llm_gateway.models import Message, Usage
from llm_gateway.streaming.events import StreamDone, StreamEnd, TextDelta, ToolCallDelta
from tests.support.streams import (
    CATALOG,
    USAGE,
    Pause,
    StreamingProvider,
    answer,
    build,
    context,
    drain,
    request,
    stream_all,
    texts,
)
from tests.unit.test_gateway import RecordingBreaker, RecordingBudget

# --------------------------------------------------------------------------- before the first event


def test_a_stream_passes_the_deltas_through_and_ends_with_the_assembled_result():
    openai = StreamingProvider("openai", answer("Hel", "lo", " there"))
    gateway = build({"openai": openai})

    async def run():
        stream = await gateway.open_stream(request(model="gpt-4o-mini", metadata={"job": "7"}), context())
        events = [event async for event in stream]
        return stream, events, openai.open_streams

    stream, events, open_at_end = asyncio.run(run())
    assert open_at_end == 0  # the provider's stream is closed as soon as its end event came
    assert [type(e) for e in events] == [TextDelta, TextDelta, TextDelta, StreamDone]
    done = events[-1]
    result = done.result
    assert not done.usage_estimated and not stream.cached
    assert result.content == "Hello there" and result.finish_reason == "stop" and result.tool_calls is None
    assert (result.id, result.provider, result.model) == (stream.id, "openai", "gpt-4o-mini")
    assert result.usage == USAGE and result.cost_usd == CATALOG.get("gpt-4o-mini").cost(USAGE) > 0
    assert result.metadata == {"job": "7"} and result.latency_ms > 0
    assert [(a.outcome, a.usage) for a in result.attempts] == [("success", USAGE)]
    assert gateway.usage.attempts == result.attempts
    assert openai.calls == []  # streamed, never the buffered call


def test_a_failure_before_the_first_event_is_retried():
    openai = StreamingProvider("openai", [ProviderUnavailableError("503")], answer("fine"))
    gateway = build({"openai": openai})
    _, events = stream_all(gateway, model="gpt-4o-mini", fallback=[])
    result = events[-1].result
    assert texts(events) == "fine" and len(openai.stream_calls) == 2
    assert [(a.outcome, a.error_code) for a in result.attempts] == [
        ("error", "provider_unavailable"),
        ("success", None),
    ]
    assert gateway.usage.attempts == result.attempts  # each failed attempt is in the ledger too


def test_a_rate_limited_provider_falls_back_before_the_first_event():
    limited = [RateLimitedError("429", retry_after=0.01)]
    openai = StreamingProvider("openai", limited, limited)
    anthropic = StreamingProvider("anthropic", answer("from claude"))
    gateway = build({"openai": openai, "anthropic": anthropic})
    stream, events = stream_all(gateway, model="gpt-4o-mini", fallback=["claude-3-5-haiku-latest"])
    assert (stream.provider, stream.model) == ("anthropic", "claude-3-5-haiku-latest")
    assert texts(events) == "from claude"
    assert [(a.provider, a.outcome) for a in events[-1].result.attempts] == [
        ("openai", "error"),
        ("openai", "error"),
        ("anthropic", "success"),
    ]


def test_a_caller_error_before_the_first_event_neither_retries_nor_falls_back():
    openai = StreamingProvider("openai", [ProviderBadRequestError("400")])
    anthropic = StreamingProvider("anthropic")
    gateway = build({"openai": openai, "anthropic": anthropic})
    with pytest.raises(ProviderBadRequestError) as info:
        stream_all(gateway, model="gpt-4o-mini", fallback=["claude-3-5-haiku-latest"])
    assert len(openai.stream_calls) == 1 and anthropic.stream_calls == []
    assert [a.outcome for a in info.value.attempts] == ["error"]


def test_a_stream_that_ends_before_any_event_is_a_failed_attempt_that_falls_back():
    openai = StreamingProvider("openai", [])  # no event, no end marker: a dropped connection
    anthropic = StreamingProvider("anthropic")
    gateway = build({"openai": openai, "anthropic": anthropic})
    _, events = stream_all(gateway, model="gpt-4o-mini", fallback=["claude-3-5-haiku-latest"])
    assert [(a.provider, a.error_code) for a in events[-1].result.attempts] == [
        ("openai", "provider_connection_error"),
        ("openai", "provider_connection_error"),
        ("anthropic", None),
    ]


def test_n_above_one_is_refused():
    gateway = build({"openai": StreamingProvider("openai")})
    with pytest.raises(InvalidRequestError) as info:
        stream_all(gateway, model="gpt-4o-mini", n=2)
    assert info.value.details == {"param": "n"}


# --------------------------------------------------------------------------- after the first event


def test_a_failure_after_the_first_event_is_a_truncated_attempt_and_no_fallback():
    broken = [TextDelta("Partial answer "), TextDelta("then"), ProviderConnectionError("reset")]
    openai = StreamingProvider("openai", broken)
    anthropic = StreamingProvider("anthropic")
    budget, breaker = RecordingBudget(), RecordingBreaker(set())
    gateway = build({"openai": openai, "anthropic": anthropic}, budget=budget, breaker=breaker)
    received = []

    async def run():
        stream = await gateway.open_stream(
            request(model="gpt-4o-mini", fallback=["claude-3-5-haiku-latest"], temperature=0), context()
        )
        async for event in stream:
            received.append(event)

    with pytest.raises(StreamInterruptedError) as info:
        asyncio.run(run())
    assert texts(received) == "Partial answer then"  # the deltas reached the caller before the error
    error = info.value
    assert error.code == "stream_interrupted" and error.http_status == 502
    assert error.details == {"provider": "openai", "model": "gpt-4o-mini", "cause": "provider_connection_error"}
    [attempt] = error.attempts
    assert attempt.outcome == "truncated" and attempt.error_code == "provider_connection_error"
    expected = Usage(
        input_tokens=estimate_message_tokens([Message(role="user", content="hello")]),
        output_tokens=estimate_text_tokens("Partial answer then"),
    )
    assert attempt.usage == expected and attempt.cost_usd == CATALOG.get("gpt-4o-mini").cost(expected) > 0
    assert gateway.usage.attempts == [attempt]
    assert anthropic.stream_calls == [] and len(openai.stream_calls) == 1  # no retry, no fallback
    assert breaker.records == [("gpt-4o-mini", False)]
    assert budget.settled == [attempt.cost_usd]


def test_a_timeout_between_events_is_a_truncation():
    openai = StreamingProvider("openai", [TextDelta("a"), Pause(5), *answer("b")])
    gateway = build({"openai": openai}, stream_idle_timeout_s=0.2)
    started = time.monotonic()
    with pytest.raises(StreamInterruptedError) as info:
        stream_all(gateway, model="gpt-4o-mini")
    assert time.monotonic() - started < 2
    assert info.value.details["cause"] == "provider_timeout"
    assert openai.closed_early == 1 and openai.open_streams == 0


def test_a_tool_call_whose_name_never_came_is_a_truncated_stream():
    openai = StreamingProvider("openai", [ToolCallDelta(index=0, arguments="{}"), StreamEnd("tool_calls", USAGE)])
    gateway = build({"openai": openai})

    async def run():
        stream = await gateway.open_stream(request(model="gpt-4o-mini"), context())
        with pytest.raises(StreamInterruptedError) as info:
            await drain(stream)
        return info.value, openai.open_streams

    error, open_after = asyncio.run(run())
    assert error.details["cause"] == "malformed_response"
    assert [a.outcome for a in gateway.usage.attempts] == ["truncated"]
    assert open_after == 0  # the provider stream, past its end event, is closed at once


class ConnectionStream:
    """A provider stream that is not a generator: its connection stays open until ``aclose``."""

    def __init__(self, owner, error):
        self.owner, self.error = owner, error
        owner.open_streams += 1

    def __aiter__(self):
        return self

    async def __anext__(self):
        raise self.error

    async def aclose(self):
        self.owner.open_streams -= 1


def test_a_failed_attempt_closes_its_provider_stream_before_the_next():
    openai = StreamingProvider("openai")
    opened_at_call = []

    def stream(request, **timeouts):
        opened_at_call.append(openai.open_streams)
        return ConnectionStream(openai, ProviderUnavailableError("503"))

    openai.stream = stream
    gateway = build({"openai": openai, "anthropic": StreamingProvider("anthropic")})
    stream_all(gateway, model="gpt-4o-mini", fallback=["claude-3-5-haiku-latest"])
    assert opened_at_call == [0, 0] and openai.open_streams == 0


# --------------------------------------------------------------------------- the caller leaving


def test_aclose_mid_stream_closes_the_provider_and_bills_what_was_seen():
    openai = StreamingProvider("openai", [TextDelta("one "), TextDelta("two "), *answer("three")])
    budget, breaker = RecordingBudget(), RecordingBreaker(set())
    gateway = build({"openai": openai}, budget=budget, breaker=breaker)

    async def run():
        stream = await gateway.open_stream(request(model="gpt-4o-mini", temperature=0), context())
        first = await anext(stream)
        second = await anext(stream)
        await stream.aclose()
        closed_at_once = (openai.closed_early, openai.open_streams)  # not left to the loop's shutdown
        await stream.aclose()  # idempotent
        rest = await drain(stream)
        return [first, second], rest, closed_at_once

    received, rest, closed_at_once = asyncio.run(run())
    assert texts(received) == "one two " and rest == []
    assert closed_at_once == (1, 0) and openai.closed_early == 1
    [attempt] = gateway.usage.attempts
    assert attempt.outcome == "cancelled" and attempt.error_code is None
    assert attempt.usage.output_tokens == estimate_text_tokens("one two ") and attempt.cost_usd > 0
    assert breaker.records == [("gpt-4o-mini", True)]  # not penalised
    assert len(budget.reserved) == 1 and budget.settled == [attempt.cost_usd]


def test_a_cancelled_reader_settles_the_reservation_and_closes_the_provider():
    openai = StreamingProvider("openai", [TextDelta("started"), Pause(30), *answer("never")])
    budget = RecordingBudget()
    gateway = build({"openai": openai}, budget=budget)

    async def run():
        stream = await gateway.open_stream(request(model="gpt-4o-mini"), context())
        task = asyncio.ensure_future(drain(stream))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await stream.aclose()  # after the cancellation: nothing more to do

    asyncio.run(run())
    assert openai.closed_early == 1 and openai.open_streams == 0
    assert [a.outcome for a in gateway.usage.attempts] == ["cancelled"]
    assert budget.settled == [gateway.usage.attempts[0].cost_usd]


def test_a_caller_cancelled_before_the_first_event_is_recorded_and_settled():
    openai = StreamingProvider("openai", [Pause(30), *answer("late")])
    budget, breaker = RecordingBudget(), RecordingBreaker(set())
    gateway = build({"openai": openai}, budget=budget, breaker=breaker)

    async def run():
        task = asyncio.ensure_future(gateway.open_stream(request(model="gpt-4o-mini"), context()))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    assert [a.outcome for a in gateway.usage.attempts] == ["cancelled"]
    assert openai.closed_early == 1 and budget.settled == [0.0] and breaker.records == []


def test_aclose_after_the_end_changes_nothing():
    budget = RecordingBudget()
    gateway = build({"openai": StreamingProvider("openai")}, budget=budget)

    async def run():
        stream = await gateway.open_stream(request(model="gpt-4o-mini"), context())
        events = await drain(stream)
        await stream.aclose()
        return events

    events = asyncio.run(run())
    assert [a.outcome for a in gateway.usage.attempts] == ["success"]
    assert budget.settled == [events[-1].result.cost_usd]


# --------------------------------------------------------------------------- deadline and timeouts


def test_the_stream_runs_under_the_request_deadline_not_the_buffered_timeout():
    openai = StreamingProvider("openai")
    gateway = build({"openai": openai}, stream_first_byte_timeout_s=7.0, stream_idle_timeout_s=3.0)
    assert gateway.request_timeout_s == 30.0
    stream_all(gateway, context(seconds=600), model="gpt-4o-mini")
    [call] = openai.stream_calls
    assert 590 < call["timeout_s"] <= 600
    assert (call["first_byte_timeout_s"], call["idle_timeout_s"]) == (7.0, 3.0)


def test_a_provider_silent_past_the_deadline_fails_in_time():
    openai = StreamingProvider("openai", [Pause(30), *answer("late")])
    gateway = build({"openai": openai})
    started = time.monotonic()
    with pytest.raises(AllProvidersFailedError) as info:
        stream_all(gateway, context(seconds=1.0), model="gpt-4o-mini", fallback=[])
    assert time.monotonic() - started < 2.0
    assert info.value.code == "provider_timeout"
    assert openai.open_streams == 0


def test_a_deadline_passing_mid_stream_truncates_it():
    openai = StreamingProvider("openai", [TextDelta("begun"), Pause(30), *answer("late")])
    gateway = build({"openai": openai})
    started = time.monotonic()
    with pytest.raises(StreamInterruptedError) as info:
        stream_all(gateway, context(seconds=1.0), model="gpt-4o-mini")
    assert time.monotonic() - started < 2.0
    assert info.value.details["cause"] == "provider_timeout" and openai.open_streams == 0


def test_a_fallback_leaves_room_for_the_next_model_before_the_first_event():
    openai = StreamingProvider("openai", [ProviderUnavailableError("503")])
    anthropic = StreamingProvider("anthropic")
    gateway = build({"openai": openai, "anthropic": anthropic})
    stream_all(gateway, context(seconds=12), model="gpt-4o-mini", fallback=["claude-3-5-haiku-latest"])
    # Half the time for the first model's wait (the rest for the fallback); the last one gets it all.
    assert all(call["first_byte_timeout_s"] <= 6.0 for call in openai.stream_calls)
    assert anthropic.stream_calls[0]["first_byte_timeout_s"] > 11.0


def test_a_provider_silent_past_the_first_byte_timeout_falls_back():
    openai = StreamingProvider("openai", [Pause(30), *answer("late")])
    anthropic = StreamingProvider("anthropic", answer("in time"))
    gateway = build({"openai": openai, "anthropic": anthropic}, stream_first_byte_timeout_s=0.2)
    started = time.monotonic()
    _, events = stream_all(gateway, model="gpt-4o-mini", fallback=["claude-3-5-haiku-latest"])
    assert time.monotonic() - started < 2.0 and texts(events) == "in time"
    assert [a.error_code for a in events[-1].result.attempts] == ["provider_timeout", "provider_timeout", None]
    assert openai.closed_early == 2 and openai.open_streams == 0


# --------------------------------------------------------------------------- breaker


class ClaimingBreaker(RecordingBreaker):
    def __init__(self, open_models):
        super().__init__(open_models)
        self.claims = []

    async def allow(self, provider, model):
        self.claims.append(model)
        return await super().allow(provider, model)


def test_the_breaker_orders_and_claims_as_for_a_buffered_call():
    openai = StreamingProvider("openai", [ProviderUnavailableError("503")] * 2)
    anthropic = StreamingProvider("anthropic")
    breaker = ClaimingBreaker({"gpt-4o"})
    gateway = build({"openai": openai, "anthropic": anthropic}, breaker=breaker)
    _, events = stream_all(gateway, model="gpt-4o-mini", fallback=["gpt-4o", "claude-3-5-haiku-latest"])
    assert events[-1].result.model == "claude-3-5-haiku-latest"
    assert breaker.claims == ["gpt-4o-mini", "claude-3-5-haiku-latest"]  # the open circuit is never claimed
    assert breaker.records == [
        ("gpt-4o-mini", False),
        ("gpt-4o-mini", False),
        ("claude-3-5-haiku-latest", True),
    ]
    everything_open = ClaimingBreaker({m.id for m in CATALOG.models})
    gateway = build({"openai": StreamingProvider("openai")}, breaker=everything_open)
    stream, _ = stream_all(gateway, model="gpt-4o-mini", fallback=[])
    assert stream.model == "gpt-4o-mini"  # all open: still one call


# --------------------------------------------------------------------------- tool calls


def test_tool_call_deltas_are_assembled_into_tool_calls():
    script = [
        ToolCallDelta(index=0, id="call_a", name="get_weather"),
        ToolCallDelta(index=0, arguments='{"city": '),
        ToolCallDelta(index=1, id="call_b", name="get_time", arguments='{"tz":'),
        ToolCallDelta(index=0, arguments='"Paris"}'),
        ToolCallDelta(index=1, arguments=' "UTC"}'),
        StreamEnd("tool_calls", USAGE),
    ]
    openai = StreamingProvider("openai", script)
    gateway = build({"openai": openai})
    _, events = stream_all(gateway, model="gpt-4o-mini")
    assert events[:-1] == script[:-1]  # passed through as they came
    result = events[-1].result
    assert result.finish_reason == "tool_calls" and result.content == ""
    assert [(c.id, c.function.name, c.function.arguments) for c in result.tool_calls] == [
        ("call_a", "get_weather", '{"city": "Paris"}'),
        ("call_b", "get_time", '{"tz": "UTC"}'),
    ]


def test_closing_the_iteration_early_closes_the_stream():
    """An edge that writes from ``async for`` inside its own generator, closed when the caller leaves."""
    openai = StreamingProvider("openai", [TextDelta("one "), Pause(30), *answer("two")])
    budget = RecordingBudget()
    gateway = build({"openai": openai}, budget=budget)

    async def run():
        stream = await gateway.open_stream(request(model="gpt-4o-mini"), context())

        async def body():
            async for event in stream:
                yield event

        chunks = body()
        first = await anext(chunks)
        await chunks.aclose()  # GeneratorExit at its yield; stream.aclose() is never called by hand
        # The abandoned iteration is finalized by the event loop (its asyncgen hooks) on its next turns.
        for _ in range(10):
            await asyncio.sleep(0)
        return first, openai.open_streams

    first, open_after = asyncio.run(run())
    assert first == TextDelta("one ") and open_after == 0
    assert [a.outcome for a in gateway.usage.attempts] == ["cancelled"]
    assert budget.settled == [gateway.usage.attempts[0].cost_usd]
