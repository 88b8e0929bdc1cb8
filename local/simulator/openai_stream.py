"""OpenAI Chat Completions streaming: the non-streamed answer re-cut into ``chat.completion.chunk`` events.

Per choice: a first chunk with the role (and, for tool calls, each call's first piece: ``index``, ``id``,
``type``, ``function.name``, empty ``arguments``), the content or the arguments in pieces, then a chunk
with ``finish_reason`` and an empty delta. With ``stream_options.include_usage`` every chunk carries
``"usage": null`` and a last chunk with no choices carries the usage. ``data: [DONE]`` ends the stream.
"""

from __future__ import annotations

from typing import Any

from local.simulator.choices import openai_logprobs
from local.simulator.streams import json_pieces, sse, stream_response, text_pieces
from local.simulator.wire import ChatRequest, Json, Response


def openai_stream(req: ChatRequest, body: Json, headers: dict[str, str]) -> Response:
    """``body`` is the completion the non-streamed call would have answered."""
    envelope = {
        "id": body["id"],
        "object": "chat.completion.chunk",
        "created": body["created"],
        "model": body["model"],
        "service_tier": body.get("service_tier"),
        "system_fingerprint": body.get("system_fingerprint"),
    }

    def chunk(choice_index: int, delta: Json, finish: str | None = None, logprobs: Any = None) -> bytes:
        choice = {"index": choice_index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        data: Json = {**envelope, "choices": [choice]}
        if req.include_usage:
            data["usage"] = None
        return sse(data)

    events: list[bytes] = []
    for choice in body["choices"]:
        index, message = choice["index"], choice["message"]
        calls = message.get("tool_calls") or []
        if calls:
            for position, call in enumerate(calls):
                first = {
                    "index": position,
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["function"]["name"], "arguments": ""},
                }
                opening: Json = {"tool_calls": [first]}
                if position == 0:
                    opening = {"role": "assistant", "content": None, **opening, "refusal": None}
                events.append(chunk(index, opening))
                for piece in json_pieces(call["function"]["arguments"]):
                    events.append(chunk(index, {"tool_calls": [{"index": position, "function": {"arguments": piece}}]}))
        else:
            events.append(chunk(index, {"role": "assistant", "content": "", "refusal": None}))
            for piece in text_pieces(message.get("content") or ""):
                logprobs = openai_logprobs(piece, req.top_logprobs) if req.logprobs else None
                events.append(chunk(index, {"content": piece}, logprobs=logprobs))
        events.append(chunk(index, {}, finish=choice["finish_reason"]))
    if req.include_usage:
        events.append(sse({**envelope, "choices": [], "usage": body["usage"]}))
    events.append(sse("[DONE]"))
    return stream_response(events, headers)


def openai_stream_fault_event(name: str) -> bytes:
    if name == "stream_malformed":
        return b'data: {"id":"chatcmpl-sim","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"con\n\n'
    error = {
        "message": "The server had an error while processing your request. Sorry about that!",
        "type": "server_error",
        "param": None,
        "code": None,
    }
    return sse({"error": error})
