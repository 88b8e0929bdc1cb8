"""The completion function's streamed answers, invoked as Lambda is: API Gateway events into the real handler
(``functions/completion/app.py``), a gateway whose ``open_stream`` returns scripted streams, and the key
service over an in-memory keys table (a key with per-minute limits, so admission and settlement show)."""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import openai
import pytest

from llm_gateway import after_response, wiring
from llm_gateway.config import Settings
from llm_gateway.errors import GatewayError, RateLimitedError, StreamInterruptedError
from llm_gateway.interfaces import RequestContext
from llm_gateway.jobs.model import Job
from llm_gateway.jobs.store import JobStore
from llm_gateway.keys import service as key_services
from llm_gateway.keys.hashing import key_hash
from llm_gateway.keys.policy import KeyPolicy, KeyRecord
from llm_gateway.keys.store import KeyStore, item_from_record
from llm_gateway.models import CompletionRequest, CompletionResult
from llm_gateway.stream_runtime import serving
from llm_gateway.streaming.response import StreamingResponse
from tests.support.scripted_streams import ScriptedStream, result, text_script, tool_script

REPO_ROOT = Path(__file__).resolve().parents[2]
KEY = "lgw_streaming-edge-test-key"
CHAT = "/v1/chat/completions"
NATIVE = "/v1/completions"
USER = [{"role": "user", "content": "hi"}]
TPM = 100_000


class FakeKeysTable:
    """The two DynamoDB calls the key service makes on a request: the key's record, its rate counters."""

    def __init__(self) -> None:
        limits = {"requests_per_minute": 1000, "tokens_per_minute": TPM}
        policy = KeyPolicy(tenant="tenant-s", name="test", created_at=0.0, **limits)
        self.item = item_from_record(KeyRecord(key_hash=key_hash(KEY), key_id="key_stream", policy=policy))
        self.updates: list[dict[str, Any]] = []

    def get_item(self, *, TableName: str, Key: dict[str, Any]) -> dict[str, Any]:
        return {"Item": self.item} if Key == {"pk": self.item["pk"]} else {}

    def update_item(self, **kwargs: Any) -> dict[str, Any]:
        self.updates.append(kwargs)
        return {}

    def token_changes(self) -> list[int]:
        """Tokens added to the window: the admitted estimate first, then each settlement's correction."""
        values = [u["ExpressionAttributeValues"] for u in self.updates]
        return [int(v.get(":est", v.get(":delta", {"N": "0"}))["N"]) for v in values]


class FakeGateway:
    """``open_stream`` hands out the scripted streams (or raises the scripted errors) in order."""

    def __init__(self) -> None:
        self.script: list[ScriptedStream | GatewayError] = []
        self.contexts: list[RequestContext] = []
        self.requests: list[CompletionRequest] = []
        self.bookkeeping: list[str] = []

    async def open_stream(self, request: CompletionRequest, ctx: RequestContext) -> ScriptedStream:
        self.contexts.append(ctx)
        self.requests.append(request)

        async def ledger_write() -> None:  # as the gateway records an attempt after the answer
            self.bookkeeping.append(ctx.request_id)

        await ctx.defer.soon(ledger_write)
        item = self.script.pop(0)
        if isinstance(item, GatewayError):
            raise item
        return item

    async def complete(self, request: CompletionRequest, ctx: RequestContext) -> CompletionResult:
        self.contexts.append(ctx)
        return result("a plain answer")


class Context:
    function_name = "llm-gateway-test-CompletionFunction"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:llm-gateway-test-CompletionFunction"
    aws_request_id = "lambda-request-1"

    def __init__(self, remaining_ms: int = 600_000) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@pytest.fixture(scope="module")
def app() -> Iterator[ModuleType]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("POWERTOOLS_METRICS_NAMESPACE", "LlmGatewayTest")  # read when the handler's Metrics is built
        yield load_app()


