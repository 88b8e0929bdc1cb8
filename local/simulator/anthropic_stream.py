"""Anthropic Messages streaming: the non-streamed message re-cut into the API's named events.

``message_start`` (the message with no content yet, input usage and a first output count), per content
block ``content_block_start`` / ``content_block_delta`` (``text_delta``, or ``input_json_delta`` pieces
of the tool input) / ``content_block_stop``, a ``ping`` after the first block opens, ``message_delta``
(stop reason, cumulative output usage) and ``message_stop``.
"""

from __future__ import annotations

import json

from local.simulator.streams import json_pieces, sse, stream_response, text_pieces
from local.simulator.wire import Json, Response


def anthropic_stream(message: Json, headers: dict[str, str]) -> Response:
    """``message`` is the Message the non-streamed call would have answered."""
    usage = message["usage"]
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**usage, "output_tokens": min(1, usage["output_tokens"])},
    }
    events = [sse({"type": "message_start", "message": start}, "message_start")]
    for index, block in enumerate(message["content"]):
        if block["type"] == "tool_use":
            opening = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            deltas = [
                {"type": "input_json_delta", "partial_json": piece}
                for piece in json_pieces(json.dumps(block["input"], ensure_ascii=False))
            ]
        else:
            opening = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": piece} for piece in text_pieces(block["text"])]
        started = {"type": "content_block_start", "index": index, "content_block": opening}
        events.append(sse(started, "content_block_start"))
        if index == 0:
            events.append(sse({"type": "ping"}, "ping"))
        for delta in deltas:
            events.append(sse({"type": "content_block_delta", "index": index, "delta": delta}, "content_block_delta"))
        events.append(sse({"type": "content_block_stop", "index": index}, "content_block_stop"))
    closing = {
        "type": "message_delta",
        "delta": {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]},
        "usage": {"output_tokens": usage["output_tokens"]},
    }
    events.append(sse(closing, "message_delta"))
    events.append(sse({"type": "message_stop"}, "message_stop"))
    return stream_response(events, headers)


def anthropic_stream_fault_event(name: str) -> bytes:
    if name == "stream_malformed":
        return b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_de\n\n'
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    return sse(error, "error")
