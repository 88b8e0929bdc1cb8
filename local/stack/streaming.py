"""Routes wired for response streaming (``ResponseTransferMode: STREAM``), served as deployed.

The function runs under ``llm_gateway.stream_runtime``'s loop, as ``AWS_LAMBDA_EXEC_WRAPPER`` runs it on
Lambda, in one of the stack's worker threads and against a local Runtime API (one per function, real HTTP).
The bridge writes the answer to its client as it arrives: the prelude's status and headers, then each chunk
with ``Transfer-Encoding: chunked``, flushed at once. Like API Gateway: an ``/error`` before any byte is a
502; error trailers (or a runtime that stops mid-stream) end the client's response without its last chunk;
a client that goes away makes the bridge reset the runtime's connection, so the producer is closed.
"""

from __future__ import annotations

import contextlib
import queue
import select
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

from local.routes import ApiRoute
from local.stack.apigw import GATEWAY_TIMEOUT, INTEGRATION_FAILED, gateway_error
from local.stack.handlers import invoking
from local.stack.runtime_api import Invocation, Piece, RuntimeApiEmulator

STREAM_MAX_DURATION_S = 15 * 60  # API Gateway's longest streamed response
STREAM_IDLE_TIMEOUT_S = 5 * 60  # between two chunks, on regional endpoints
_CLIENT_CHECK_S = 0.1  # how often an idle stream looks whether its client is still there
CLIENT_CLOSED_REQUEST = 499  # for the request log only: nothing is sent to a client that left
CLIENT_GONE = Piece("broken", error={"errorMessage": "the client closed the connection"})


class StreamingMixin:
    """Streaming routes for ``LocalStack``: per-function Runtime API emulators and the runtime-loop jobs."""

    stream_idle_timeout_s: float = STREAM_IDLE_TIMEOUT_S
    _stream_emulators: dict[str, RuntimeApiEmulator]
    _stream_lock: threading.Lock

    def _invoke_streaming(self, route: ApiRoute, event: dict[str, Any]) -> StreamedAnswer:
        lid = route.function_id
        spec = self.functions[lid]  # type: ignore[attr-defined]
        arn = self.new_context(lid).invoked_function_arn  # type: ignore[attr-defined]
        invocation = Invocation(event, timeout_s=spec.timeout_s, function_arn=arn)
        emulator = self._stream_emulator(lid)
        emulator.submit(invocation)
        self._workers.submit(self._run_stream_runtime, lid, emulator)  # type: ignore[attr-defined]
        limit = route.timeout_s or self.integration_timeout_s  # type: ignore[attr-defined]
        return StreamedAnswer(
            invocation,
            function=lid,
            request_id=event["requestContext"]["requestId"],
            timeout_s=min(limit, STREAM_MAX_DURATION_S),
            idle_timeout_s=self.stream_idle_timeout_s,
        )

    def _stream_emulator(self, lid: str) -> RuntimeApiEmulator:
        with self._stream_lock:
            emulator = self._stream_emulators.get(lid)
            if emulator is None:
                emulator = self._stream_emulators[lid] = RuntimeApiEmulator(lid)
            return emulator

    def _stop_stream_emulators(self) -> None:
        with self._stream_lock:
            emulators, self._stream_emulators = list(self._stream_emulators.values()), {}
        for emulator in emulators:
            emulator.stop()

    def _run_stream_runtime(self, lid: str, emulator: RuntimeApiEmulator) -> None:
        """One worker job: the runtime loop serves exactly one invocation, then the thread is free again."""
        from llm_gateway.stream_runtime.context import FunctionInfo
        from llm_gateway.stream_runtime.runtime import RuntimeLoop
        from llm_gateway.stream_runtime.runtime_api import RuntimeApiClient

        stack: Any = self
        try:
            handler = stack.handler_overrides.get(lid) or stack._load_handler(lid)
        except Exception as exc:  # an init failure: the invocation fails, as Lambda's would (502)
            handler = _failing_handler(exc)
        spec = stack.functions[lid]
        name = stack._name(lid)
        info = FunctionInfo(name, memory_limit_in_mb=spec.memory_mb, log_group_name=f"/aws/lambda/{name}")
        stack._pacing.wait_for_earlier(lid, spec.timeout_s)
        # One keep-alive connection per worker thread and emulator, as a sandbox keeps its own.
        clients = _thread_clients.__dict__.setdefault("by_address", {})
        client = clients.get(emulator.address)
        if client is None:
            client = clients[emulator.address] = RuntimeApiClient(emulator.address)
        try:
            with stack._function_env(lid), invoking(name):
                RuntimeLoop(client, handler, info).serve(1)
        except Exception:
            client.close()  # reconnects on its next use
            raise
        finally:
            stack._pacing.invocation_ended(lid)