def load_app() -> ModuleType:
    spec = importlib.util.spec_from_file_location("streamed_edge_test_app", REPO_ROOT / "functions/completion/app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def table() -> FakeKeysTable:
    return FakeKeysTable()


@pytest.fixture
def gateway(monkeypatch: pytest.MonkeyPatch, table: FakeKeysTable) -> Iterator[FakeGateway]:
    fake = FakeGateway()
    settings = Settings(keys_table="keys")
    current = wiring.Services(settings, gateway=fake)  # type: ignore[arg-type]
    key_services._services[current] = key_services.KeyService(settings, store=KeyStore("keys", client=lambda: table))  # type: ignore[arg-type]
    monkeypatch.setattr(wiring, "_services", current)
    with serving.streaming_invocation():  # as the streaming runtime loop does around each invocation
        yield fake


def api_event(path: str, body: Any, method: str = "POST", **headers: str) -> dict[str, Any]:
    sent = {"x-api-key": KEY, "content-type": "application/json", **headers}
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": sent,
        "multiValueHeaders": {name: [value] for name, value in sent.items()},
        "queryStringParameters": None,
        "body": json.dumps(body) if body is not None else None,
        "isBase64Encoded": False,
        "requestContext": {"requestId": "req-stream-1", "stage": "prod", "requestTimeEpoch": int(time.time() * 1000)},
    }


def chat_body(**fields: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": USER, "stream": True, **fields}


def invoke(app: ModuleType, event: dict[str, Any], remaining_ms: int = 600_000) -> Any:
    return app.lambda_handler(event, Context(remaining_ms))


def json_error(answer: Any, status: int) -> dict[str, Any]:
    assert isinstance(answer, dict), answer
    assert answer["statusCode"] == status, answer["body"]
    error: dict[str, Any] = json.loads(answer["body"])["error"]
    return error


def openai_reads(raw: bytes) -> openai.OpenAI:
    transport = httpx.MockTransport(
        lambda _: httpx.Response(200, headers={"content-type": "text/event-stream"}, content=raw)
    )
    return openai.OpenAI(api_key="k", base_url="http://gateway.test/v1", http_client=httpx.Client(transport=transport))


# --------------------------------------------------------------------------- streamed answers


def test_a_streamed_chat_answer_is_a_streaming_response_the_openai_client_reads(
    app: ModuleType, gateway: FakeGateway, table: FakeKeysTable, capsys: pytest.CaptureFixture[str]
) -> None:
    stream = ScriptedStream(text_script("Hel", "lo"))
    gateway.script = [stream]
    answer = invoke(app, api_event(CHAT, chat_body(stream_options={"include_usage": True})))
    assert isinstance(answer, StreamingResponse) and answer.status_code == 200
    assert answer.headers == {
        "content-type": "text/event-stream; charset=utf-8",
        "cache-control": "no-cache",
        "x-request-id": "req-stream-1",
        "x-gateway-provider": "openai",
        "x-gateway-model": "gpt-4o-mini",
        "x-gateway-cache": "miss",
    }
    assert stream.yielded == 0 and stream.closed == 0  # nothing is read before the writer asks
    raw = b"".join(answer.body)
    assert stream.closed == 1 and not stream.cancelled
    chunks = list(
        openai_reads(raw).chat.completions.create(
            model="gpt-4o-mini", messages=USER, stream=True, stream_options={"include_usage": True}
        )
    )  # type: ignore[call-overload]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 17
    # The key's tokens: the estimate admitted, then settled to the 17 the stream used.
    estimate, settled = table.token_changes()
    assert estimate > 0 and estimate + settled == 17
    emitted = capsys.readouterr().out
    for metric in ("StreamsOpened", "TimeToFirstToken", "StreamDuration", "Completions", "CostUSD"):
        assert f'"{metric}"' in emitted
    assert gateway.bookkeeping == ["req-stream-1"]


def test_the_native_route_streams_named_events_ending_with_the_whole_result(
    app: ModuleType, gateway: FakeGateway
) -> None:
    gateway.script = [ScriptedStream(tool_script())]
    answer = invoke(app, api_event(NATIVE, {"messages": USER, "model": "gpt-4o-mini", "stream": True}))
    assert isinstance(answer, StreamingResponse)
    raw = b"".join(answer.body).decode()
    names = [line.removeprefix("event: ") for line in raw.splitlines() if line.startswith("event: ")]
    assert names[0] == "start" and names[-1] == "done" and names.count("tool_call") == 5
    done = json.loads(raw.rsplit("data: ", 1)[1])
    assert done["finish_reason"] == "tool_calls" and done["usage"]["input_tokens"] == 12
    assert [c["id"] for c in done["tool_calls"]] == ["call_a", "call_b"]
    assert "stream" not in gateway.requests[0].model_fields_set  # the gateway gets a plain request


def test_errors_before_the_first_byte_are_json_answers_with_their_status(
    app: ModuleType, gateway: FakeGateway, table: FakeKeysTable
) -> None:
    gateway.script = [RateLimitedError("every provider is rate limited", retry_after=3.0)] * 2
    chat = invoke(app, api_event(CHAT, chat_body()))
    error = json_error(chat, 429)
    assert (error["code"], error["type"], error["retryable"]) == ("rate_limited", "rate_limit_error", True)
    assert chat["multiValueHeaders"]["retry-after"] == ["3"]
    assert chat["multiValueHeaders"]["Content-Type"] == ["application/json"]
    native = json_error(invoke(app, api_event(NATIVE, {"messages": USER, "stream": True})), 429)
    assert native["code"] == "rate_limited" and "type" not in native  # the gateway's own shape there
    estimate, settled = table.token_changes()[:2]
    assert estimate + settled == 0  # nothing was spent
    assert gateway.bookkeeping == ["req-stream-1", "req-stream-1"]  # the failed attempts are still recorded


def test_a_failure_mid_stream_is_an_error_event_without_done(app: ModuleType, gateway: FakeGateway) -> None:
    stream = ScriptedStream(text_script("partial")[:1], fail=StreamInterruptedError("the provider dropped the stream"))
    gateway.script = [stream]
    answer = invoke(app, api_event(CHAT, chat_body()))
    raw = b"".join(answer.body)
    assert b"[DONE]" not in raw and stream.closed == 1
    last = json.loads(raw.strip().rsplit(b"\n\n", 1)[-1].removeprefix(b"data: "))
    assert last["error"]["code"] == "stream_interrupted" and last["error"]["type"] == "api_error"
    with pytest.raises(openai.APIError, match="dropped the stream"):
        list(openai_reads(raw).chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True))  # type: ignore[call-overload]


