"""The HTTP bridge standing in for API Gateway: routes, API keys, proxy events, handler calls."""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
import traceback
from concurrent.futures import TimeoutError as FutureTimeout
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from local.routes import RouteMatch, RouteTable
from local.stack.apigw import (
    GATEWAY_TIMEOUT,
    INTEGRATION_FAILED,
    INVALID_API_KEY,
    MALFORMED_REQUEST,
    MISSING_API_KEY,
    PAYLOAD_TOO_LARGE,
    RATE_LIMITED,
    ROUTE_NOT_FOUND,
    api_gateway_event,
    gateway_error,
    http_response,
)
from local.stack.settings import LISTEN_BACKLOG, MAX_REQUEST_BYTES
from local.stack.streaming import StreamedAnswer
from local.stack.throttle import KeyThrottle

HttpAnswer = tuple[int, list[tuple[str, str]], bytes] | StreamedAnswer  # buffered, or written as it comes


class _Served(Protocol):
    """What the server needs of the stack it serves (``LocalStack`` is one): a protocol, so that this
    module, which ``local_stack`` mixes in, does not import it back."""

    log_requests: bool
    routes: RouteTable

    def handle_http(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes, source_ip: str
    ) -> HttpAnswer: ...


class BridgeMixin:
    """Serves the template's API routes over HTTP and invokes the handlers for them."""

    def _start_bridge(self) -> None:
        self._throttles = self._make_throttles() if self.throttle else {}
        self._server = _BridgeServer((self.host, self._port), self)
        port = self._server.server_address[1]
        self.api_url = f"http://{self.host}:{port}"
        self._server_thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="api-bridge", daemon=True
        )
        self._server_thread.start()

    def _make_throttles(self) -> dict[str, KeyThrottle]:
        """One token bucket per API key for each API whose usage plan sets a Throttle."""
        throttles = {}
        for api_id in {route.api_id for route in self.routes.routes}:
            limits = self.template.api_throttle(api_id, self.resolver.resolve)
            if limits is not None:
                throttles[api_id] = KeyThrottle(*limits)
        return throttles

    def _stop_bridge(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._server_thread is not None:
            self._server_thread.join(timeout=10)
            self._server_thread = None

    def handle_http(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes, source_ip: str
    ) -> HttpAnswer:
        """One API Gateway request: route, API key check, throttle, proxy event, handler, proxy response
        (on a streaming route, an answer the server writes as the function produces it)."""
        url = urlsplit(target)
        raw_path = url.path or "/"
        # As API Gateway REST: routes match the path as sent, so an encoded slash (%2F) stays inside its
        # path parameter; parameter values are decoded (GET /v1/jobs/a%2Fb -> "a/b"); the event's
        # ``path`` keeps the encoding.
        found = self.routes.match(method, raw_path)
        if found is None:
            return gateway_error(ROUTE_NOT_FOUND)
        match = RouteMatch(found.route, {name: unquote(value) for name, value in found.path_parameters.items()})
        # API Gateway's own API-key check, for templates that ask for it (the gateway's template does not:
        # its functions' edge checks gateway keys, here as deployed).
        api_key = next((v for k, v in headers if k.lower() == "x-api-key"), None) or None
        tenant = self.api_keys.get(api_key) if api_key else None
        if match.route.api_key_required:
            if api_key is None:
                return gateway_error(MISSING_API_KEY)
            if tenant is None:
                return gateway_error(INVALID_API_KEY)
        throttle = self._throttles.get(match.route.api_id)
        bucket = (api_key or "") if match.route.api_key_required else ""  # usage plan: per key; stage: one
        if throttle is not None and not throttle.allow(bucket):
            return gateway_error(RATE_LIMITED)
        event = api_gateway_event(
            match=match,
            method=method,
            path=raw_path,
            query=url.query,
            headers=headers,
            body=body,
            source_ip=source_ip,
            stage=self.template.api_stage(match.route.api_id, self.resolver.resolve),
            api_key=api_key if match.route.api_key_required else None,
            tenant=tenant if match.route.api_key_required else None,
        )
        if match.route.streams:
            return self._invoke_streaming(match.route, event)  # type: ignore[attr-defined]  # StreamingMixin
        return self._invoke_for_http(match.route.function_id, event)

    def _invoke_for_http(self, lid: str, event: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
        """The function's answer, or API Gateway's own 504 once ``integration_timeout_s`` has passed (the
        function keeps running on its worker, as a Lambda invocation would; other requests have theirs)."""
        assert self._workers is not None
        request_id = event["requestContext"]["requestId"]
        future = self._workers.submit(self.invoke, lid, event)
        try:
            status, headers, raw = http_response(future.result(timeout=self.integration_timeout_s))
        except FutureTimeout:
            status, headers, raw = gateway_error(GATEWAY_TIMEOUT, timeout=self.integration_timeout_s)
        except Exception:
            print(f"{lid} failed (request {request_id}):\n{traceback.format_exc()}", file=sys.stderr)
            status, headers, raw = gateway_error(INTEGRATION_FAILED)
        headers = [(k, v) for k, v in headers if k.lower() != "x-amzn-requestid"]
        return status, [*headers, ("x-amzn-RequestId", request_id)], raw


# --------------------------------------------------------------------------- bridge server


class _BridgeServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 resets connections when many clients connect at once.
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address: tuple[str, int], stack: _Served) -> None:
        self.stack = stack
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _BridgeHandler)

    def track(self, conn: socket.socket, *, add: bool) -> None:
        with self._connections_lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def close_connections(self) -> None:
        """Wake keep-alive connection threads blocked on read so they exit now."""
        with self._connections_lock:
            for conn in self._connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            self._connections.clear()


