"""Real clients streaming from the gateway (``stream: true`` on /v1/chat/completions), run in the
client-compatibility venv by tests/integration/test_client_stream_compat.py, which checks what this prints.

    python tests/compat/stream_clients.py CLIENT --base-url URL --key KEY --models m1,m2 [--cut]

Each case streams, and where a reference helps, also asks the same thing without streaming, so the test can
compare the two (every request says ``Cache-Control: no-cache, no-store``: both reach the provider). With
``--cut`` the test has scheduled a simulator fault that breaks the provider's stream mid-way (``stream_cut``,
``stream_error``, ``stream_malformed``): each client streams once and reports whether it raised (and what it
had handed out before) or returned an answer as if complete.

Prints one JSON object per model, as tests/compat/clients.py does (``{"error": ...}`` on an exception).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import traceback
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

NO_CACHE = {"Cache-Control": "no-cache, no-store"}
TEXT_PROMPT = "Write two sentences about the sea, then one about the mountains."
PERSON_PROMPT = "Extract the person: Ada Lovelace, 36, speaks English and French."
PEOPLE_PROMPT = "Extract every person: Ada Lovelace, 36, English; Charles Babbage, 79, English and French."
TOOL_PROMPT = "Use get_weather for Oslo."


class Person(BaseModel):
    name: str = Field(description="The person's name")
    age: int = Field(ge=0)
    languages: list[str]


def _headers(key: str) -> dict[str, str]:
    return {"x-api-key": key, **NO_CACHE}


def _raised(exc: BaseException) -> dict[str, Any]:
    """The exception a client raised, and the chain under it (a wrapper's cause says what really failed)."""
    chain: list[str] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 5:
        chain.append(f"{type(current).__module__}.{type(current).__name__}: {str(current)[:300]}")
        current = current.__cause__ or current.__context__
    return {"raised": chain}


# --------------------------------------------------------------------------- LangChain


def _langchain_llm(base_url: str, key: str, model: str) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model=model,
        base_url=base_url,
        api_key="unused",
        default_headers=_headers(key),
        max_retries=0,
        stream_usage=True,
    )


def _weather_tool() -> Any:
    from langchain_core.tools import tool

    @tool
    def get_weather(city: str, days: int) -> str:
        """The weather forecast for a city over some days."""
        return f"sunny in {city} for {days} days"

    return get_weather


def langchain_stream(base_url: str, key: str, model: str) -> dict[str, Any]:
    llm = _langchain_llm(base_url, key, model)
    chunks = list(llm.stream(TEXT_PROMPT))
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    reference = llm.invoke(TEXT_PROMPT)

    with_tools = llm.bind_tools([_weather_tool()])
    tool_chunks = list(with_tools.stream(TOOL_PROMPT))
    gathered = tool_chunks[0]
    for chunk in tool_chunks[1:]:
        gathered = gathered + chunk
    tool_reference = with_tools.invoke(TOOL_PROMPT)
    return {
        "text": {
            "pieces": [c.content for c in chunks if c.content],
            "reference": reference.content,
            "usage": total.usage_metadata,
            "reference_usage": reference.usage_metadata,
            "finish_reason": total.response_metadata.get("finish_reason"),
        },
        "tools": {
            "chunks_with_call_pieces": sum(1 for c in tool_chunks if c.tool_call_chunks),
            "calls": [{"name": c["name"], "args": c["args"], "id": c["id"]} for c in gathered.tool_calls],
            "invalid_calls": list(gathered.invalid_tool_calls),
            "reference": [{"name": c["name"], "args": c["args"]} for c in tool_reference.tool_calls],
            "usage": gathered.usage_metadata,
        },
    }


def langchain_cut(base_url: str, key: str, model: str) -> dict[str, Any]:
    pieces: list[str] = []
    try:
        for chunk in _langchain_llm(base_url, key, model).stream(TEXT_PROMPT):
            if chunk.content:
                pieces.append(str(chunk.content))
    except Exception as exc:
        return {**_raised(exc), "pieces_before": pieces}
    return {"returned": "".join(pieces), "pieces_before": pieces}


