"""Bedrock's ConverseStream: a Converse answer told again as eventstream frames, one flush per frame.

The events are Converse's answer in order: ``messageStart``; per content block ``contentBlockStart``
(tool uses only), ``contentBlockDelta`` pieces (text, or the tool input's JSON text cut anywhere) and
``contentBlockStop``; ``messageStop`` with the stop reason; ``metadata`` with the usage. Like Bedrock,
each event payload carries a ``p`` field of filler (it hides the payload's true length); clients ignore it.
"""

from __future__ import annotations

import json

from local.simulator.eventstream_wire import CONTENT_TYPE, event_frame, exception_frame, with_bad_checksum
from local.simulator.streams import json_pieces, text_pieces
from local.simulator.wire import Json, Response

_FILLER = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
# Bedrock stream faults beyond the shared ``stream_error`` (modelStreamErrorException): one per exception
# event ConverseStream can send, so each mapping can be played over a socket.
STREAM_EXCEPTIONS = {
    "stream_error": ("modelStreamErrorException", "The model failed while streaming its answer."),
    "stream_throttling": ("throttlingException", "Too many requests, please wait before trying again."),
    "stream_unavailable": ("serviceUnavailableException", "The service is unavailable. Try again later."),
    "stream_internal": ("internalServerException", "The server encountered an internal error."),
    "stream_validation": ("validationException", "The model rejected the request while streaming."),
}


def _event(event_type: str, payload: Json) -> bytes:
    filler = _FILLER[: 1 + len(json.dumps(payload)) % len(_FILLER)]
    return event_frame(event_type, {**payload, "p": filler})


def converse_frames(body: Json) -> list[bytes]:
    """The frames of a Converse answer body (``output``, ``stopReason``, ``usage``, ``metrics``)."""
    frames = [_event("messageStart", {"role": "assistant"})]
    for index, block in enumerate(body["output"]["message"]["content"]):
        if "toolUse" in block:
            use = block["toolUse"]
            start = {"toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}}
            frames.append(_event("contentBlockStart", {"contentBlockIndex": index, "start": start}))
            arguments = json.dumps(use.get("input") or {}, ensure_ascii=False)
            deltas = [{"toolUse": {"input": piece}} for piece in json_pieces(arguments)]
        else:
            deltas = [{"text": piece} for piece in text_pieces(block.get("text", ""))]
        frames.extend(_event("contentBlockDelta", {"contentBlockIndex": index, "delta": d}) for d in deltas)
        frames.append(_event("contentBlockStop", {"contentBlockIndex": index}))
    frames.append(_event("messageStop", {"stopReason": body["stopReason"]}))
    frames.append(_event("metadata", {"usage": body["usage"], "metrics": body["metrics"]}))
    return frames


def stream_response(frames: list[bytes], headers: dict[str, str]) -> Response:
    return Response(200, b"", {"Content-Type": CONTENT_TYPE, **headers}, events=frames)


def fault_frame(fault: str) -> bytes:
    """What a ``stream_malformed`` or exception stream fault sends in place of the next frame."""
    if fault == "stream_malformed":
        return with_bad_checksum(_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": " broken"}}))
    exception_type, message = STREAM_EXCEPTIONS.get(fault, STREAM_EXCEPTIONS["stream_error"])
    return exception_frame(exception_type, message)


def malformed_frames(*, bad_shape: bool) -> list[bytes]:
    """The stream's ``malformed`` (a frame whose checksum fails) and ``malformed_shape`` (valid frames,
    a delta without its ``delta``) faults."""
    start = _event("messageStart", {"role": "assistant"})
    if bad_shape:
        return [start, _event("contentBlockDelta", {"contentBlockIndex": 0})]
    return [start, fault_frame("stream_malformed")]
