"""Streamed answers: Server-Sent Events framing, answers cut into pieces, and the writer that sends a
stream over the socket chunk by chunk (chunked transfer encoding, one flush per event) and plays the
stream faults.
"""

from __future__ import annotations

import json
import re
import select
import socket
import time
from typing import Any

from local.simulator.wire import Json, Response

_WORDS = re.compile(r"\s*\S+\s*|\s+")
EVENT_STREAM = "text/event-stream; charset=utf-8"


def sse(data: Json | str, event: str | None = None, *, crlf: bool = False) -> bytes:
    """One event; compact JSON as the providers send it (no newline inside ``data``)."""
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    end = "\r\n" if crlf else "\n"
    head = f"event: {event}{end}" if event else ""
    return f"{head}data: {payload}{end}{end}".encode()


def text_pieces(text: str, words: int = 2) -> list[str]:
    """``text`` in pieces of a few words each (whitespace kept), joining back to exactly ``text``."""
    tokens = _WORDS.findall(text)
    pieces = ["".join(tokens[i : i + words]) for i in range(0, len(tokens), words)]
    return pieces or ([text] if text else [])


def json_pieces(text: str, size: int = 9) -> list[str]:
    """JSON text in small pieces, cut anywhere, as argument deltas come."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def stream_response(events: list[bytes], headers: dict[str, str] | None = None) -> Response:
    return Response(
        200,
        b"",
        {"Content-Type": EVENT_STREAM, "Cache-Control": "no-cache", **(headers or {})},
        events=events,
    )


def _client_gone(sock: socket.socket, wait_s: float) -> bool:
    """Wait up to ``wait_s``; True as soon as the client has closed its end (readable, nothing to read)."""
    deadline = time.monotonic() + wait_s
    while True:
        left = max(0.0, deadline - time.monotonic())
        readable, _, _ = select.select([sock], [], [], left)
        if readable:
            try:
                if sock.recv(1, socket.MSG_PEEK) == b"":
                    return True
            except OSError:
                return True
            time.sleep(min(0.01, left))  # the client sent bytes (a next request): still there
        if time.monotonic() >= deadline:
            return False


def write_stream(handler: Any, resp: Response, chunk_delay_s: float) -> Json:
    """Send ``resp.events`` as they would come from the provider; returns what happened, for /_sim/calls:
    ``{"events_sent": n, "outcome": "completed" | "cut" | "stalled" | "malformed" | "error_event" |
    "client_closed"}``."""
    fault = resp.stream_fault
    events = resp.events or []
    if fault is not None and fault.name == "stream_slow":
        chunk_delay_s, fault = max(0.0, fault.delay_s), None
    sock: socket.socket = handler.connection
    handler.send_response(resp.status)
    for key, value in resp.headers.items():
        handler.send_header(key, value)
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    sent = 0

    def write(data: bytes) -> None:
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        handler.wfile.flush()

    try:
        handler.wfile.flush()
        for index, event in enumerate(events):
            if fault is not None and index == fault.after:
                return {"events_sent": sent, "outcome": _play(handler, fault, resp, write, sock)}
            if index and chunk_delay_s and _client_gone(sock, chunk_delay_s):
                handler.close_connection = True
                return {"events_sent": sent, "outcome": "client_closed"}
            write(event)
            sent += 1
        if fault is not None:  # asked to fail after more chunks than there were: fail at the end
            return {"events_sent": sent, "outcome": _play(handler, fault, resp, write, sock)}
        handler.wfile.write(b"0\r\n\r\n")
        handler.wfile.flush()
        return {"events_sent": sent, "outcome": "completed"}
    except (BrokenPipeError, ConnectionResetError):
        handler.close_connection = True
        return {"events_sent": sent, "outcome": "client_closed"}


def _play(handler: Any, fault: Any, resp: Response, write: Any, sock: socket.socket) -> str:
    handler.close_connection = True
    if fault.name == "stream_cut":
        return "cut"  # the socket closes without the last chunk: an incomplete body
    if fault.name == "stream_stall":
        return "client_closed" if _client_gone(sock, max(0.0, fault.delay_s)) else "stalled"
    if resp.fault_event:
        write(resp.fault_event)
    handler.wfile.write(b"0\r\n\r\n")
    handler.wfile.flush()
    return "malformed" if fault.name == "stream_malformed" else "error_event"
