"""Real client libraries against the local stack: instructor (``Mode.TOOLS``), LangChain's ``ChatOpenAI``
(``bind_tools`` with a tool-result round trip, and ``with_structured_output(method="function_calling")``)
and pydantic-ai (its default tool output), each on a model of every provider.

The clients live in their own venv (``.venv-compat``, pinned in tests/compat/requirements*.txt) so their
dependencies never move the gateway's; ``make test`` builds it first, and this module builds it through
the same make target when it is missing. Each client runs in a subprocess (tests/compat/clients.py) and
prints what it made of the answers; the checks here read that and the simulator's record of the wire.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from local.simulator import ProviderSimulator
from local.stack import LocalStack
from tests.support.compat_venv import MODELS, ensure_compat_python, run_compat_script

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_real_aws")]

PERSON_FIELDS = {"name", "age", "languages"}


@pytest.fixture(scope="module")
def compat_python() -> Path:
    return ensure_compat_python()


def run_client(python: Path, stack: LocalStack, client: str) -> dict[str, Any]:
    return run_compat_script(python, stack, "clients.py", client)


def wire_bodies(simulator: ProviderSimulator, provider: str) -> list[dict[str, Any]]:
    return [call["body"] for call in simulator.calls(provider)]


def test_instructor_tools_mode(compat_python: Path, local_stack: LocalStack, simulator: ProviderSimulator) -> None:
    results = run_client(compat_python, local_stack, "instructor")
    for provider, model in MODELS.items():
        result = results[model]
        assert set(result["person"]) == PERSON_FIELDS and result["person"]["age"] >= 0
        assert (result["finish_reason"], result["provider"]) == ("tool_calls", provider)
    # instructor forced its one tool: each provider got it in its own dialect.
    assert wire_bodies(simulator, "openai")[0]["tool_choice"] == {"type": "function", "function": {"name": "Person"}}
    assert wire_bodies(simulator, "anthropic")[0]["tool_choice"] == {"type": "tool", "name": "Person"}
    gemini = wire_bodies(simulator, "gemini")[0]
    assert gemini["toolConfig"]["functionCallingConfig"] == {"mode": "ANY", "allowedFunctionNames": ["Person"]}


def test_langchain_bind_tools_and_structured_output(
    compat_python: Path, local_stack: LocalStack, simulator: ProviderSimulator
) -> None:
    results = run_client(compat_python, local_stack, "langchain")
    for provider, model in MODELS.items():
        bound = results[model]["bind_tools"]
        assert [c["name"] for c in bound["calls"]] == ["get_weather"] and bound["calls"][0]["has_id"]
        assert isinstance(bound["calls"][0]["args"]["city"], str) and isinstance(bound["calls"][0]["args"]["days"], int)
        # The tool's result went to the provider asked for, through the gateway, and came back in its answer.
        assert bound["answer"].startswith(f"[sim {provider}/{model}]") and "sunny in" in bound["answer"]
        assert set(results[model]["structured"]) == PERSON_FIELDS, (provider, results[model]["structured"])
    # The tool result reached each provider as that provider's own kind of turn.
    assert any(m.get("role") == "tool" for b in wire_bodies(simulator, "openai") for m in b["messages"])
    anthropic = [blk for b in wire_bodies(simulator, "anthropic") for m in b["messages"] for blk in m["content"]]
    assert any(blk["type"] == "tool_result" for blk in anthropic)
    gemini = [p for b in wire_bodies(simulator, "gemini") for c in b["contents"] for p in c["parts"]]
    assert any("functionResponse" in p for p in gemini)


def test_pydantic_ai_tool_output_and_an_agent_loop(
    compat_python: Path, local_stack: LocalStack, simulator: ProviderSimulator
) -> None:
    results = run_client(compat_python, local_stack, "pydantic_ai")
    for model in MODELS.values():
        assert set(results[model]["person"]) == PERSON_FIELDS
        assert "tool-call" in results[model]["parts"]  # the output came as a tool call, pydantic-ai's default
        loop = results[model]["loop"]  # an agent loop: the function tool, its result, then the output tool
        assert loop["tool_calls"] == ["lookup_birth_year", "final_result"] and loop["tool_ran"] == 1
        assert set(loop["person"]) == PERSON_FIELDS
    for provider in MODELS:
        assert any(b.get("tools") for b in wire_bodies(simulator, provider)), provider
