"""A local Lambda Runtime API: real HTTP on localhost, for the streaming runtime loop the bridge runs.

The bridge queues an invocation; a worker thread runs ``llm_gateway.stream_runtime``'s loop for one
invocation against this server: ``GET /next`` hands the event over, ``POST /response`` is read chunk by
chunk as the runtime writes it (the prelude, the payload, the trailers), ``POST /error`` reports a failure
before any byte. What arrives is passed on as :class:`Piece` values the bridge writes to its client as
they come. :meth:`Invocation.abort` (the client went away) resets the runtime's connection, so its next
write fails, as Lambda closes the stream when API Gateway's caller leaves.
"""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, BinaryIO, Literal

from local.stack.settings import log

API_PREFIX = "/2018-06-01/runtime"
DELIMITER = b"\x00" * 8
MAX_PRELUDE_BYTES = 16 * 1024  # API Gateway wants the prelude within the stream's first 16 KB
ERROR_TYPE = "lambda-runtime-function-error-type"
ERROR_BODY = "lambda-runtime-function-error-body"

PieceKind = Literal["head", "data", "end", "broken", "failed"]


@dataclass(frozen=True)
class Piece:
    """``head``: the prelude (status, headers); ``data``: payload bytes; ``end``: the body is complete;
    ``broken``: the stream ended with error trailers or a dropped connection; ``failed``: no answer (an
    ``/error`` post, or a response API Gateway could not read), API Gateway answers 502."""

    kind: PieceKind
    data: bytes = b""
    status: int = 0
    headers: tuple[tuple[str, str], ...] = ()
    error: dict[str, Any] = field(default_factory=dict)
    received_at: float = field(default_factory=time.monotonic)  # when the emulator read it


class Invocation:
    """One event on its way through the emulator, and the pieces of its answer."""

    def __init__(self, event: Any, *, timeout_s: float, function_arn: str) -> None:
        self.request_id = str(uuid.uuid4())
        self.event = json.dumps(event).encode()
        self.deadline_ms = int((time.time() + timeout_s) * 1000)
        self.function_arn = function_arn
        self.pieces: queue.SimpleQueue[Piece] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._connection: socket.socket | None = None
        self.aborted = False

    def abort(self) -> None:
        """Stop reading the answer: reset the runtime's connection (its next write fails)."""
        with self._lock:
            self.aborted = True
            conn = self._connection
        if conn is not None:
            _reset(conn)

    def _attach(self, conn: socket.socket) -> bool:
        with self._lock:
            self._connection = conn
            return not self.aborted

    def _detach(self) -> None:
        with self._lock:
            self._connection = None


def _reset(conn: socket.socket) -> None:
    """Close with an RST (linger 0) rather than a FIN: the peer's very next send fails."""
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)


def prelude_piece(meta_bytes: bytes) -> Piece:
    """The prelude's JSON as a ``head`` piece (a bad one is ``failed``: API Gateway answers 502)."""
    try:
        meta = json.loads(meta_bytes)
        status = int(meta.get("statusCode", 200))
        multi = meta.get("multiValueHeaders") or {}
        in_multi = {str(name).lower() for name in multi}  # as for proxy answers: the multi-value list wins
        headers = [(str(k), str(v)) for k, v in (meta.get("headers") or {}).items() if str(k).lower() not in in_multi]
        for name, values in multi.items():
            headers += [(str(name), str(v)) for v in values]
        headers += [("Set-Cookie", str(cookie)) for cookie in meta.get("cookies") or []]
    except (ValueError, TypeError, AttributeError) as exc:
        return Piece("failed", error={"errorType": "InvalidPrelude", "errorMessage": str(exc)})
    return Piece("head", status=status, headers=tuple(headers))


class RuntimeApiEmulator:
    """The Runtime API of one local function: a FIFO of invocations for ``/next``."""

    def __init__(self, name: str, host: str = "127.0.0.1") -> None:
        self.name = name
        self._pending: queue.SimpleQueue[Invocation | None] = queue.SimpleQueue()
        self._by_id: dict[str, Invocation] = {}
        self._lock = threading.Lock()
        self.init_errors: list[dict[str, Any]] = []
        self._server = _EmulatorServer((host, 0), self)
        self.address = f"{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name=f"runtime-api-{name}", daemon=True
        )
        self._thread.start()

    def submit(self, invocation: Invocation) -> None:
        with self._lock:
            self._by_id[invocation.request_id] = invocation
        self._pending.put(invocation)

    def next_invocation(self) -> Invocation | None:
        return self._pending.get()

    def find(self, request_id: str) -> Invocation | None:
        with self._lock:
            return self._by_id.get(request_id)

    def forget(self, invocation: Invocation) -> None:
        with self._lock:
            self._by_id.pop(invocation.request_id, None)

    def stop(self) -> None:
        self._pending.put(None)  # a loop still waiting on /next gets an error and returns
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _EmulatorServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], emulator: RuntimeApiEmulator) -> None:
        self.emulator = emulator
        super().__init__(address, _RuntimeApiHandler)