def test_an_unexpected_failure_mid_stream_is_an_internal_error_event_and_no_prompt_is_logged(
    app: ModuleType, gateway: FakeGateway, caplog: pytest.LogCaptureFixture
) -> None:
    gateway.script = [ScriptedStream(text_script("x")[:1], fail=RuntimeError("the prompt said: launch codes"))]
    answer = invoke(app, api_event(NATIVE, {"messages": USER, "stream": True}))
    with caplog.at_level(logging.INFO):
        raw = b"".join(answer.body).decode()
    name, data = raw.strip().rsplit("\n\n", 1)[-1].splitlines()
    assert name == "event: error" and json.loads(data.removeprefix("data: "))["error"]["code"] == "internal_error"
    assert "launch codes" not in raw and "launch codes" not in caplog.text


def test_a_caller_who_leaves_closes_the_stream(app: ModuleType, gateway: FakeGateway, table: FakeKeysTable) -> None:
    stream = ScriptedStream(text_script("one", "two", "three"))
    gateway.script = [stream]
    body = invoke(app, api_event(CHAT, chat_body())).body
    assert b'"role":"assistant"' in next(body) and b'"content":"one"' in next(body)
    body.close()  # what the writer does when the connection is gone
    assert stream.closed == 1 and stream.cancelled and stream.yielded == 1
    [estimate] = table.token_changes()  # tokens unknown: the reservation stands, no correction
    assert estimate > 0


