"""The bridge on a route wired for response streaming (``ResponseTransferMode: RESPONSE_STREAM``): the
function runs under the streaming runtime loop against the local Runtime API, and the client gets the answer
chunk by chunk as API Gateway passes it on. Real sockets; a small template of its own (no gateway code)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from local.cfn import Template, TemplateError
from local.stack import REPO_ROOT, LocalStack

pytestmark = pytest.mark.integration

FIXTURE_DIR = REPO_ROOT / "tests" / "fixtures" / "stream_function"
TEMPLATE = """
Transform: AWS::Serverless-2016-10-31
Resources:
  Api:
    Type: AWS::Serverless::Api
    Properties: {StageName: test}
  StreamFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: {fixture_dir}
      Handler: app.lambda_handler
      Timeout: 900
      MemorySize: 256
      Events:
        Stream:
          Type: Api
          Properties: {RestApiId: !Ref Api, Path: /stream, Method: post, ResponseTransferMode: RESPONSE_STREAM}
  BufferedFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: {fixture_dir}
      Handler: app.lambda_handler
      Events:
        Buffered: {Type: Api, Properties: {RestApiId: !Ref Api, Path: /buffered, Method: post}}
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    path = tmp_path_factory.mktemp("stream") / "template.yaml"
    path.write_text(TEMPLATE.replace("{fixture_dir}", str(FIXTURE_DIR)))
    with LocalStack(
        path, port=0, api_keys={"k": "t"}, simulate=False, event_sources=False, stream_idle_timeout_s=1.0
    ) as stack:
        yield stack


@pytest.fixture(scope="module")
def records(stack: LocalStack) -> dict[str, Any]:
    handler = stack._load_handler("StreamFunction")
    return handler.__globals__["RECORDS"]  # type: ignore[attr-defined,no-any-return]


def body(token: str, mode: str, **options: Any) -> bytes:
    return json.dumps({"token": token, "mode": mode, **options}).encode()


