"""After-response bookkeeping: inline, background thread, and the Lambda internal extension against a
stand-in for Lambda's Extensions API over a real socket (register, then /event/next paced by our work)."""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest

from llm_gateway import after_response


@pytest.fixture(autouse=True)
def _fresh_mode() -> Iterator[None]:
    after_response._reset_for_tests()
    yield
    after_response._reset_for_tests()


def _work(log: list[str], name: str, delay_s: float = 0.0) -> after_response.Work:
    async def run() -> None:
        await asyncio.sleep(delay_s)
        log.append(name)

    return run


def test_inline_mode_never_defers_so_the_caller_awaits_the_work() -> None:
    assert after_response.install("inline") == "inline"
    with after_response.scope("r1"):
        assert after_response.current().defer(_work([], "w")) is False


def test_defer_outside_a_scope_is_refused_even_in_thread_mode() -> None:
    after_response.install("thread")
    assert after_response.current().defer(_work([], "w")) is False


def test_thread_mode_runs_the_work_after_the_handler_returned() -> None:
    after_response.install("thread")
    done: list[str] = []

    @after_response.handler
    def handle(event: Any, context: Any) -> str:
        assert after_response.current().defer(_work(done, "ledger", delay_s=0.2))
        return "answer"

    assert handle({}, SimpleNamespace(aws_request_id="r1")) == "answer"
    assert done == []  # the caller has its answer before the bookkeeping ran
    assert after_response.wait_idle(5.0)
    assert done == ["ledger"]


def test_work_deferred_by_a_failing_handler_still_runs() -> None:
    after_response.install("thread")
    done: list[str] = []

    @after_response.handler
    def handle(event: Any, context: Any) -> str:
        after_response.current().defer(_work(done, "settle"))
        raise ValueError("boom")

    with pytest.raises(ValueError):
        handle({}, SimpleNamespace(aws_request_id="r1"))
    assert after_response.wait_idle(5.0) and done == ["settle"]


def test_a_failing_piece_does_not_stop_the_rest() -> None:
    after_response.install("thread")
    done: list[str] = []

    async def broken() -> None:
        raise RuntimeError("write failed")

    with after_response.scope("r1"):
        after_response.current().defer(broken)
        after_response.current().defer(_work(done, "next"))
    assert after_response.wait_idle(5.0) and done == ["next"]


def test_unknown_mode_falls_back_to_inline() -> None:
    assert after_response.configured_mode({"GATEWAY_AFTER_RESPONSE": "sometimes"}) == "inline"
    assert after_response.configured_mode({"GATEWAY_AFTER_RESPONSE": "extension"}) == "inline"  # not on Lambda
    assert after_response.configured_mode({"AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001"}) == "extension"
    assert after_response.configured_mode({"GATEWAY_AFTER_RESPONSE": "thread"}) == "thread"


# --------------------------------------------------------------------------- the Lambda extension


class FakeExtensionsApi:
    """Lambda's Extensions API as an extension sees it: register once, then /event/next blocks until
    the platform has an event. Records when each /next arrives (the end of an extension's invocation)."""

    def __init__(self) -> None:
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.registrations: list[dict[str, Any]] = []
        self.next_calls: list[float] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                api.registrations.append({"name": self.headers["Lambda-Extension-Name"], "body": body})
                self._send(200, {"functionName": "f"}, {"Lambda-Extension-Identifier": "ext-1"})

            def do_GET(self) -> None:
                assert self.headers["Lambda-Extension-Identifier"] == "ext-1"
                api.next_calls.append(time.monotonic())
                self._send(200, api.events.get())

            def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def invoke(self, request_id: str) -> None:
        deadline_ms = int((time.time() + 30) * 1000)
        self.events.put({"eventType": "INVOKE", "requestId": request_id, "deadlineMs": deadline_ms})

    def wait_for_next_calls(self, n: int, timeout_s: float = 5.0) -> bool:
        give_up = time.monotonic() + timeout_s
        while len(self.next_calls) < n and time.monotonic() < give_up:
            time.sleep(0.01)
        return len(self.next_calls) >= n


@pytest.fixture
def extensions_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeExtensionsApi]:
    api = FakeExtensionsApi()
    monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", api.address)
    yield api
    api.server.shutdown()


