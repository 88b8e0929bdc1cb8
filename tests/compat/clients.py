"""Real clients against the gateway, run in the client-compatibility venv (``make compat-venv``) by
tests/integration/test_client_compat.py, which starts the local stack and checks what this prints.

    python tests/compat/clients.py CLIENT --base-url URL --key KEY --models m1,m2

Prints one JSON object: per model, what the client made of the gateway's answers (or the error it
raised, as ``{"error": ...}``, so the test shows it instead of a traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field


class Person(BaseModel):
    name: str = Field(description="The person's name")
    age: int = Field(ge=0)
    languages: list[str]


PROMPT = "Extract the person: Ada Lovelace, 36, speaks English and French."


def instructor_tools(base_url: str, key: str, model: str) -> dict[str, Any]:
    import instructor
    from openai import OpenAI

    client = instructor.from_openai(
        OpenAI(base_url=base_url, api_key="unused", default_headers={"x-api-key": key}, max_retries=0),
        mode=instructor.Mode.TOOLS,
    )
    person, raw = client.chat.completions.create_with_completion(
        model=model, response_model=Person, messages=[{"role": "user", "content": PROMPT}], max_retries=0
    )
    return {
        "person": person.model_dump(),
        "finish_reason": raw.choices[0].finish_reason,
        "provider": (raw.model_extra or {}).get("x_gateway", {}).get("provider"),
    }


def langchain(base_url: str, key: str, model: str) -> dict[str, Any]:
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: str, days: int) -> str:
        """The weather forecast for a city over some days."""
        return f"sunny in {city} for {days} days"

    llm = ChatOpenAI(
        model=model, base_url=base_url, api_key="unused", default_headers={"x-api-key": key}, max_retries=0
    )
    with_tools = llm.bind_tools([get_weather])
    messages: list[Any] = [HumanMessage("Use get_weather for Oslo.")]
    asked = with_tools.invoke(messages)
    calls = asked.tool_calls
    messages += [asked, *(ToolMessage(get_weather.invoke(c["args"]), tool_call_id=c["id"]) for c in calls)]
    answered = with_tools.invoke(messages)
    structured = llm.with_structured_output(Person, method="function_calling").invoke(PROMPT)
    return {
        "bind_tools": {
            "calls": [{"name": c["name"], "args": c["args"], "has_id": bool(c["id"])} for c in calls],
            "answer": answered.content,
        },
        "structured": structured.model_dump() if isinstance(structured, Person) else repr(structured),
    }


def pydantic_ai(base_url: str, key: str, model: str) -> dict[str, Any]:
    from openai import AsyncOpenAI
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    client = AsyncOpenAI(base_url=base_url, api_key="unused", default_headers={"x-api-key": key}, max_retries=0)
    llm = OpenAIChatModel(model, provider=OpenAIProvider(openai_client=client))
    result = Agent(llm, output_type=Person).run_sync(PROMPT)
    kinds = [part.part_kind for message in result.all_messages() for part in message.parts]

    # An agent loop: a function tool first (its result goes back through the gateway), then the output tool.
    looped: list[str] = []
    agent = Agent(llm, output_type=Person)

    @agent.tool_plain
    def lookup_birth_year(name: str) -> int:
        """The year a person was born."""
        looped.append(name)
        return 1815

    with_tool = agent.run_sync("Use lookup_birth_year, then " + PROMPT)
    tool_names = [
        part.tool_name
        for message in with_tool.all_messages()
        for part in message.parts
        if part.part_kind == "tool-call"
    ]
    return {
        "person": result.output.model_dump(),
        "parts": kinds,
        "loop": {"person": with_tool.output.model_dump(), "tool_calls": tool_names, "tool_ran": len(looped)},
    }


CLIENTS: dict[str, Callable[[str, str, str], dict[str, Any]]] = {
    "instructor": instructor_tools,
    "langchain": langchain,
    "pydantic_ai": pydantic_ai,
}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("client", choices=sorted(CLIENTS))
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--models", required=True)
    args = parser.parse_args()
    out: dict[str, Any] = {}
    for model in args.models.split(","):
        try:
            out[model] = CLIENTS[args.client](args.base_url, args.key, model)
        except Exception as exc:  # reported to the test, which fails on it with the client's own words
            out[model] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
    json.dump(out, sys.stdout, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
