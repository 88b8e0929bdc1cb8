"""Real client libraries streaming from the local stack (``stream: true`` on /v1/chat/completions): LangChain
``ChatOpenAI.stream`` (text, ``bind_tools``, ``stream_usage``), pydantic-ai ``run_stream`` (``stream_text``,
``stream_output``), instructor ``create_partial`` / ``create_iterable`` and LiteLLM as a client
(``openai/<model>`` with ``api_base``), each on a model of every provider, and each against a provider
stream that breaks mid-way (cut, the provider's error event, a malformed event).

The clients run in ``.venv-compat`` (tests/compat/stream_clients.py). Every streamed case is checked against
the same request made without streaming (the clients send ``Cache-Control: no-cache, no-store``, so both
reach the simulator): the pieces must join, in order, into the non-streamed answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from local.simulator import ProviderSimulator
from local.stack import LocalStack
from tests.support.compat_venv import MODELS, ensure_compat_python, run_compat_script

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_real_aws"), pytest.mark.timeout(300)]

PERSON_FIELDS = {"name", "age", "languages"}
# Stream events each provider sends before the cut: past its preamble (OpenAI's role chunk; Anthropic's
# message_start, content_block_start and ping), so the answer has begun and the gateway cannot fall back.
CUT_AFTER = {"openai": 3, "anthropic": 5, "gemini": 3}


@pytest.fixture(scope="module")
def compat_python() -> Path:
    return ensure_compat_python()


def run_streaming(python: Path, stack: LocalStack, client: str, *extra: str) -> dict[str, Any]:
    return run_compat_script(python, stack, "stream_clients.py", client, *extra)


def assert_streamed_in_order(pieces: list[str], reference: str, provider: str, model: str) -> None:
    assert reference.startswith(f"[sim {provider}/{model}] "), reference
    assert len(pieces) >= 3, pieces  # it came in pieces, not as one
    assert "".join(pieces) == reference


def prefix_of(partial: Any, final: Any) -> bool:
    """Whether a partial object is on its way to ``final``: each field unset, or a prefix of its final value."""
    if partial is None:
        return True
    if isinstance(partial, str):
        return isinstance(final, str) and final.startswith(partial)
    if isinstance(partial, list):
        return isinstance(final, list) and len(partial) <= len(final) and all(map(prefix_of, partial, final))
    if isinstance(partial, dict):
        return isinstance(final, dict) and all(prefix_of(v, final.get(k)) for k, v in partial.items())
    return bool(partial == final)


def assert_converges(partials: list[dict[str, Any]], final: dict[str, Any], provider: str) -> None:
    assert len(partials) >= 2, partials
    assert partials[-1] == final
    # Gemini sends a function call whole, in one event (as the real API does): nothing partial to see.
    if provider != "gemini":
        assert any(p != final for p in partials), "every partial was already the whole object"
    bad = [p for p in partials if not prefix_of(p, final)]
    assert not bad, f"partials that are not on the way to {final}: {bad}"


def assert_person(person: dict[str, Any]) -> None:
    assert set(person) == PERSON_FIELDS
    assert isinstance(person["name"], str) and person["name"]
    assert isinstance(person["age"], int) and person["age"] >= 0
    assert person["languages"] and all(isinstance(x, str) for x in person["languages"])


def assert_streams_completed(simulator: ProviderSimulator) -> None:
    for provider in MODELS:
        streams = [c["stream"] for c in simulator.calls(provider) if c.get("stream")]
        assert streams, f"{provider} was never asked to stream"
        assert all(s["outcome"] == "completed" for s in streams), (provider, streams)


def test_langchain_streams_text_tool_calls_and_usage(
    compat_python: Path, local_stack: LocalStack, simulator: ProviderSimulator
) -> None:
    results = run_streaming(compat_python, local_stack, "langchain")
    for provider, model in MODELS.items():
        text = results[model]["text"]
        assert_streamed_in_order(text["pieces"], text["reference"], provider, model)
        assert text["finish_reason"] == "stop"
        # stream_usage=True: the gateway's usage chunk, the same counts as the non-streamed answer.
        usage, reference_usage = text["usage"], text["reference_usage"]
        assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0, usage
        assert (usage["input_tokens"], usage["output_tokens"]) == (
            reference_usage["input_tokens"],
            reference_usage["output_tokens"],
        )
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]

        tools = results[model]["tools"]
        assert tools["chunks_with_call_pieces"] >= 2, tools  # the arguments arrived in pieces
        assert tools["invalid_calls"] == []  # the accumulated pieces parse
        [call] = tools["calls"]
        assert call["name"] == "get_weather" and call["id"]
        assert isinstance(call["args"]["city"], str) and isinstance(call["args"]["days"], int)
        assert [{"name": call["name"], "args": call["args"]}] == tools["reference"]
        assert tools["usage"]["output_tokens"] > 0
    assert_streams_completed(simulator)


def test_pydantic_ai_run_stream_text_and_structured_output(
    compat_python: Path, local_stack: LocalStack, simulator: ProviderSimulator
) -> None:
    results = run_streaming(compat_python, local_stack, "pydantic_ai")
    for provider, model in MODELS.items():
        text = results[model]["text"]
        assert_streamed_in_order(text["deltas"], text["reference"], provider, model)
        assert text["usage"]["input_tokens"] > 0 and text["usage"]["output_tokens"] > 0
        assert text["usage"] == text["reference_usage"]

        structured = results[model]["structured"]
        assert_person(structured["final"])
        assert structured["final"] == structured["reference"]
        assert_converges(structured["partials"], structured["final"], provider)
    assert_streams_completed(simulator)


def test_instructor_create_partial_and_create_iterable_stream(
    compat_python: Path, local_stack: LocalStack, simulator: ProviderSimulator
) -> None:
    results = run_streaming(compat_python, local_stack, "instructor")
    for provider, model in MODELS.items():
        partial = results[model]["partial"]
        assert_person(partial["reference"])
        assert_converges(partial["partials"], partial["reference"], provider)
        assert results[model]["iterable"]["people"] == [partial["reference"]]
    assert_streams_completed(simulator)
    # instructor forced its tool (its partial and iterable wrappers of Person) in each provider's dialect.
    forced = ["PartialPerson", "IterablePerson"]  # create_partial, then create_iterable
    openai_streamed = [c["body"] for c in simulator.calls("openai") if c.get("stream")]
    assert [b["tool_choice"]["function"]["name"] for b in openai_streamed] == forced
    anthropic_streamed = [c["body"] for c in simulator.calls("anthropic") if c.get("stream")]
    assert [b["tool_choice"] for b in anthropic_streamed] == [{"type": "tool", "name": n} for n in forced]


def test_litellm_as_a_client_streams_text_usage_and_tool_calls(
    compat_python: Path, local_stack: LocalStack, simulator: ProviderSimulator
) -> None:
    results = run_streaming(compat_python, local_stack, "litellm")
    for provider, model in MODELS.items():
        text = results[model]["text"]
        assert_streamed_in_order(text["pieces"], text["reference"], provider, model)
        assert text["finish_reasons"][-1] == "stop"
        usage, reference_usage = text["usage"], text["reference_usage"]  # stream_options.include_usage
        assert usage is not None and usage["completion_tokens"] > 0
        assert (usage["prompt_tokens"], usage["completion_tokens"]) == (
            reference_usage["prompt_tokens"],
            reference_usage["completion_tokens"],
        )

        tools = results[model]["tools"]
        assert tools["chunks"] >= 3 and tools["finish_reason"] == "tool_calls"
        [call] = tools["calls"]
        assert call["name"] == "get_weather" and call["id"]
        assert isinstance(call["args"]["city"], str) and isinstance(call["args"]["days"], int)
        assert [{"name": c["name"], "args": c["args"]} for c in tools["reference"]] == [
            {"name": call["name"], "args": call["args"]}
        ]
    assert_streams_completed(simulator)


# A provider stream that breaks after the answer began: the connection closed (no end marker), the provider's
# own error event, an event that is not JSON. The simulator's record of how each one ended.
BREAKS = {"stream_cut": "cut", "stream_error": "error_event", "stream_malformed": "malformed"}


@pytest.mark.parametrize("fault", sorted(BREAKS))
@pytest.mark.parametrize("client", ["langchain", "pydantic_ai", "instructor", "litellm"])
def test_a_stream_broken_mid_way_raises_in_the_client(
    client: str, fault: str, compat_python: Path, local_stack: LocalStack, simulator: ProviderSimulator
) -> None:
    for provider, after in CUT_AFTER.items():
        simulator.add_fault(fault, provider=provider, after=after)
    results = run_streaming(compat_python, local_stack, client, "--cut")
    for provider, model in MODELS.items():
        result = results[model]
        assert "returned" not in result, f"{client} on {model} returned a broken answer as complete: {result}"
        # The gateway's error event (OpenAI's shape), raised by the openai SDK under every client.
        assert any(
            "openai.APIError" in line and f"the {provider} stream broke after the answer began" in line
            for line in result["raised"]
        ), result["raised"]
        if client != "instructor":  # instructor hands out no partial of a stream that then fails (see README)
            received = "".join(result["pieces_before"])
            assert received.startswith(f"[sim {provider}/{model}] "), received
        # Broken after the answer began: no retry and no fallback, the one stream ended as the fault made it.
        calls = simulator.calls(provider)
        assert [c["stream"]["outcome"] for c in calls] == [BREAKS[fault]], calls
    assert {c["provider"] for c in simulator.calls()} == set(MODELS)