# --------------------------------------------------------------------------- pydantic-ai


def _pydantic_ai_model(base_url: str, key: str, model: str) -> Any:
    from openai import AsyncOpenAI
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    client = AsyncOpenAI(base_url=base_url, api_key="unused", default_headers=_headers(key), max_retries=0)
    return OpenAIChatModel(model, provider=OpenAIProvider(openai_client=client))


async def _pydantic_ai_stream(base_url: str, key: str, model: str) -> dict[str, Any]:
    from pydantic_ai import Agent

    llm = _pydantic_ai_model(base_url, key, model)
    text_agent = Agent(llm)
    async with text_agent.run_stream(TEXT_PROMPT) as run:
        deltas = [delta async for delta in run.stream_text(delta=True, debounce_by=None)]
        usage = run.usage()
    reference = await text_agent.run(TEXT_PROMPT)

    person_agent = Agent(llm, output_type=Person)
    async with person_agent.run_stream(PERSON_PROMPT) as run:
        partials = [p.model_dump() async for p in run.stream_output(debounce_by=None)]
        final = await run.get_output()
    person_reference = await person_agent.run(PERSON_PROMPT)
    return {
        "text": {
            "deltas": deltas,
            "reference": reference.output,
            "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
            "reference_usage": {
                "input_tokens": reference.usage().input_tokens,
                "output_tokens": reference.usage().output_tokens,
            },
        },
        "structured": {
            "partials": partials,
            "final": final.model_dump(),
            "reference": person_reference.output.model_dump(),
        },
    }


async def _pydantic_ai_cut(base_url: str, key: str, model: str) -> dict[str, Any]:
    from pydantic_ai import Agent

    deltas: list[str] = []
    try:
        async with Agent(_pydantic_ai_model(base_url, key, model)).run_stream(TEXT_PROMPT) as run:
            async for delta in run.stream_text(delta=True, debounce_by=None):
                deltas.append(delta)
            output = await run.get_output()
    except Exception as exc:
        return {**_raised(exc), "pieces_before": deltas}
    return {"returned": output, "pieces_before": deltas}


def pydantic_ai_stream(base_url: str, key: str, model: str) -> dict[str, Any]:
    return asyncio.run(_pydantic_ai_stream(base_url, key, model))


def pydantic_ai_cut(base_url: str, key: str, model: str) -> dict[str, Any]:
    return asyncio.run(_pydantic_ai_cut(base_url, key, model))


# --------------------------------------------------------------------------- instructor


def _instructor_client(base_url: str, key: str) -> Any:
    import instructor
    from openai import OpenAI

    openai_client = OpenAI(base_url=base_url, api_key="unused", default_headers=_headers(key), max_retries=0)
    return instructor.from_openai(openai_client, mode=instructor.Mode.TOOLS)


def instructor_stream(base_url: str, key: str, model: str) -> dict[str, Any]:
    client = _instructor_client(base_url, key)
    person_messages = [{"role": "user", "content": PERSON_PROMPT}]
    partials = [
        p.model_dump()
        for p in client.chat.completions.create_partial(
            model=model, response_model=Person, messages=person_messages, max_retries=0, stream=True
        )
    ]
    reference = client.chat.completions.create(
        model=model, response_model=Person, messages=person_messages, max_retries=0
    )
    people_messages = [{"role": "user", "content": PEOPLE_PROMPT}]
    people = [
        p.model_dump()
        for p in client.chat.completions.create_iterable(
            model=model, response_model=Person, messages=people_messages, max_retries=0, stream=True
        )
    ]
    # create_iterable streams whatever ``stream`` says, so the non-streamed ``create`` above is the reference.
    return {
        "partial": {"partials": partials, "reference": reference.model_dump()},
        "iterable": {"people": people},
    }


def instructor_cut(base_url: str, key: str, model: str) -> dict[str, Any]:
    partials: list[Any] = []
    try:
        for partial in _instructor_client(base_url, key).chat.completions.create_partial(
            model=model,
            response_model=Person,
            messages=[{"role": "user", "content": PERSON_PROMPT}],
            max_retries=0,
            stream=True,
        ):
            partials.append(partial.model_dump())
    except Exception as exc:
        return {**_raised(exc), "pieces_before": partials}
    return {"returned": partials[-1] if partials else None, "pieces_before": partials}