def test_a_body_closed_before_it_started_still_closes_the_stream(app: ModuleType, gateway: FakeGateway) -> None:
    stream = ScriptedStream(text_script("never read"))
    gateway.script = [stream]
    invoke(app, api_event(CHAT, chat_body())).body.close()
    assert stream.closed == 1 and stream.yielded == 0


def test_bookkeeping_queued_during_the_stream_runs_when_its_body_ends(
    app: ModuleType, gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(after_response, "_mode", "thread")  # work is queued, not run at once
    gateway.script = [ScriptedStream(text_script("x"))]
    body = invoke(app, api_event(CHAT, chat_body())).body
    assert gateway.bookkeeping == []  # the handler returned: queued on the stream's own deferral
    b"".join(body)
    assert gateway.bookkeeping == ["req-stream-1"]


# --------------------------------------------------------------------------- refusals and route kinds


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        (CHAT, chat_body(n=2), "n"),
        (CHAT, chat_body(logprobs=True), "logprobs"),
        (CHAT, {"model": "gpt-4o-mini", "messages": USER, "stream_options": {"include_usage": True}}, "stream_options"),
        (CHAT, chat_body(stream_options={"include_usage": 1}), "stream_options.include_usage"),
        (NATIVE, {"messages": USER, "stream": True, "n": 3}, "n"),
        (NATIVE, {"messages": USER, "stream": True, "logprobs": True}, "logprobs"),
        (NATIVE, {"messages": USER, "stream": True, "stream_options": {"include_usage": True}}, "stream_options"),
        (NATIVE, {"messages": USER, "stream": "sometimes"}, "stream"),
    ],
)
def test_what_is_not_streamed_is_a_400_naming_the_parameter(
    app: ModuleType, gateway: FakeGateway, path: str, body: dict[str, Any], param: str
) -> None:
    error = json_error(invoke(app, api_event(path, body)), 400)
    assert error["code"] == "invalid_request"
    assert (error["param"] if path == CHAT else error["details"]["param"]) == param
    assert gateway.requests == []


def test_stream_on_a_function_not_under_the_streaming_runtime_is_a_400_naming_stream(
    app: ModuleType, gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serving, "active", lambda: False)  # a buffered function
    error = json_error(invoke(app, api_event(CHAT, chat_body())), 400)
    assert (error["param"], error["code"]) == ("stream", "invalid_request") and "streaming" in error["message"]
    assert gateway.requests == []


def test_a_direct_invocation_cannot_stream(app: ModuleType, gateway: FakeGateway) -> None:
    with pytest.raises(Exception) as caught:
        app.lambda_handler({"messages": USER, "stream": True}, Context())
    assert type(caught.value).__name__ == "InvalidRequestError"
    assert json.loads(str(caught.value))["details"]["param"] == "stream"
    assert app.lambda_handler({"messages": USER, "stream": False}, Context())["content"] == "a plain answer"