class RawResponse:
    """An HTTP/1.1 response read straight off the socket: head, then the chunks as they arrive."""

    def __init__(self, url: str, path: str, payload: bytes) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.conn = socket.create_connection((host, int(port)), timeout=15)
        request = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        self.conn.sendall(f"{request}Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
        self.file = self.conn.makefile("rb")
        status_line = self.file.readline()
        self.status = int(status_line.split()[1])
        self.headers: list[tuple[str, str]] = []
        while (line := self.file.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            self.headers.append((name.strip().lower(), value.strip()))

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)

    def next_chunk(self) -> bytes | None:
        """The next chunk's data; b"" for the last (0) chunk; None when the connection closed without it."""
        line = self.file.readline()
        if not line:
            return None
        size = int(line.strip(), 16)
        data = self.file.read(size)
        self.file.readline()
        return data

    def close(self) -> None:
        self.file.close()
        self.conn.close()


def test_a_non_streamed_answer_on_a_streaming_route_looks_as_on_a_buffered_route(stack: LocalStack) -> None:
    with httpx.Client(base_url=stack.api_url or "", timeout=15) as client:
        streamed = client.post("/stream", content=body("b1", "buffered"))
        buffered = client.post("/buffered", content=body("b2", "buffered"))
    assert streamed.status_code == buffered.status_code == 201
    assert streamed.content == buffered.content == b"\x00binary\xff"

    def comparable(response: httpx.Response) -> list[tuple[str, str]]:
        framing = ("content-length", "transfer-encoding", "x-amzn-requestid", "date", "server")
        return sorted((k, v) for k, v in response.headers.multi_items() if k not in framing)

    assert comparable(streamed) == comparable(buffered)
    assert streamed.headers.get_list("set-cookie") == ["a=1", "b=2"]
    assert streamed.headers["x-amzn-requestid"]


def test_the_client_reads_the_first_chunk_before_the_handler_produced_the_last(
    stack: LocalStack, records: dict[str, Any]
) -> None:
    answer = RawResponse(stack.api_url or "", "/stream", body("slow", "stream", chunks=4, delay_s=0.3))
    try:
        assert answer.status == 200
        assert answer.header("transfer-encoding") == "chunked"
        assert answer.header("content-type") == "text/event-stream" and answer.header("set-cookie") == "s=1"
        first = answer.next_chunk()
        first_at = time.monotonic()
        rest = [answer.next_chunk() for _ in range(4)]
    finally:
        answer.close()
    assert first == b"data: 0\n\n"
    assert rest == [b"data: 1\n\n", b"data: 2\n\n", b"data: 3\n\n", b""]  # each item its own chunk, then the end
    produced = records["slow"]["produced"]
    assert first_at < produced[-1] - 0.5  # read 0.9 s of production before the last chunk existed
    assert first_at - produced[0] < 0.25


def test_an_exception_mid_stream_cuts_the_response_without_its_last_chunk(stack: LocalStack) -> None:
    answer = RawResponse(stack.api_url or "", "/stream", body("mid", "fail_mid"))
    try:
        assert answer.status == 200
        assert answer.next_chunk() == b"data: 0\n\n"
        assert answer.next_chunk() is None  # the connection closed: no terminating 0-chunk
    finally:
        answer.close()
    # What an HTTP client sees: an incomplete body, an error, never a clean end.
    with httpx.Client(base_url=stack.api_url or "", timeout=15) as client, pytest.raises(httpx.RemoteProtocolError):
        client.post("/stream", content=body("mid2", "fail_mid"))


def test_an_exception_before_any_byte_is_a_502_like_api_gateways(stack: LocalStack) -> None:
    with httpx.Client(base_url=stack.api_url or "", timeout=15) as client:
        response = client.post("/stream", content=body("raise", "raise"))
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "internal_error"
    assert response.headers["x-amzn-errortype"] == "InternalServerErrorException"


def test_a_client_that_disconnects_closes_the_producer(stack: LocalStack, records: dict[str, Any]) -> None:
    answer = RawResponse(stack.api_url or "", "/stream", body("gone", "endless", delay_s=0.05))
    assert answer.next_chunk() == b"data: 0\n\n"
    answer.close()
    closed_within = time.monotonic() + 5
    while records["gone"]["closed"] is None and time.monotonic() < closed_within:
        time.sleep(0.02)
    assert records["gone"]["closed"] == "GeneratorExit"  # its finally ran: the provider call would stop
    assert len(records["gone"]["produced"]) < 40


def test_a_stream_silent_past_the_idle_timeout_is_cut(stack: LocalStack, records: dict[str, Any]) -> None:
    answer = RawResponse(stack.api_url or "", "/stream", body("idle", "stream", chunks=2, delay_s=2.0))
    try:
        assert answer.next_chunk() == b"data: 0\n\n"
        started = time.monotonic()
        assert answer.next_chunk() is None  # cut after 1 s without a chunk (the stack's idle timeout)
        assert time.monotonic() - started < 1.9
    finally:
        answer.close()


def test_keep_alive_serves_the_next_request_after_a_stream(stack: LocalStack) -> None:
    with httpx.Client(base_url=stack.api_url or "", timeout=15) as client:
        first = client.post("/stream", content=body("ka1", "stream", chunks=2))
        second = client.post("/stream", content=body("ka2", "buffered"))
    assert first.status_code == 200 and first.text == "data: 0\n\ndata: 1\n\n"
    assert second.status_code == 201


def test_the_route_reads_its_transfer_mode_and_refuses_a_spelling_sam_would_deploy_buffered(tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    path.write_text(TEMPLATE.replace("{fixture_dir}", str(FIXTURE_DIR)))
    modes = {route.path: route.transfer_mode for route in Template.load(path).api_routes()}
    assert modes == {"/stream": "STREAM", "/buffered": "BUFFERED"}
    path.write_text(TEMPLATE.replace("{fixture_dir}", str(FIXTURE_DIR)).replace("RESPONSE_STREAM", "STREAM"))
    with pytest.raises(TemplateError, match="RESPONSE_STREAM"):
        Template.load(path).api_routes()


def test_the_stream_function_runs_with_its_own_context(stack: LocalStack, records: dict[str, Any]) -> None:
    with httpx.Client(base_url=stack.api_url or "", timeout=15) as client:
        assert client.post("/stream", content=body("ctx", "buffered")).status_code == 201
    assert 850_000 < records["ctx"]["remaining_ms"] <= 900_000  # the function's 900 s, from the deadline
