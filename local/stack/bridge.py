"""The HTTP bridge standing in for API Gateway: routes, API keys, proxy events, handler calls."""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
import traceback
from concurrent.futures import TimeoutError as FutureTimeout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from local.stack.apigw import _gateway_error, api_gateway_event, http_response
from local.stack.settings import INTEGRATION_TIMEOUT_S, MAX_REQUEST_BYTES, UNKNOWN_ROUTE_STATUS

if TYPE_CHECKING:
    from local.stack.local_stack import LocalStack


class BridgeMixin:
    """Serves the template's API routes over HTTP and invokes the handlers for them."""

    def _start_bridge(self) -> None:
        self._server = _BridgeServer((self.host, self._port), self)
        port = self._server.server_address[1]
        self.api_url = f"http://{self.host}:{port}"
        self._server_thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="api-bridge", daemon=True
        )
        self._server_thread.start()

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
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """One API Gateway request: route, API key check, proxy event, handler, proxy response."""
        url = urlsplit(target)
        path = unquote(url.path) or "/"
        match = self.routes.match(method, path)
        if match is None:
            return _gateway_error(
                UNKNOWN_ROUTE_STATUS, "Missing Authentication Token", "MissingAuthenticationTokenException"
            )
        api_key = next((v for k, v in headers if k.lower() == "x-api-key"), None)
        tenant = self.api_keys.get(api_key) if api_key else None
        if match.route.api_key_required and tenant is None:
            return _gateway_error(403, "Forbidden", "ForbiddenException")
        event = api_gateway_event(
            match=match,
            method=method,
            path=path,
            query=url.query,
            headers=headers,
            body=body,
            source_ip=source_ip,
            stage=self.template.api_stage(match.route.api_id, self.resolver.resolve),
            api_key=api_key if match.route.api_key_required else None,
            tenant=tenant if match.route.api_key_required else None,
        )
        return self._invoke_for_http(match.route.function_id, event)

    def _invoke_for_http(self, lid: str, event: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
        assert self._workers is not None
        request_id = event["requestContext"]["requestId"]
        future = self._workers.submit(self.invoke, lid, event)
        try:
            status, headers, raw = http_response(future.result(timeout=INTEGRATION_TIMEOUT_S))
        except FutureTimeout:
            status, headers, raw = _gateway_error(504, "Endpoint request timed out", "IntegrationTimeout")
        except Exception:
            print(f"{lid} failed (request {request_id}):\n{traceback.format_exc()}", file=sys.stderr)
            status, headers, raw = _gateway_error(502, "Internal server error", "InternalServerErrorException")
        headers = [(k, v) for k, v in headers if k.lower() != "x-amzn-requestid"]
        return status, [*headers, ("x-amzn-RequestId", request_id)], raw


# --------------------------------------------------------------------------- bridge server


class _BridgeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], stack: LocalStack) -> None:
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

    def _serve(self) -> None:
        started = time.perf_counter()
        body = self._read_body()
        if body is None:
            status, headers, raw = _gateway_error(413, "Request Too Long", "RequestTooLarge")
            self.close_connection = True
        else:
            status, headers, raw = self.server.stack.handle_http(
                self.command, self.path, list(self.headers.items()), body, self.client_address[0]
            )
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(raw)
        if self.server.stack.log_requests:
            elapsed = (time.perf_counter() - started) * 1000
            print(f'{self.client_address[0]} "{self.command} {self.path}" {status} {elapsed:.1f}ms', file=sys.stderr)

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
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