def test_extension_registers_for_invoke_and_holds_each_invocation_until_its_work_is_done(
    extensions_api: FakeExtensionsApi,
) -> None:
    assert after_response.install("extension") == "extension"
    assert extensions_api.registrations == [{"name": after_response.EXTENSION_NAME, "body": {"events": ["INVOKE"]}}]
    assert extensions_api.wait_for_next_calls(1)  # ready for the first event (end of init)
    done: list[str] = []

    @after_response.handler
    def handle(event: Any, context: Any) -> str:
        assert after_response.current().defer(_work(done, "ledger", delay_s=0.3))
        return "answer"

    for request_id in ("r1", "r2"):
        extensions_api.invoke(request_id)
        returned_at = time.monotonic()
        assert handle({}, SimpleNamespace(aws_request_id=request_id)) == "answer"
        assert done.count("ledger") < ("r1", "r2").index(request_id) + 1  # answered before the work ran
        assert extensions_api.wait_for_next_calls(("r1", "r2").index(request_id) + 2)
        # Lambda may end the invocation (and freeze) only after the work: /next came after it.
        assert extensions_api.next_calls[-1] - returned_at >= 0.25
    assert done == ["ledger", "ledger"]


def test_an_invocation_with_nothing_deferred_is_released_at_once(extensions_api: FakeExtensionsApi) -> None:
    after_response.install("extension")
    assert extensions_api.wait_for_next_calls(1)

    @after_response.handler
    def handle(event: Any, context: Any) -> str:
        return "answer"

    extensions_api.invoke("r1")
    handle({}, SimpleNamespace(aws_request_id="r1"))
    assert extensions_api.wait_for_next_calls(2, timeout_s=2.0)


def test_a_failed_registration_runs_the_work_inline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9")  # nothing listens there
    assert after_response.install("extension") == "inline"
    with after_response.scope("r1"):
        assert after_response.current().defer(_work([], "w")) is False


def test_flush_writes_what_was_deferred_so_far_before_a_hand_off() -> None:
    after_response.install("thread")
    done: list[str] = []
    with after_response.scope("r1"):
        assert after_response.current().defer(_work(done, "cache fill"))
        after_response.current().flush()  # e.g. just before a job is queued that may need that cache entry
        assert done == ["cache fill"]
        assert after_response.current().defer(_work(done, "ledger"))
    assert after_response.wait_idle(5.0) and done == ["cache fill", "ledger"]  # nothing ran twice


# --------------------------------------------------------------------------- runtime mode (our runtime loop)


def test_runtime_mode_keeps_the_work_of_a_streamed_answer_until_the_invocation_ends() -> None:
    """The handler returns before its streamed body is consumed: work the body defers afterwards joins the
    same invocation, and all of it runs when the runtime loop closes the invocation, on the loop's thread."""
    assert after_response.install("runtime") == "runtime"
    done: list[str] = []

    @after_response.handler
    def handle(event: Any, context: Any) -> Any:
        assert after_response.current().defer(_work(done, "in-handler"))
        deferral = after_response.current()

        def body() -> Any:
            assert deferral.defer(_work(done, "while-streaming"))
            yield b"chunk"

        return body()

    with after_response.invocation("r1") as invocation:
        stream = handle({}, SimpleNamespace(aws_request_id="r1"))
        assert done == []  # the handler's own scope joined the invocation: nothing ran when it returned
        assert list(stream) == [b"chunk"]
        assert done == [] and len(invocation.pending) == 2
    assert done == ["in-handler", "while-streaming"]  # run at the end, in order, none lost


def test_an_invocation_in_thread_mode_hands_its_work_to_the_background_thread_at_its_end() -> None:
    after_response.install("thread")
    done: list[str] = []
    with after_response.invocation("r2"):
        with after_response.scope("r2"):
            assert after_response.current().defer(_work(done, "ledger"))
        assert done == [] and after_response.wait_idle(0.1)  # still held by the invocation
    assert after_response.wait_idle(5.0)
    assert done == ["ledger"]


def test_an_invocation_in_inline_mode_defers_nothing() -> None:
    assert after_response.install("inline") == "inline"
    with after_response.invocation("r3"):
        assert after_response.current().defer(_work([], "w")) is False


def test_a_plain_scope_in_runtime_mode_runs_its_work_when_it_ends() -> None:
    """A handler called outside our loop (no invocation around it) still gets its work done."""
    assert after_response.install("runtime") == "runtime"
    done: list[str] = []
    with after_response.scope("r4"):
        assert after_response.current().defer(_work(done, "w"))
        assert done == []
    assert done == ["w"]