class _RuntimeApiHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _EmulatorServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path != f"{API_PREFIX}/invocation/next":
            self._reply(404, {"errorMessage": "unknown path"})
            return
        invocation = self.server.emulator.next_invocation()
        if invocation is None:
            self._reply(500, {"errorMessage": "the runtime API is shutting down"})
            return
        headers = {
            "Lambda-Runtime-Aws-Request-Id": invocation.request_id,
            "Lambda-Runtime-Deadline-Ms": str(invocation.deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": invocation.function_arn,
        }
        self._reply(200, invocation.event, headers)

    def do_POST(self) -> None:
        path = self.path.removeprefix(API_PREFIX)
        if path == "/init/error":
            self.server.emulator.init_errors.append(self._json_body())
            self._reply(202, {"status": "OK"})
            return
        _, _, rest = path.partition("/invocation/")
        request_id, _, action = rest.partition("/")
        invocation = self.server.emulator.find(request_id)
        if invocation is None or action not in ("response", "error"):
            self._reply(404 if invocation is None else 400, {"errorMessage": "unknown invocation or action"})
            return
        self.server.emulator.forget(invocation)
        if action == "error":
            invocation.pieces.put(Piece("failed", error=self._json_body()))
            self._reply(202, {"status": "OK"})
        elif self._read_response(invocation):
            self._reply(202, {"status": "OK"})
        else:
            self.close_connection = True

    # ---- the streamed answer

    def _read_response(self, invocation: Invocation) -> bool:
        """Pass the answer on as it arrives; False when the connection was dropped (by either side)."""
        if not invocation._attach(self.connection):
            _reset(self.connection)
            return False
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        reader = _ChunkedBody(self.rfile) if chunked else None
        head: bytes | None = b""  # the prelude collected so far; None once it was passed on
        try:
            whole = [] if reader else [self.rfile.read(int(self.headers.get("Content-Length") or 0))]
            for chunk in reader.chunks() if reader else whole:
                if head is None:
                    invocation.pieces.put(Piece("data", chunk))
                    continue
                head += chunk
                meta, found, rest = head.partition(DELIMITER)
                if found:
                    piece = prelude_piece(meta)
                    invocation.pieces.put(piece)
                    if piece.kind == "failed":
                        invocation.abort()
                        return False
                    head = None
                    if rest:
                        invocation.pieces.put(Piece("data", rest))
                elif len(head) > MAX_PRELUDE_BYTES:
                    invocation.pieces.put(Piece("failed", error={"errorMessage": "no prelude in the first 16 KB"}))
                    invocation.abort()
                    return False
        except (OSError, ValueError) as exc:
            if not invocation.aborted:
                log.warning("%s: the runtime's answer broke off: %s", self.server.emulator.name, exc)
            invocation.pieces.put(Piece("broken" if head is None else "failed", error={"errorMessage": str(exc)}))
            return False
        finally:
            invocation._detach()
        trailers = reader.trailers if reader else {}
        if head is not None:  # a body without a prelude: API Gateway cannot read it
            invocation.pieces.put(Piece("failed", error={"errorMessage": "the answer has no prelude"}))
        elif ERROR_TYPE in trailers:
            invocation.pieces.put(Piece("broken", error={k: v for k, v in trailers.items() if k.startswith("lambda")}))
        else:
            invocation.pieces.put(Piece("end"))
        return True

    # ---- helpers

    def _json_body(self) -> dict[str, Any]:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            value = json.loads(raw or b"{}")
        except ValueError:
            return {"errorMessage": raw[:500].decode("utf-8", "replace")}
        return value if isinstance(value, dict) else {"error": value}

    def _reply(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


class _ChunkedBody:
    """Reads a chunked request body one chunk at a time, then its trailers."""

    def __init__(self, rfile: BinaryIO) -> None:
        self._rfile = rfile
        self.trailers: dict[str, str] = {}

    def chunks(self) -> Iterator[bytes]:
        while True:
            line = self._rfile.readline(1024)
            if not line:
                raise ConnectionError("the connection closed inside the chunked body")
            size = int(line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                self._read_trailers()
                return
            data = self._rfile.read(size)
            if len(data) < size or self._rfile.readline(8) not in (b"\r\n", b"\n"):
                raise ConnectionError("the connection closed inside a chunk")
            yield data

    def _read_trailers(self) -> None:
        while (line := self._rfile.readline(65536)) not in (b"\r\n", b"\n"):
            if not line:
                raise ConnectionError("the connection closed inside the trailers")
            name, _, value = line.decode("latin-1").partition(":")
            self.trailers[name.strip().lower()] = value.strip()