_thread_clients = threading.local()


def _failing_handler(exc: Exception) -> Any:
    def handler(event: Any, context: Any) -> Any:
        raise exc

    return handler


class StreamedAnswer:
    """What the bridge writes for a streaming route, piece by piece as the runtime produces it."""

    def __init__(
        self, invocation: Invocation, *, function: str, request_id: str, timeout_s: float, idle_timeout_s: float
    ) -> None:
        self.invocation = invocation
        self.function = function
        self.request_id = request_id
        self.deadline = time.monotonic() + timeout_s
        self.timeout_s = timeout_s
        self.idle_timeout_s = idle_timeout_s

    def write_to(self, client: BaseHTTPRequestHandler) -> int:
        """Answer ``client``; the status for the request log."""
        head = self._next(client.connection, first=True)
        if head is CLIENT_GONE:
            self.invocation.abort()
            client.close_connection = True
            return CLIENT_CLOSED_REQUEST
        if head is None or head.kind != "head":
            return self._refuse(client, head)
        client.send_response(head.status)
        for name, value in head.headers:
            if name.lower() not in ("content-length", "transfer-encoding", "connection", "x-amzn-requestid"):
                client.send_header(name, value)
        if not any(name.lower() == "content-type" for name, _ in head.headers):
            client.send_header("Content-Type", "application/json")  # as on the buffered routes
        client.send_header("Transfer-Encoding", "chunked")
        client.send_header("x-amzn-RequestId", self.request_id)
        try:
            client.end_headers()
            while (piece := self._next(client.connection)) is not None and piece.kind == "data":
                client.wfile.write(b"%x\r\n%s\r\n" % (len(piece.data), piece.data))
            if piece is not None and piece.kind == "end":
                client.wfile.write(b"0\r\n\r\n")
                return head.status
        except OSError:  # the client went away mid-write
            pass
        # Error trailers, a runtime gone, a timeout or a client gone: no last chunk, the connection closes.
        self.invocation.abort()
        client.close_connection = True
        return head.status

    def _refuse(self, client: BaseHTTPRequestHandler, piece: Piece | None) -> int:
        self.invocation.abort()
        if piece is None:
            status, headers, raw = gateway_error(GATEWAY_TIMEOUT, timeout=self.timeout_s)
        else:
            print(f"{self.function} failed (request {self.request_id}): {piece.error}", file=sys.stderr)
            status, headers, raw = gateway_error(INTEGRATION_FAILED)
        headers = [(k, v) for k, v in headers if k.lower() != "x-amzn-requestid"]
        client.send_response(status)
        for name, value in [*headers, ("x-amzn-RequestId", self.request_id), ("Content-Length", str(len(raw)))]:
            client.send_header(name, value)
        with contextlib.suppress(OSError):
            client.end_headers()
            client.wfile.write(raw)
        return status

    def _next(self, conn: socket.socket, *, first: bool = False) -> Piece | None:
        """The next piece; None when the stream timed out, :data:`CLIENT_GONE` when the client left."""
        idle_until = time.monotonic() + (self.timeout_s if first else self.idle_timeout_s)
        watch_client = True
        while True:
            now = time.monotonic()
            wait = min(self.deadline, idle_until) - now
            if wait <= 0:
                return None
            try:
                return self.invocation.pieces.get(timeout=min(wait, _CLIENT_CHECK_S))
            except queue.Empty:
                pass
            if watch_client:
                gone = _client_gone(conn)
                if gone is None:
                    watch_client = False  # it sent more (a pipelined request): only a write tells now
                elif gone:
                    return CLIENT_GONE


def _client_gone(conn: socket.socket) -> bool | None:
    """True when the client closed its side, False when it is quiet, None when it sent more bytes."""
    try:
        readable, _, _ = select.select([conn], [], [], 0)
        if not readable:
            return False
        return True if not conn.recv(1, socket.MSG_PEEK) else None
    except OSError:
        return True
