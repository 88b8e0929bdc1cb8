"""The SSE encoders: OpenAI's chat.completion.chunk stream, read back by the official ``openai`` client's own
stream parser and accumulator (over an ``httpx.MockTransport``), and the native route's named events, read
back by an SSE decoder (the one the openai client uses: blank-line framed events, ``event:``/``data:``)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from openai._streaming import SSEDecoder

from llm_gateway.errors import StreamInterruptedError
from llm_gateway.http.sse_native import NativeEventEncoder
from llm_gateway.http.sse_openai import ChatChunkEncoder
from llm_gateway.http.stream_params import StreamMode
from llm_gateway.models import Attempt, Usage
from tests.support.scripted_streams import ScriptedStream, encoded, text_script, tool_script

USER = [{"role": "user", "content": "hi"}]


def chat_bytes(stream: ScriptedStream, include_usage: bool = False) -> bytes:
    return encoded(ChatChunkEncoder(stream, StreamMode(include_usage=include_usage)), stream)


def sse_events(raw: bytes) -> list[tuple[str | None, str]]:
    return [(e.event, e.data) for e in SSEDecoder().iter_bytes(iter([raw]))]


def client_for(raw: bytes, seen: list[dict[str, Any]] | None = None) -> openai.OpenAI:
    def answer(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(json.loads(request.content))
        return httpx.Response(200, headers={"content-type": "text/event-stream; charset=utf-8"}, content=raw)

    http = httpx.Client(transport=httpx.MockTransport(answer))
    return openai.OpenAI(api_key="k", base_url="http://gateway.test/v1", http_client=http, max_retries=0)


def chunks(raw: bytes) -> list[dict[str, Any]]:
    events = sse_events(raw)
    assert all(name is None for name, _ in events)  # OpenAI's stream has unnamed events only
    return [json.loads(data) for _, data in events if data != "[DONE]"]


# --------------------------------------------------------------------------- OpenAI's chunk format


def test_text_chunks_have_openais_shape_and_order() -> None:
    raw = chat_bytes(ScriptedStream(text_script("Hel", "lo", "!")))
    assert raw.endswith(b"\n\ndata: [DONE]\n\n") and raw.count(b"[DONE]") == 1
    found = chunks(raw)
    for chunk in found:
        assert chunk["id"] == "chatcmpl-0123456789abcdef" and chunk["object"] == "chat.completion.chunk"
        assert (chunk["created"], chunk["model"], chunk["system_fingerprint"]) == (1_760_000_000, "gpt-4o-mini", None)
        assert "usage" not in chunk  # only with include_usage, as OpenAI does
        [choice] = chunk["choices"]
        assert choice["index"] == 0 and choice["logprobs"] is None
    deltas = [c["choices"][0]["delta"] for c in found]
    assert deltas[0] == {"role": "assistant", "content": "", "refusal": None}
    assert deltas[1:4] == [{"content": "Hel"}, {"content": "lo"}, {"content": "!"}]
    assert deltas[4] == {} and found[4]["choices"][0]["finish_reason"] == "stop"
    assert [c["choices"][0]["finish_reason"] for c in found[:4]] == [None] * 4
    gateway = found[4]["x_gateway"]  # without include_usage, the last chunk carries the gateway's fields
    assert gateway["provider"] == "openai" and gateway["cost_usd"] == 0.0000123 and gateway["cached"] is False
    assert gateway["usage_estimated"] is False and [a["outcome"] for a in gateway["attempts"]] == ["success"]


def test_include_usage_adds_null_usage_everywhere_and_a_final_usage_chunk() -> None:
    found = chunks(chat_bytes(ScriptedStream(text_script("a", "b", usage_estimated=True)), include_usage=True))
    assert all("usage" in c for c in found) and [c["usage"] for c in found[:-1]] == [None] * (len(found) - 1)
    last = found[-1]
    assert last["choices"] == []
    assert last["usage"] == {
        "prompt_tokens": 12,
        "completion_tokens": 5,
        "total_tokens": 17,
        "prompt_tokens_details": {"cached_tokens": 2},
    }
    assert last["x_gateway"]["usage_estimated"] is True and last["x_gateway"]["attempts"][0]["provider"] == "openai"
    assert found[-2]["choices"][0]["finish_reason"] == "stop" and "x_gateway" not in found[-2]


def test_the_openai_client_reassembles_text_and_reads_usage() -> None:
    seen: list[dict[str, Any]] = []
    client = client_for(chat_bytes(ScriptedStream(text_script("Hello", ", ", "world")), include_usage=True), seen)
    got = list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=USER, stream=True, stream_options={"include_usage": True}
        )
    )  # type: ignore[call-overload]
    assert seen[0]["stream"] is True
    text = "".join(c.choices[0].delta.content or "" for c in got if c.choices)
    assert text == "Hello, world"
    assert got[-1].usage is not None and (got[-1].usage.prompt_tokens, got[-1].usage.completion_tokens) == (12, 5)
    assert got[-1].model_extra is not None and got[-1].model_extra["x_gateway"]["provider"] == "openai"


def test_the_openai_client_accumulates_tool_calls_by_index() -> None:
    client = client_for(chat_bytes(ScriptedStream(tool_script())))
    with client.chat.completions.stream(model="gpt-4o-mini", messages=USER) as stream:  # type: ignore[arg-type]
        for _ in stream:
            pass
        final = stream.get_final_completion()
    [choice] = final.choices
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Let me check."
    calls = [(c.id, c.function.name, c.function.arguments) for c in choice.message.tool_calls or []]
    assert calls == [("call_a", "get_weather", '{"city":"Paris"}'), ("call_b", "get_time", '{"zone":"CET"}')]


def test_a_tool_calls_first_chunk_has_id_type_and_name_then_arguments_pieces() -> None:
    found = chunks(chat_bytes(ScriptedStream(tool_script())))
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in found if "tool_calls" in c["choices"][0]["delta"]]
    assert calls[0] == {
        "index": 0,
        "id": "call_a",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert calls[1] == {"index": 0, "function": {"arguments": '{"city":"Paris"}'}}
    assert calls[2] == {
        "index": 1,
        "id": "call_b",
        "type": "function",
        "function": {"name": "get_time", "arguments": ""},
    }
    assert calls[3:] == [{"index": 1, "function": {"arguments": p}} for p in ('{"zone"', ':"CET"', "}")]


def test_a_stream_broken_mid_way_ends_with_an_error_event_and_no_done_and_the_client_raises() -> None:
    broken = StreamInterruptedError("the provider's stream broke after the answer started")
    broken.attempts = [
        Attempt(provider="openai", model="gpt-4o-mini", outcome="truncated", usage=Usage(output_tokens=2))
    ]
    raw = chat_bytes(ScriptedStream(text_script("partial", "text")[:2], fail=broken))
    assert b"[DONE]" not in raw
    last = chunks(raw)[-1]
    assert last == {
        "error": {
            "message": "the provider's stream broke after the answer started",
            "type": "api_error",
            "param": None,
            "code": "stream_interrupted",
            "retryable": True,
        }
    }
    client = client_for(raw)
    received: list[str] = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in client.chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True):  # type: ignore[call-overload]
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "partialtext"
    assert caught.value.body is not None and caught.value.body["code"] == "stream_interrupted"  # type: ignore[index]


def test_an_unknown_stop_is_stop_for_openai_clients_and_error_in_x_gateway() -> None:
    script = text_script("x")
    done = script[-1]
    assert hasattr(done, "result")
    odd = type(done)(done.result.model_copy(update={"finish_reason": "error"}))
    found = chunks(chat_bytes(ScriptedStream([*script[:-1], odd])))
    assert found[-1]["choices"][0]["finish_reason"] == "stop" and found[-1]["x_gateway"]["finish_reason"] == "error"


def test_non_ascii_and_line_breaks_stay_inside_one_data_line() -> None:
    raw = chat_bytes(ScriptedStream(text_script("line one\nline two\r\n", "日本語 ✓")))
    assert "日本語".encode() in raw  # UTF-8, not \\u escapes
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks(raw) if c["choices"])
    assert text == "line one\nline two\r\n日本語 ✓"


# --------------------------------------------------------------------------- the native event shape


def native_events(stream: ScriptedStream) -> list[tuple[str | None, Any]]:
    return [(name, json.loads(data)) for name, data in sse_events(encoded(NativeEventEncoder(stream), stream))]


def test_native_events_start_deltas_tool_calls_and_done_with_the_whole_result() -> None:
    events = native_events(ScriptedStream(tool_script()))
    names = [name for name, _ in events]
    assert names == ["start", "delta", "tool_call", "tool_call", "tool_call", "tool_call", "tool_call", "done"]
    assert events[0][1] == {
        "id": "gw-0123456789abcdef",
        "created": 1_760_000_000,
        "provider": "openai",
        "model": "gpt-4o-mini",
        "cached": False,
    }
    assert events[1][1] == {"text": "Let me check."}
    assert events[2][1] == {"index": 0, "id": "call_a", "name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert events[4][1] == {"index": 1, "id": None, "name": None, "arguments": '{"zone"'}
    done = events[-1][1]
    [script_done] = [e for e in tool_script() if hasattr(e, "result")]
    assert done == {**script_done.result.model_dump(mode="json"), "usage_estimated": False}


def test_native_error_event_has_the_gateways_error_body() -> None:
    broken = StreamInterruptedError("the provider went quiet")
    events = native_events(ScriptedStream(text_script("a")[:1], fail=broken))
    assert [name for name, _ in events] == ["start", "delta", "error"]
    error = events[-1][1]["error"]
    assert (error["code"], error["retryable"], error["message"]) == (
        "stream_interrupted",
        True,
        "the provider went quiet",
    )
    assert "type" not in error
