"""The Lambda Runtime API, spoken with ``http.client`` over one keep-alive connection.

Answers go out in Lambda's streaming response mode: ``Transfer-Encoding: chunked`` frames written on the
socket as they are produced (Nagle off, so each one leaves at once), and a failure after the first
bytes is reported in the trailers Lambda reads (``Lambda-Runtime-Function-Error-Type`` and ``-Body``).
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
from dataclasses import dataclass
from typing import Any

API_VERSION = "2018-06-01"
HTTP_INTEGRATION_CONTENT_TYPE = "application/vnd.awslambda.http-integration-response"
ERROR_TYPE_TRAILER = "Lambda-Runtime-Function-Error-Type"
ERROR_BODY_TRAILER = "Lambda-Runtime-Function-Error-Body"


class ResponseStreamBroken(Exception):
    """Writing the answer failed: Lambda closed the stream (the caller went away, or the invocation ended)."""


@dataclass(frozen=True)
class Invocation:
    """One event from ``/runtime/invocation/next`` with the headers that come with it."""

    request_id: str
    deadline_ms: int
    function_arn: str
    trace_id: str | None
    client_context: Any
    cognito_identity: Any
    event: bytes


@dataclass(frozen=True)
class ErrorReport:
    """What Lambda records of a failed invocation (the managed runtime's error shape)."""

    error_type: str  # the exception's class name
    message: str
    stack_trace: tuple[str, ...] = ()

    def payload(self) -> dict[str, Any]:
        return {"errorMessage": self.message, "errorType": self.error_type, "stackTrace": list(self.stack_trace)}


def _json_header(value: str | None) -> Any:
    if not value:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return None


class RuntimeApiClient:
    """``/next``, ``/response`` (streamed), ``/error`` and ``/init/error`` for one runtime process."""

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        # No timeout: /next blocks until Lambda has an event, by design.
        self._conn = http.client.HTTPConnection(host or address, int(port or 80), timeout=None)

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn.sock is None:
            self._conn.connect()
            sock: socket.socket = self._conn.sock  # type: ignore[assignment]  # set by connect()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self._conn

    def close(self) -> None:
        self._conn.close()

    def next_invocation(self) -> Invocation:
        conn = self._connection()
        conn.request("GET", f"/{API_VERSION}/runtime/invocation/next")
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"runtime API /next answered HTTP {response.status}: {body[:200]!r}")
        deadline = response.getheader("Lambda-Runtime-Deadline-Ms") or "0"
        return Invocation(
            request_id=response.getheader("Lambda-Runtime-Aws-Request-Id") or "",
            deadline_ms=int(deadline) if deadline.isdigit() else 0,
            function_arn=response.getheader("Lambda-Runtime-Invoked-Function-Arn") or "",
            trace_id=response.getheader("Lambda-Runtime-Trace-Id"),
            client_context=_json_header(response.getheader("Lambda-Runtime-Client-Context")),
            cognito_identity=_json_header(response.getheader("Lambda-Runtime-Cognito-Identity")),
            event=body,
        )

    def post_error(self, request_id: str, report: ErrorReport, *, error_type: str = "Unhandled") -> None:
        """The invocation failed before any byte of its answer was written."""
        self._post_json(f"/{API_VERSION}/runtime/invocation/{request_id}/error", report, error_type)

    def post_init_error(self, report: ErrorReport, *, error_type: str) -> None:
        self._post_json(f"/{API_VERSION}/runtime/init/error", report, error_type)

    def _post_json(self, path: str, report: ErrorReport, error_type: str) -> None:
        conn = self._connection()
        headers = {ERROR_TYPE_TRAILER: error_type, "Content-Type": "application/json"}
        conn.request("POST", path, body=json.dumps(report.payload()).encode(), headers=headers)
        conn.getresponse().read()

    def open_response(self, request_id: str) -> StreamedResponse:
        """Start the invocation's answer: headers only; the body follows chunk by chunk."""
        try:
            conn = self._connection()
            conn.putrequest("POST", f"/{API_VERSION}/runtime/invocation/{request_id}/response")
            conn.putheader("Lambda-Runtime-Function-Response-Mode", "streaming")
            conn.putheader("Transfer-Encoding", "chunked")
            conn.putheader("Content-Type", HTTP_INTEGRATION_CONTENT_TYPE)
            conn.putheader("Trailer", f"{ERROR_TYPE_TRAILER}, {ERROR_BODY_TRAILER}")
            conn.endheaders()
        except OSError as exc:
            self._conn.close()
            raise ResponseStreamBroken(str(exc)) from exc
        return StreamedResponse(self._conn)


class StreamedResponse:
    """The body of one streamed answer. Each ``write`` is one chunk on the wire, sent before it returns."""

    def __init__(self, conn: http.client.HTTPConnection) -> None:
        self._conn = conn
        self.bytes_written = 0

    def write(self, data: bytes) -> None:
        if not data:
            return  # an empty chunk would end the body
        self._send(b"%x\r\n%s\r\n" % (len(data), data))
        self.bytes_written += len(data)

    def finish(self) -> None:
        """The answer is complete: the last chunk, then Lambda's acknowledgement."""
        self._send(b"0\r\n\r\n")
        self._acknowledged()

    def fail(self, report: ErrorReport) -> None:
        """End the body with the error trailers: bytes are already out, so the status cannot change."""
        body = base64.b64encode(json.dumps({"errorMessage": report.message, "errorType": report.error_type}).encode())
        trailers = f"{ERROR_TYPE_TRAILER}: Function.{report.error_type}\r\n{ERROR_BODY_TRAILER}: {body.decode()}\r\n"
        self._send(b"0\r\n" + trailers.encode("ascii", "replace") + b"\r\n")
        self._acknowledged()

    def _send(self, frame: bytes) -> None:
        try:
            self._conn.send(frame)
        except OSError as exc:
            self._conn.close()  # the next request opens a new connection
            raise ResponseStreamBroken(str(exc)) from exc

    def _acknowledged(self) -> None:
        try:
            self._conn.getresponse().read()
        except (OSError, http.client.HTTPException) as exc:
            self._conn.close()
            raise ResponseStreamBroken(str(exc)) from exc
