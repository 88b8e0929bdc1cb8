"""The HTTP bridge standing in for API Gateway: its own errors in the documented ``{"error": {"code",
"message"}}`` shape, encoded slashes in path values, the integration timeout, throttling and bursts of
connections. Real sockets, the session's local stack (or a small one of its own)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from local.cfn import Template
from local.stack import MAX_REQUEST_BYTES, REPO_ROOT, LocalStack

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_real_aws")]

KEY = {"x-api-key": "key-a"}


@pytest.fixture
def api(local_stack: LocalStack) -> Iterator[httpx.Client]:
    assert local_stack.api_url
    with httpx.Client(base_url=local_stack.api_url, timeout=30) as client:
        yield client


def assert_documented_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


def raw_request(url: str, request: bytes) -> bytes:
    """Send bytes as they are (no client normalising the path or method) and read the whole answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(request)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


# --------------------------------------------------------------------------- error shapes


def test_unknown_routes_and_methods_are_404_route_not_found(api: httpx.Client, local_stack: LocalStack) -> None:
    assert_documented_error(api.get("/v1/nothing-here", headers=KEY), 404, "route_not_found")
    assert_documented_error(api.get("/v1/chat/completions", headers=KEY), 404, "route_not_found")
    assert_documented_error(api.request("PATCH", "/v1/summaries", headers=KEY), 404, "route_not_found")
    assert local_stack.api_url
    answer = raw_request(local_stack.api_url, b"BREW /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404") and b'"route_not_found"' in body


def test_an_encoded_slash_stays_in_its_path_value(api: httpx.Client, local_stack: LocalStack) -> None:
    seen: list[dict[str, Any]] = []

    def record(event: dict[str, Any], context: Any) -> dict[str, Any]:
        seen.append(event)
        return {"statusCode": 200, "body": "{}"}

    local_stack.handler_overrides["JobsFunction"] = record
    assert api.get("/v1/jobs/a%2Fb", headers=KEY).status_code == 200
    assert seen[0]["pathParameters"] == {"job_id": "a/b"} and seen[0]["resource"] == "/v1/jobs/{job_id}"
    assert seen[0]["path"] == "/v1/jobs/a%2Fb"  # REST APIs keep the path's encoding


def test_an_encoded_slash_reaches_the_real_handler_and_gets_its_documented_error(api: httpx.Client) -> None:
    assert_documented_error(api.get("/v1/jobs/a%2Fb", headers=KEY), 404, "job_not_found")


def test_a_body_over_10_mb_is_413_payload_too_large(api: httpx.Client) -> None:
    response = api.post("/v1/summaries", content=b"x" * (MAX_REQUEST_BYTES + 1), headers=KEY)
    assert_documented_error(response, 413, "payload_too_large")


def test_a_malformed_content_length_is_a_400_not_a_dropped_connection(local_stack: LocalStack) -> None:
    assert local_stack.api_url
    request = b"POST /v1/summaries HTTP/1.1\r\nHost: x\r\nx-api-key: key-a\r\nContent-Length: lots\r\n\r\n"
    head, _, body = raw_request(local_stack.api_url, request).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b'"invalid_request"' in body


# --------------------------------------------------------------------------- timeout


def test_a_slow_function_gets_504_gateway_timeout_without_stalling_other_callers(
    api: httpx.Client, local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local_stack, "integration_timeout_s", 1.0)
    release = threading.Event()

    def slow(event: Any, context: Any) -> dict[str, Any]:
        release.wait(10)
        return {"statusCode": 200, "body": "{}"}

    def fast(event: Any, context: Any) -> dict[str, Any]:
        return {"statusCode": 200, "body": '{"fast": true}'}

    local_stack.handler_overrides["SummarizationFunction"] = slow
    local_stack.handler_overrides["ExtractionFunction"] = fast
    try:
        with ThreadPoolExecutor(2) as pool:
            started = time.monotonic()
            slow_call = pool.submit(api.post, "/v1/summaries", json={}, headers=KEY)
            time.sleep(0.1)  # the slow request is in flight
            quick = api.post("/v1/extractions", json={}, headers=KEY)
            quick_took = time.monotonic() - started
            timed_out = slow_call.result()
            slow_took = time.monotonic() - started
    finally:
        release.set()
    assert quick.status_code == 200 and quick.json() == {"fast": True}
    assert quick_took < 1.0  # answered while the slow one was still running
    assert_documented_error(timed_out, 504, "gateway_timeout")
    assert "1 s" in timed_out.json()["error"]["message"]
    assert 1.0 <= slow_took < 5.0


# --------------------------------------------------------------------------- connections


def test_the_listen_backlog_takes_a_burst_of_connections(local_stack: LocalStack) -> None:
    server = local_stack._server
    assert server is not None and server.request_queue_size >= 128
    assert local_stack.api_url
    host, port = local_stack.api_url.removeprefix("http://").split(":")
    opened = [socket.create_connection((host, int(port)), timeout=10) for _ in range(150)]  # all at once
    try:
        for conn in opened[:: len(opened) // 10]:
            conn.sendall(b"GET /v1/nothing-here HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert conn.recv(12) == b"HTTP/1.1 404"
    finally:
        for conn in opened:
            conn.close()


# --------------------------------------------------------------------------- throttling

THROTTLED_TEMPLATE = """
Transform: AWS::Serverless-2016-10-31
Resources:
  Api:
    Type: AWS::Serverless::Api
    Properties:
      StageName: test
      Auth:
        ApiKeyRequired: true
        UsagePlan: {CreateUsagePlan: PER_API, Throttle: {RateLimit: 1, BurstLimit: 3}}
  EchoFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: {echo_dir}
      Handler: app.lambda_handler
      Events:
        Echo: {Type: Api, Properties: {RestApiId: !Ref Api, Path: /echo, Method: get}}
"""


def test_the_usage_plan_throttle_is_429_rate_limited_per_key(tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    template.write_text(
        THROTTLED_TEMPLATE.replace("{echo_dir}", str(REPO_ROOT / "tests" / "fixtures" / "echo_function"))
    )
    stack = LocalStack(
        template, port=0, api_keys={"k1": "t1", "k2": "t2"}, simulate=False, event_sources=False, throttle=True
    )
    stack.handler_overrides["EchoFunction"] = lambda event, context: {"statusCode": 200, "body": "{}"}
    with stack, httpx.Client(base_url=stack.api_url or "", timeout=10) as client:
        burst = [client.get("/echo", headers={"x-api-key": "k1"}).status_code for _ in range(3)]
        assert burst == [200, 200, 200]
        assert_documented_error(client.get("/echo", headers={"x-api-key": "k1"}), 429, "rate_limited")
        assert client.get("/echo", headers={"x-api-key": "k2"}).status_code == 200  # per key
        time.sleep(1.1)  # one token back at 1 per second
        assert client.get("/echo", headers={"x-api-key": "k1"}).status_code == 200


def test_the_template_stage_throttle_is_read() -> None:
    # No usage plan (gateway keys are checked by the functions): the stage's MethodSettings throttle all.
    template = Template.load(REPO_ROOT / "template.yaml")
    assert template.api_throttle("GatewayApi", lambda value: value) == (50.0, 100)
