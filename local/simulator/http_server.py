"""The simulator's HTTP plumbing: a threading HTTP/1.1 server, routing of paths to dialects, and the
writing of answers (whole, or streamed chunk by chunk)."""

from __future__ import annotations

import re
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from local.simulator import embeddings, guardrails
from local.simulator.streams import write_stream
from local.simulator.wire import Response, _json_response

if TYPE_CHECKING:
    from local.simulator.server import ProviderSimulator

_GEMINI_ROUTE = re.compile(r"^/gemini/(v1beta|v1)/models/([^/]+):(generateContent|streamGenerateContent)$")
_BEDROCK_ROUTE = re.compile(r"^/bedrock/model/([^/]+)/(converse|converse-stream)$")
_GEMINI_EMBED = re.compile(r"^/gemini/(v1beta|v1)/models/([^/]+):batchEmbedContents$")
_BEDROCK_INVOKE = re.compile(r"^/bedrock/model/([^/]+)/invoke$")
_AZURE_ROUTE = re.compile(r"^/azure/openai/deployments/([^/]+)/chat/completions$")


# --------------------------------------------------------------------------- HTTP plumbing


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default listen backlog of 5 resets connections when a client opens many at once
    # (parallel summarization opens 16): real providers accept such bursts.
    request_queue_size = 128
    sim: ProviderSimulator


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so clients reuse connections like with real APIs
    disable_nagle_algorithm = True
    server_version = "provider-sim/1.0"
    server: _Server

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.sim.verbose:
            super().log_message(format, *args)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self, method: str) -> None:
        sim = self.server.sim
        split = urlsplit(self.path)
        path = split.path
        query = {k: v[0] for k, v in parse_qs(split.query).items()}
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            raw = self._read_body()
            if path.startswith("/_sim/"):
                self._send(sim.handle_control(method, path, query, raw))
                return
            epoch = sim.epoch()
            embedding = self._embedding_route(method, path)
            guardrail = guardrails.ROUTE.match(path) if method == "POST" else None
            if guardrail is not None:  # ApplyGuardrail (local/simulator/guardrails.py)
                provider, model = "bedrock_guardrail", guardrail.group(1)
                resp, body = guardrails.handle(sim.guardrail, headers, raw, guardrail)
            elif embedding is not None:
                provider, path_model = embedding
                resp, body, model = embeddings.handle(sim, provider, headers, query, raw, path_model)
            else:
                provider, path_model, streamed_route = self._route(method, path)
                if provider is None:
                    self._send(self._not_found(method, path))
                    return
                resp, body, model = sim.handle_provider(provider, headers, query, raw, path_model, streamed_route)
            # The path is recorded without the query string: Gemini keys may travel in ?key=.
            call = {
                "provider": provider,
                "model": model,
                "path": path,
                "body": body,
                "fault": resp.fault,
                "status": resp.status if resp.body is not None else None,
                "ts": time.time(),
                "deployment": resp.deployment,
            }
            sim.record(call, epoch)
            if resp.events is not None:
                # {"events_sent": n, "outcome": ...}: how the stream went, "client_closed" included
                sim.update_call(call, stream=write_stream(self, resp, sim.chunk_delay_s(headers)))
                return
            self._send(resp)
        except Exception as exc:  # never let a simulator bug hang the client
            self.log_error("simulator error: %r", exc)
            self._send(_json_response(500, {"error": {"message": f"simulator error: {exc!r}"}}))

    @staticmethod
    def _embedding_route(method: str, path: str) -> tuple[str, str] | None:
        """(provider, the model named in the path) of an embedding endpoint."""
        if method != "POST":
            return None
        if path == "/openai/v1/embeddings":
            return "openai", ""
        if match := _GEMINI_EMBED.match(path):
            return "gemini", unquote(match.group(2))
        if match := _BEDROCK_INVOKE.match(path):
            return "bedrock", unquote(match.group(1))
        return None

    @staticmethod
    def _route(method: str, path: str) -> tuple[str | None, str | None, bool]:
        """(provider, the model named in the path, whether the path itself asks for a stream)."""
        if method != "POST":
            return None, None, False
        if path == "/openai/v1/chat/completions":
            return "openai", None, False
        if path == "/compat/v1/chat/completions":
            return "compat", None, False
        if path == "/anthropic/v1/messages":
            return "anthropic", None, False
        match = _GEMINI_ROUTE.match(path)
        if match:
            return "gemini", unquote(match.group(2)), match.group(3) == "streamGenerateContent"
        match = _BEDROCK_ROUTE.match(path)
        if match:
            return "bedrock", unquote(match.group(1)), match.group(2) == "converse-stream"
        match = _AZURE_ROUTE.match(path)
        if match:
            return "azure", unquote(match.group(1)), False
        return None, None, False

    def _not_found(self, method: str, path: str) -> Response:
        dialects = self.server.sim._dialects
        for prefix, name in (
            ("/openai/", "openai"),
            ("/compat/", "compat"),
            ("/anthropic/", "anthropic"),
            ("/gemini/", "gemini"),
            ("/bedrock/", "bedrock"),
            ("/azure/", "azure"),
        ):
            if path.startswith(prefix):
                return dialects[name].not_found(method, path.removeprefix(prefix.rstrip("/")))
        return _json_response(404, {"error": {"message": f"Not found: {method} {path}", "code": 404}})

    def _send(self, resp: Response) -> None:
        if resp.body is None:  # "drop": close the socket without a status line
            self.close_connection = True
            return
        reason = {529: "Overloaded"}.get(resp.status)
        try:
            self.send_response(resp.status, reason)
            for key, value in resp.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(resp.body)))
            self.end_headers()
            self.wfile.write(resp.body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # client gave up (e.g. timed out on a "slow" fault)