def test_a_streamed_answer_has_the_lambdas_time_and_one_in_one_piece_29_s_unless_raised(
    app: ModuleType, gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway.script = [ScriptedStream(text_script("x"))]
    b"".join(invoke(app, api_event(CHAT, chat_body()), remaining_ms=600_000).body)
    plain = {"model": "gpt-4o-mini", "messages": USER}
    assert invoke(app, api_event(CHAT, plain), remaining_ms=600_000)["statusCode"] == 200
    raised_settings = wiring._services.settings.model_copy(update={"unstreamed_deadline_s": 120.0})
    monkeypatch.setattr(wiring._services, "settings", raised_settings)
    assert invoke(app, api_event(CHAT, plain), remaining_ms=600_000)["statusCode"] == 200
    monkeypatch.setattr(serving, "active", lambda: False)  # a buffered function
    assert invoke(app, api_event(CHAT, plain), remaining_ms=600_000)["statusCode"] == 200
    streamed, plain_on_streamed_route, raised, buffered = (ctx.deadline.remaining() for ctx in gateway.contexts)
    assert streamed > 500  # the Lambda's 600 s, less the margin
    assert 20 < plain_on_streamed_route <= 29  # as on a buffered route: a hung provider falls back as fast
    assert 100 < raised <= 120  # GATEWAY_UNSTREAMED_DEADLINE
    assert buffered <= 29


def test_other_routes_and_not_found_answer_as_before_after_a_stream(app: ModuleType, gateway: FakeGateway) -> None:
    gateway.script = [ScriptedStream(text_script("x"))]
    assert isinstance(invoke(app, api_event(CHAT, chat_body())), StreamingResponse)
    models = invoke(app, api_event("/v1/models", None, method="GET"))
    assert models["statusCode"] == 200 and json.loads(models["body"])["object"] == "list"
    missing = json_error(invoke(app, api_event("/v1/nowhere", None, method="GET")), 404)
    assert missing["code"] == "route_not_found"
    assert "x-gateway-stream-pending" not in json.dumps(models)


# --------------------------------------------------------------------------- Prefer: jobs before the first byte


class MemoryJobs(JobStore):
    """The job store's writes, kept in memory (what was accepted, what was queued)."""

    def __init__(self) -> None:
        super().__init__(table="jobs", queue_url="https://sqs.local/queue", bucket=None)
        self.created: list[tuple[Job, dict[str, Any]]] = []
        self.queued: list[tuple[str, int]] = []

    def create(self, job: Job, payload: Mapping[str, Any]) -> Job:
        self.created.append((job, dict(payload)))
        return job

    def enqueue(self, job: Job, *, delay_s: int = 0, continuation: int = 0) -> None:
        self.queued.append((job.job_id, delay_s))


@pytest.fixture
def jobs(monkeypatch: pytest.MonkeyPatch, gateway: FakeGateway, table: FakeKeysTable) -> MemoryJobs:
    store = MemoryJobs()
    settings = Settings(keys_table="keys", jobs_table="jobs", retry_queue_url="https://sqs.local/queue")
    current = wiring.Services(settings, gateway=gateway, job_store=store)  # type: ignore[arg-type]
    keys = key_services.KeyService(settings, store=KeyStore("keys", client=lambda: table))  # type: ignore[arg-type]
    key_services._services[current] = keys
    monkeypatch.setattr(wiring, "_services", current)
    return store


def test_respond_async_makes_a_job_of_a_streamed_request(
    app: ModuleType, gateway: FakeGateway, jobs: MemoryJobs
) -> None:
    answer = invoke(app, api_event(CHAT, chat_body(), prefer="respond-async"))
    assert answer["statusCode"] == 202 and json.loads(answer["body"])["object"] == "job"
    [(job, payload)] = jobs.created
    assert job.operation == "completion" and "stream" not in payload and payload["model"] == "gpt-4o-mini"
    assert gateway.requests == []


def test_defer_on_failure_makes_a_job_when_the_stream_cannot_open(
    app: ModuleType, gateway: FakeGateway, jobs: MemoryJobs, table: FakeKeysTable
) -> None:
    gateway.script = [RateLimitedError("every provider is rate limited", retry_after=3.0)]
    answer = invoke(app, api_event(NATIVE, {"messages": USER, "stream": True}, prefer="defer-on-failure"))
    assert answer["statusCode"] == 202
    assert json.loads(answer["body"])["deferred_because"]["code"] == "rate_limited"
    assert [delay for _, delay in jobs.queued] == [30]  # a backoff step: providers just failed
    [estimate] = table.token_changes()  # the job keeps the reservation
    assert estimate > 0


def test_a_stream_that_fails_to_close_still_settles_and_ends_the_body(
    app: ModuleType, gateway: FakeGateway, table: FakeKeysTable
) -> None:
    class StuckOnClose(ScriptedStream):
        async def aclose(self) -> None:
            self.closed += 1
            raise RuntimeError("connection already gone")

    gateway.script = [StuckOnClose(text_script("x"))]
    raw = b"".join(invoke(app, api_event(CHAT, chat_body())).body)
    assert raw.endswith(b"data: [DONE]\n\n")
    estimate, settled = table.token_changes()
    assert estimate + settled == 17
