"""The streaming runtime loop (``llm_gateway.stream_runtime``) against the local Runtime API emulator, over
real sockets: buffered answers in one piece, streamed chunks as they are produced, error trailers, the
error endpoint, a closed stream closing the producer, after-response work between the answer and the next
event, and the exec wrapper running the loop in a process of its own."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from typing import Any

import pytest

from llm_gateway import after_response
from llm_gateway.stream_runtime.context import FunctionInfo
from llm_gateway.stream_runtime.runtime import RuntimeLoop
from llm_gateway.stream_runtime.runtime_api import RuntimeApiClient
from local.stack import REPO_ROOT
from local.stack.apigw import http_response
from local.stack.runtime_api import Invocation, Piece, RuntimeApiEmulator

pytestmark = pytest.mark.integration

FIXTURE_DIR = REPO_ROOT / "tests" / "fixtures" / "stream_function"
WRAPPER = REPO_ROOT / "layers" / "gateway" / "llm_gateway" / "stream_runtime" / "wrapper"
ARN = "arn:aws:lambda:us-east-1:123456789012:function:stream-test"
FINAL = ("end", "broken", "failed")


@pytest.fixture(scope="module")
def app() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("stream_runtime_test_app", FIXTURE_DIR / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def emulator() -> Iterator[RuntimeApiEmulator]:
    emulator = RuntimeApiEmulator("stream-test")
    yield emulator
    emulator.stop()


def request(token: str, mode: str, **options: Any) -> dict[str, Any]:
    return {"httpMethod": "POST", "path": "/stream", "body": json.dumps({"token": token, "mode": mode, **options})}


def start_loop(emulator: RuntimeApiEmulator, handler: Any, invocations: int = 1) -> threading.Thread:
    client = RuntimeApiClient(emulator.address)
    loop = RuntimeLoop(client, handler, FunctionInfo("stream-test", memory_limit_in_mb=256))
    thread = threading.Thread(target=loop.serve, args=(invocations,), daemon=True)
    thread.start()
    return thread


def submit(emulator: RuntimeApiEmulator, event: dict[str, Any]) -> Invocation:
    invocation = Invocation(event, timeout_s=30, function_arn=ARN)
    emulator.submit(invocation)
    return invocation


def pieces(invocation: Invocation, timeout_s: float = 15) -> list[Piece]:
    found: list[Piece] = []
    while not found or found[-1].kind not in FINAL:
        found.append(invocation.pieces.get(timeout=timeout_s))
    return found


# --------------------------------------------------------------------------- answers


def test_a_buffered_answer_is_the_proxy_answer_in_one_piece(
    app: types.ModuleType, emulator: RuntimeApiEmulator
) -> None:
    thread = start_loop(emulator, app.lambda_handler)
    event = request("buffered", "buffered")
    head, data, end = pieces(submit(emulator, event))
    thread.join(10)
    # What the buffered integration makes of the same return value: same status, headers and bytes.
    proxy_status, proxy_headers, proxy_body = http_response(app.lambda_handler(event, _context()))
    assert (head.kind, data.kind, end.kind) == ("head", "data", "end")
    assert head.status == proxy_status == 201
    assert sorted(head.headers) == sorted(proxy_headers)
    assert [v for k, v in head.headers if k == "set-cookie"] == ["a=1", "b=2"]
    assert data.data == proxy_body == b"\x00binary\xff"
    assert not thread.is_alive()


def test_streamed_chunks_arrive_while_the_handler_is_still_producing(
    app: types.ModuleType, emulator: RuntimeApiEmulator
) -> None:
    start_loop(emulator, app.lambda_handler)
    invocation = submit(emulator, request("slow", "stream", chunks=4, delay_s=0.3))
    found = pieces(invocation)
    head, *data, end = found
    assert head.kind == "head" and head.status == 200 and end.kind == "end"
    assert ("content-type", "text/event-stream") in head.headers and ("Set-Cookie", "s=1") in head.headers
    assert [p.data for p in data] == [f"data: {i}\n\n".encode() for i in range(4)]  # one chunk per item
    produced = app.RECORDS["slow"]["produced"]
    # The first chunk was read by the emulator before the producer made its last one (0.9 s later).
    assert data[0].received_at < produced[-1] - 0.5
    assert data[0].received_at - produced[0] < 0.25
    assert app.RECORDS["slow"]["closed"] == "finished"


def test_an_exception_mid_stream_ends_the_body_with_the_error_trailers(
    app: types.ModuleType, emulator: RuntimeApiEmulator
) -> None:
    start_loop(emulator, app.lambda_handler)
    head, data, broken = pieces(submit(emulator, request("mid", "fail_mid")))
    assert (head.kind, data.kind, broken.kind) == ("head", "data", "broken")
    assert data.data == b"data: 0\n\n"
    assert broken.error["lambda-runtime-function-error-type"] == "Function.StreamBroke"
    body = json.loads(base64.b64decode(broken.error["lambda-runtime-function-error-body"]))
    assert body == {"errorMessage": "the provider dropped the stream", "errorType": "StreamBroke"}


def test_an_exception_before_any_byte_goes_to_the_error_endpoint(
    app: types.ModuleType, emulator: RuntimeApiEmulator
) -> None:
    start_loop(emulator, app.lambda_handler)
    (failed,) = pieces(submit(emulator, request("raise", "raise")))
    assert failed.kind == "failed"
    assert failed.error["errorType"] == "HandlerFailed" and failed.error["errorMessage"] == "no answer for you"
    assert failed.error["stackTrace"]


def test_status_and_headers_over_16_kb_are_an_error_not_a_broken_stream(emulator: RuntimeApiEmulator) -> None:
    from llm_gateway.streaming.response import StreamingResponse

    def produce() -> Iterator[bytes]:
        yield b"never sent"

    huge = {"x-big": "x" * 20_000}
    start_loop(emulator, lambda event, context: StreamingResponse(200, huge, produce()))  # type: ignore[arg-type]
    (failed,) = pieces(submit(emulator, request("huge", "stream")))
    assert failed.kind == "failed" and failed.error["errorType"] == "InvalidAnswer"


def test_a_stream_lambda_closes_closes_the_producer(app: types.ModuleType, emulator: RuntimeApiEmulator) -> None:
    thread = start_loop(emulator, app.lambda_handler)
    invocation = submit(emulator, request("gone", "endless", delay_s=0.05))
    head = invocation.pieces.get(timeout=15)
    first = invocation.pieces.get(timeout=15)
    assert (head.kind, first.kind) == ("head", "data")
    invocation.abort()  # what Lambda does when API Gateway's caller goes away
    thread.join(10)
    assert not thread.is_alive()  # the loop is free for the next event
    record = app.RECORDS["gone"]
    assert record["closed"] == "GeneratorExit"  # the producer's finally ran: it stops its provider call
    assert len(record["produced"]) < 20  # it stopped within a few chunks, not after 10,000


# --------------------------------------------------------------------------- after-response work


@pytest.fixture
def runtime_mode() -> Iterator[None]:
    after_response._reset_for_tests()
    assert after_response.install("runtime") == "runtime"
    yield
    after_response._reset_for_tests()


def test_work_deferred_while_streaming_runs_after_the_answer_and_before_the_next_event(
    app: types.ModuleType, emulator: RuntimeApiEmulator, runtime_mode: None
) -> None:
    handler = after_response.handler(app.lambda_handler)  # as the gateway's handlers are wrapped
    thread = start_loop(emulator, handler, invocations=2)
    first = pieces(submit(emulator, request("defer", "defer", chunks=3, delay_s=0.05)))
    second = pieces(submit(emulator, request("next", "buffered")))
    thread.join(10)
    record = app.RECORDS["defer"]
    assert record["deferred"] is True  # deferred, not run at once
    assert [name for name, _ in record["work"]] == ["work-0", "work-1", "work-2"]  # none lost
    answered = first[-1]
    assert answered.kind == "end" and second[-1].kind == "end"
    started_next = second[0].received_at  # the second answer's head: after its handler ran
    assert all(answered.received_at < at < started_next for _, at in record["work"])


# --------------------------------------------------------------------------- the exec wrapper


def _wrapper_env(emulator: RuntimeApiEmulator, handler: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GATEWAY_AFTER_RESPONSE")}
    return {
        **env,
        "AWS_LAMBDA_RUNTIME_API": emulator.address,
        "_HANDLER": handler,
        "LAMBDA_TASK_ROOT": str(FIXTURE_DIR),
        "AWS_LAMBDA_FUNCTION_NAME": "stream-test",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "LLM_GATEWAY_RUNTIME_PYTHON": sys.executable,  # off Lambda: no /var/lang/bin/python3
    }


def test_the_wrapper_replaces_the_managed_loop_by_ours(emulator: RuntimeApiEmulator) -> None:
    assert os.access(WRAPPER, os.X_OK)
    env = _wrapper_env(emulator, "app.lambda_handler")
    # The managed runtime runs the wrapper with its own command as arguments; ours ignores them.
    process = subprocess.Popen([str(WRAPPER), "/var/runtime/bootstrap"], env=env, cwd=FIXTURE_DIR)
    try:
        buffered = pieces(submit(emulator, request("w1", "buffered")), timeout_s=60)
        streamed = pieces(submit(emulator, request("w2", "stream", chunks=2)), timeout_s=60)
        failed = pieces(submit(emulator, request("w3", "raise")), timeout_s=60)
    finally:
        process.terminate()
        process.wait(10)
    assert [p.kind for p in buffered] == ["head", "data", "end"] and buffered[0].status == 201
    assert [p.data for p in streamed if p.kind == "data"] == [b"data: 0\n\n", b"data: 1\n\n"]
    assert streamed[-1].kind == "end"
    assert failed[0].kind == "failed" and failed[0].error["errorType"] == "HandlerFailed"


def test_an_init_failure_is_posted_to_the_init_error_endpoint(emulator: RuntimeApiEmulator) -> None:
    env = _wrapper_env(emulator, "no_such_module.lambda_handler")
    finished = subprocess.run([str(WRAPPER)], env=env, cwd=FIXTURE_DIR, capture_output=True, text=True, timeout=60)
    assert finished.returncode == 1
    (error,) = emulator.init_errors
    assert error["errorType"] == "ModuleNotFoundError" and "no_such_module" in error["errorMessage"]


def _context() -> Any:
    return types.SimpleNamespace(aws_request_id="direct", get_remaining_time_in_millis=lambda: 1000)


def test_the_context_carries_the_deadline_and_request_id(app: types.ModuleType, emulator: RuntimeApiEmulator) -> None:
    start_loop(emulator, app.lambda_handler)
    invocation = submit(emulator, request("ctx", "buffered"))
    pieces(invocation)
    record = app.RECORDS["ctx"]
    assert record["request_id"] == invocation.request_id
    assert 25_000 < record["remaining_ms"] <= 30_000  # from Lambda-Runtime-Deadline-Ms
    assert time.time() * 1000 < invocation.deadline_ms