# --------------------------------------------------------------------------- LiteLLM (as a client)

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather forecast for a city over some days.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
        },
    },
}


def _litellm() -> Any:
    import os

    # Without this LiteLLM fetches its model price map from GitHub when imported.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.telemetry = False
    return litellm


def _litellm_call(base_url: str, key: str, model: str, **kwargs: Any) -> Any:
    """Any OpenAI-compatible server through LiteLLM: the ``openai/`` prefix, ``api_base`` and the key header."""
    return _litellm().completion(
        model=f"openai/{model}",
        api_base=base_url,
        api_key="unused",
        extra_headers=_headers(key),
        max_retries=0,
        **kwargs,
    )


def litellm_stream(base_url: str, key: str, model: str) -> dict[str, Any]:
    litellm = _litellm()
    text_messages = [{"role": "user", "content": TEXT_PROMPT}]
    chunks = list(
        _litellm_call(base_url, key, model, messages=text_messages, stream=True, stream_options={"include_usage": True})
    )
    usages = [c.usage.model_dump() for c in chunks if getattr(c, "usage", None)]
    reference = _litellm_call(base_url, key, model, messages=text_messages)

    tool_messages = [{"role": "user", "content": TOOL_PROMPT}]
    tool_chunks = list(_litellm_call(base_url, key, model, messages=tool_messages, tools=[WEATHER_TOOL], stream=True))
    rebuilt = litellm.stream_chunk_builder(tool_chunks, messages=tool_messages)
    tool_reference = _litellm_call(base_url, key, model, messages=tool_messages, tools=[WEATHER_TOOL])

    def calls(message: Any) -> list[dict[str, Any]]:
        return [
            {"name": c.function.name, "args": json.loads(c.function.arguments), "id": c.id}
            for c in message.tool_calls or []
        ]

    return {
        "text": {
            "pieces": [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content],
            "finish_reasons": [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason],
            "reference": reference.choices[0].message.content,
            "usage": usages[-1] if usages else None,
            "reference_usage": reference.usage.model_dump(),
        },
        "tools": {
            "chunks": len(tool_chunks),
            "calls": calls(rebuilt.choices[0].message),
            "finish_reason": rebuilt.choices[0].finish_reason,
            "reference": calls(tool_reference.choices[0].message),
        },
    }


def litellm_cut(base_url: str, key: str, model: str) -> dict[str, Any]:
    pieces: list[str] = []
    try:
        for chunk in _litellm_call(
            base_url, key, model, messages=[{"role": "user", "content": TEXT_PROMPT}], stream=True
        ):
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
    except Exception as exc:
        return {**_raised(exc), "pieces_before": pieces}
    return {"returned": "".join(pieces), "pieces_before": pieces}


CLIENTS: dict[str, tuple[Callable[[str, str, str], dict[str, Any]], Callable[[str, str, str], dict[str, Any]]]] = {
    "instructor": (instructor_stream, instructor_cut),
    "langchain": (langchain_stream, langchain_cut),
    "litellm": (litellm_stream, litellm_cut),
    "pydantic_ai": (pydantic_ai_stream, pydantic_ai_cut),
}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("client", choices=sorted(CLIENTS))
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--models", required=True)
    parser.add_argument("--cut", action="store_true", help="the simulator breaks every stream: report what happens")
    args = parser.parse_args()
    case = CLIENTS[args.client][1 if args.cut else 0]
    out: dict[str, Any] = {}
    # stdout carries the JSON only: LiteLLM prints its "Give Feedback" banner there when a call fails.
    with contextlib.redirect_stdout(sys.stderr):
        for model in args.models.split(","):
            try:
                out[model] = case(args.base_url, args.key, model)
            except Exception as exc:  # reported to the test, which fails on it with the client's own words
                out[model] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
    json.dump(out, sys.stdout, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