class _BridgeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every response carries Content-Length
    disable_nagle_algorithm = True  # else each response waits ~40 ms for a delayed ACK
    server_version = "llm-gateway-local"
    timeout = 300  # idle keep-alive connections are closed after this
    server: _BridgeServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        self.server.track(self.connection, add=False)
        with contextlib.suppress(OSError):
            super().finish()

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (unknown method, malformed request line or headers) in the API's shape."""
        if code == HTTPStatus.NOT_IMPLEMENTED:  # a method no route has
            status, headers, raw = gateway_error(ROUTE_NOT_FOUND)
        else:
            status, headers, raw = gateway_error(MALFORMED_REQUEST, detail=message or HTTPStatus(code).phrase)
            if code in (HTTPStatus.REQUEST_URI_TOO_LONG, HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE):
                status = code
        self.close_connection = True
        self._write(status, headers, raw)

    def _serve(self) -> None:
        started = time.perf_counter()
        try:
            body = self._read_body()
        except ValueError as exc:  # a Content-Length or chunk size that is not a number
            status, headers, raw = gateway_error(MALFORMED_REQUEST, detail=str(exc))
            self.close_connection = True
        else:
            if body is None:
                status, headers, raw = gateway_error(PAYLOAD_TOO_LARGE)
                self.close_connection = True  # the unread body is still on the connection
            else:
                answer = self.server.stack.handle_http(
                    self.command, self.path, list(self.headers.items()), body, self.client_address[0]
                )
                if isinstance(answer, StreamedAnswer):
                    status = answer.write_to(self)
                    self._log(started, status)
                    return
                status, headers, raw = answer
        self._write(status, headers, raw)
        self._log(started, status)

    def _log(self, started: float, status: int) -> None:
        if self.server.stack.log_requests:
            elapsed = (time.perf_counter() - started) * 1000
            route = self.server.stack.routes.match(self.command, urlsplit(self.path).path)
            function = f" {route.route.function_id}" if route else ""
            print(
                f'{self.client_address[0]} "{self.command} {self.path}" {status} {elapsed:.1f}ms{function}',
                file=sys.stderr,
            )

    def _write(self, status: int, headers: list[tuple[str, str]], raw: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(raw)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(raw)

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0:
            raise ValueError(f"negative Content-Length {length}")
        if length > MAX_REQUEST_BYTES:
            return None
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes | None:
        parts: list[bytes] = []
        total = 0
        while True:
            size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                    pass
                return b"".join(parts)
            total += size
            if total > MAX_REQUEST_BYTES:
                return None
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request is printed by _serve when log_requests is on
