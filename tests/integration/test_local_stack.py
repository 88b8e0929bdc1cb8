"""The local harness (local/): template-driven resources in moto, the API Gateway bridge, S3 and SQS
event delivery, direct invocation and the ``local.invoke`` CLI."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import httpx
import pytest

from local.cfn import Template, load_yaml
from local.routes import ApiRoute, RouteTable
from local.simulator import ProviderSimulator
from local.stack import REPO_ROOT, LocalStack
from local.stack.settings import SAMPLE_EVENT_KEY

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_real_aws")]

TEMPLATE = Template.load(REPO_ROOT / "template.yaml")
ECHO_DIR = REPO_ROOT / "tests" / "fixtures" / "echo_function"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}


@pytest.fixture
def api(local_stack: LocalStack) -> Iterator[httpx.Client]:
    assert local_stack.api_url
    with httpx.Client(base_url=local_stack.api_url, timeout=30) as client:
        yield client


class Recorder:
    """A handler that records its calls and answers with a fixed result (or raises)."""

    def __init__(self, result: Any = None, error: Exception | None = None) -> None:
        self.calls: list[tuple[Any, Any]] = []
        self.result = result if result is not None else {"statusCode": 200, "body": "{}"}
        self.error = error
        self.called = threading.Event()

    def __call__(self, event: Any, context: Any) -> Any:
        self.calls.append((event, context))
        self.called.set()
        if self.error:
            raise self.error
        return self.result


def wait_until(predicate: Callable[[], bool], timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


# --------------------------------------------------------------------------- template parsing


def test_loader_turns_short_form_tags_into_intrinsics(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        "Resources:\n  A:\n    Type: X\n    Properties:\n"
        "      R: !Ref B\n      G: !GetAtt B.Arn.Sub\n      S: !Sub '${B}-x'\n"
        "      I: !If [Cond, !Ref B, !Ref AWS::NoValue]\n      L: !Join ['-', [a, b]]\n"
    )
    props = load_yaml(path)["Resources"]["A"]["Properties"]
    assert props["R"] == {"Ref": "B"}
    assert props["G"] == {"Fn::GetAtt": ["B", "Arn.Sub"]}
    assert props["S"] == {"Fn::Sub": "${B}-x"}
    assert props["I"] == {"Fn::If": ["Cond", {"Ref": "B"}, {"Ref": "AWS::NoValue"}]}
    assert props["L"] == {"Fn::Join": ["-", ["a", "b"]]}


def test_route_table_prefers_literal_then_parameters_then_greedy() -> None:
    def route(fid: str, method: str, path: str) -> ApiRoute:
        return ApiRoute(fid, fid, method, path, "Api", True)

    table = RouteTable(
        [
            route("proxy", "ANY", "/v1/{proxy+}"),
            route("job", "GET", "/v1/jobs/{id}"),
            route("list", "GET", "/v1/jobs/latest"),
            route("chat", "POST", "/v1/chat/completions"),
        ]
    )
    assert (m := table.match("GET", "/v1/jobs/latest")) and m.route.function_id == "list"
    assert (m := table.match("GET", "/v1/jobs/j-42")) and (m.route.function_id, m.path_parameters) == (
        "job",
        {"id": "j-42"},
    )
    assert (m := table.match("DELETE", "/v1/jobs/j-42")) and m.path_parameters == {"proxy": "jobs/j-42"}
    assert (m := table.match("POST", "/v1/chat/completions")) and m.route.function_id == "chat"
    assert table.match("POST", "/v2/other") is None


def test_template_routes_and_event_sources_are_read_from_the_template() -> None:
    routes = {(r.method, r.path): r.function_id for r in TEMPLATE.api_routes()}
    assert routes[("POST", "/v1/chat/completions")] == "CompletionStreamFunction"
    modes = {(r.method, r.path): r.transfer_mode for r in TEMPLATE.api_routes()}
    assert modes[("POST", "/v1/chat/completions")] == modes[("POST", "/v1/completions")] == "STREAM"
    assert modes[("GET", "/v1/models")] == "BUFFERED"
    # API Gateway checks no key on any route: the functions' edge checks gateway keys (deployed and here),
    # and key management is IAM-authorized (never a gateway key).
    assert not any(r.api_key_required for r in TEMPLATE.api_routes())
    prefixes = {s.function_id: s.prefix for s in TEMPLATE.s3_events()}
    assert prefixes["ExtractionFunction"] == "incoming/extract/"


# --------------------------------------------------------------------------- resources and environment


def test_tables_from_the_template_exist_with_keys_and_ttl(
    local_stack: LocalStack, aws_clients: Callable[[str], Any]
) -> None:
    ddb = aws_clients("dynamodb")
    tables = TEMPLATE.resources_of_type("AWS::DynamoDB::Table")
    assert tables
    for lid in tables:
        props = TEMPLATE.properties(lid)
        name = local_stack.physical[lid]
        assert name == f"llm-gateway-local-{lid}"
        description = ddb.describe_table(TableName=name)["Table"]
        assert description["KeySchema"] == props["KeySchema"]
        if ttl := props.get("TimeToLiveSpecification"):
            status = ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
            assert status == {"TimeToLiveStatus": "ENABLED", "AttributeName": ttl["AttributeName"]}


def test_queues_have_the_declared_attributes_and_redrive(
    local_stack: LocalStack, aws_clients: Callable[[str], Any]
) -> None:
    sqs = aws_clients("sqs")
    queues = TEMPLATE.resources_of_type("AWS::SQS::Queue")
    with_redrive = [lid for lid in queues if "RedrivePolicy" in TEMPLATE.properties(lid)]
    assert with_redrive
    for lid in queues:
        props = TEMPLATE.properties(lid)
        attrs = sqs.get_queue_attributes(QueueUrl=local_stack.physical[lid], AttributeNames=["All"])["Attributes"]
        if "VisibilityTimeout" in props:
            assert attrs["VisibilityTimeout"] == str(props["VisibilityTimeout"])
        if redrive := props.get("RedrivePolicy"):
            dlq_id = redrive["deadLetterTargetArn"]["Fn::GetAtt"][0]
            dlq = sqs.get_queue_attributes(QueueUrl=local_stack.physical[dlq_id], AttributeNames=["QueueArn"])
            policy = json.loads(attrs["RedrivePolicy"])
            assert policy["deadLetterTargetArn"] == dlq["Attributes"]["QueueArn"]
            assert int(policy["maxReceiveCount"]) == redrive["maxReceiveCount"]


def test_bucket_and_secret_exist(local_stack: LocalStack, aws_clients: Callable[[str], Any]) -> None:
    for lid in TEMPLATE.resources_of_type("AWS::S3::Bucket"):
        aws_clients("s3").head_bucket(Bucket=local_stack.physical[lid])
    assert os.environ["DOCUMENTS_BUCKET"] == local_stack.physical["DocumentsBucket"]
    secret = aws_clients("secretsmanager").get_secret_value(SecretId=local_stack.physical["ProviderKeysSecret"])
    assert set(json.loads(secret["SecretString"])) >= {"openai", "anthropic", "gemini"}


def test_function_environment_points_at_local_resources_and_simulator(
    local_stack: LocalStack, simulator: ProviderSimulator
) -> None:
    assert os.environ["AWS_ENDPOINT_URL"] == local_stack.moto_url
    assert os.environ["CACHE_TABLE"] == local_stack.physical["CacheTable"]
    assert os.environ["USAGE_TABLE"] == local_stack.physical["UsageTable"]
    assert os.environ["RETRY_QUEUE_URL"] == local_stack.physical["RetryQueue"]
    assert os.environ["PROVIDER_KEYS_SECRET"].startswith("arn:aws:secretsmanager:us-east-1:")
    assert os.environ["OPENAI_BASE_URL"] == simulator.base_urls()["openai"]
    assert os.environ["OPENAI_COMPATIBLE_BASE_URL"] == simulator.base_urls()["compat"]
    assert os.environ["ANTHROPIC_API_KEY"] == "sim-key"
    assert set(local_stack.providers.values()) == {"simulated"}
    assert local_stack.simulator is simulator


# --------------------------------------------------------------------------- API Gateway bridge


@pytest.mark.parametrize(
    ("headers", "code"),
    [({}, "missing_api_key"), ({"x-api-key": ""}, "missing_api_key"), ({"x-api-key": "wrong"}, "invalid_api_key")],
    ids=["missing", "empty", "wrong"],
)
def test_requests_without_a_known_api_key_are_refused_by_the_edge(
    api: httpx.Client, headers: dict[str, str], code: str
) -> None:
    response = api.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert response.status_code == 401  # OpenAI's answer: its SDKs raise AuthenticationError
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["type"] == "authentication_error"
    assert response.json()["error"]["message"]
    assert "x-amzn-ErrorType" not in response.headers  # the function answered, not API Gateway


@pytest.mark.parametrize(("method", "path"), [("POST", "/v1/nope"), ("GET", "/v1/chat/completions")])
def test_bridge_answers_unknown_routes_like_api_gateway(api: httpx.Client, method: str, path: str) -> None:
    response = api.request(method, path, headers={"x-api-key": "key-a"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "route_not_found" and response.json()["error"]["message"]


def test_bridge_sends_a_rest_proxy_event_and_translates_the_response(
    local_stack: LocalStack, api: httpx.Client
) -> None:
    recorder = Recorder(
        {
            "statusCode": 201,
            "headers": {"x-one": "1"},
            "multiValueHeaders": {"set-cookie": ["a=1", "b=2"]},
            "body": base64.b64encode(b"\x00binary").decode(),
            "isBase64Encoded": True,
        }
    )
    # The chat route streams: the proxy answer comes through the streaming runtime loop, unchanged.
    local_stack.handler_overrides["CompletionStreamFunction"] = recorder
    response = api.post(
        "/v1/chat/completions?x=1&x=2&empty=",
        json=CHAT,
        headers=[("x-api-key", "key-b"), ("x-multi", "m1"), ("x-multi", "m2")],
    )
    assert response.status_code == 201
    assert response.content == b"\x00binary"
    assert response.headers["x-one"] == "1"
    assert response.headers.get_list("set-cookie") == ["a=1", "b=2"]
    assert response.headers["content-type"] == "application/json"

    ((event, context),) = recorder.calls
    assert event["resource"] == event["path"] == "/v1/chat/completions"
    assert event["httpMethod"] == "POST"
    assert json.loads(event["body"]) == CHAT and event["isBase64Encoded"] is False
    assert event["headers"]["x-api-key"] == "key-b"
    assert event["multiValueHeaders"]["x-multi"] == ["m1", "m2"]
    assert event["queryStringParameters"] == {"x": "2", "empty": ""}
    assert event["multiValueQueryStringParameters"] == {"x": ["1", "2"], "empty": [""]}
    assert event["pathParameters"] is None and event["stageVariables"] is None
    ctx = event["requestContext"]
    # No API Gateway key on these routes: the identity names none, the function reads the headers itself.
    assert ctx["identity"]["apiKey"] is None and ctx["identity"]["apiKeyId"] is None
    assert ctx["identity"]["sourceIp"] == "127.0.0.1"
    assert (ctx["stage"], ctx["resourcePath"], ctx["httpMethod"]) == ("prod", "/v1/chat/completions", "POST")
    assert ctx["path"] == "/prod/v1/chat/completions"
    assert response.headers["x-amzn-requestid"] == ctx["requestId"]
    assert context.function_name == "llm-gateway-local-CompletionStreamFunction"
    assert context.memory_limit_in_mb == 1024
    assert 0 < context.get_remaining_time_in_millis() <= 900_000
    assert context.invoked_function_arn == f"arn:aws:lambda:us-east-1:123456789012:function:{context.function_name}"
    assert context.aws_request_id


def test_bridge_base64_encodes_binary_request_bodies(local_stack: LocalStack, api: httpx.Client) -> None:
    recorder = Recorder()
    local_stack.handler_overrides["ExtractionFunction"] = recorder
    response = api.post("/v1/extractions", content=b"\xff\xfe\x00", headers={"x-api-key": "key-a"})
    assert response.status_code == 200
    (event,) = [e for e, _ in recorder.calls if "httpMethod" in e]  # not an S3 event still in flight
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"\xff\xfe\x00"


@pytest.mark.parametrize(
    "recorder", [Recorder(error=RuntimeError("boom")), Recorder(result="not a proxy response")], ids=["raises", "bad"]
)
def test_bridge_answers_502_when_the_handler_fails(
    local_stack: LocalStack, api: httpx.Client, recorder: Recorder
) -> None:
    local_stack.handler_overrides["SummarizationFunction"] = recorder
    response = api.post("/v1/summaries", json={}, headers={"x-api-key": "key-a"})
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "internal_error" and response.json()["error"]["message"]


def test_chat_completion_through_the_bridge_reaches_the_real_handler(
    local_stack: LocalStack, api: httpx.Client, simulator: ProviderSimulator
) -> None:
    response = api.post("/v1/chat/completions", json=CHAT, headers={"x-api-key": "key-a"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"]
    assert response.headers["x-gateway-provider"] == "openai"
    assert [c["model"] for c in simulator.calls("openai")] == ["gpt-4o-mini"]
    # keep-alive: a second request on the same connection works too
    again = api.post(
        "/v1/completions", json={"tier": "fast", "messages": CHAT["messages"]}, headers={"x-api-key": "key-a"}
    )
    assert again.status_code == 200, again.text


# --------------------------------------------------------------------------- direct invocation


def test_a_marker_failing_only_openai_shows_the_fallback_locally(local_stack: LocalStack, api: httpx.Client) -> None:
    prompt = "[[sim:fault=server_error,provider=openai]] Which provider answers?"
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]}
    response = api.post("/v1/completions", json=body, headers={"x-api-key": "key-a"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["provider"] != "openai"
    tried = [(attempt["provider"], attempt["outcome"]) for attempt in answer["attempts"]]
    assert tried[0][0] == "openai" and tried[0][1] != "success" and tried[-1] == (answer["provider"], "success")


def test_invoke_runs_a_handler_and_propagates_its_errors(local_stack: LocalStack) -> None:
    local_stack.handler_overrides["ExtractionFunction"] = Recorder({"ok": True})
    assert local_stack.invoke("extraction", {"x": 1}) == {"ok": True}

    class NamedError(Exception):
        pass

    local_stack.handler_overrides["ExtractionFunction"] = Recorder(error=NamedError("bad input"))
    with pytest.raises(NamedError, match="bad input"):
        local_stack.invoke("ExtractionFunction", {})
    with pytest.raises(LookupError):
        local_stack.invoke("missing", {})


def test_invoke_runs_the_real_completion_handler_for_step_functions_payloads(local_stack: LocalStack) -> None:
    event = json.loads((REPO_ROOT / "events" / "completion-stepfunctions.json").read_text())
    result = local_stack.invoke("completion", event)
    assert result["content"] and result["provider"]


SAMPLE_EVENTS = sorted(p.name for p in (REPO_ROOT / "events").glob("*.json"))
# HTTP samples that do not answer 200: a job is accepted (202); the sample job id exists in no fresh stack.
SAMPLE_STATUS = {"jobs-apigw-create.json": 202, "jobs-apigw-get.json": 404}
SAMPLE_DOCUMENTS = {  # the S3 sample events name these objects (keys decoded)
    "incoming/extract/entities/2026/11/acme invoice 0042.txt": "acme-invoice-0042.txt",
    "incoming/summarize/reports/q3-board-update.md": "q3-board-update.md",
}


@pytest.mark.parametrize("name", SAMPLE_EVENTS)
def test_sample_events_run_through_the_real_handlers(
    local_stack: LocalStack, aws_clients: Callable[[str], Any], name: str
) -> None:
    event = json.loads((REPO_ROOT / "events" / name).read_text())
    local_stack.add_api_key(SAMPLE_EVENT_KEY, "dev")  # as `make invoke` does: the key the samples send
    for record in (r for r in event.get("Records", []) if "s3" in r):  # SQS samples carry their payload
        key = unquote_plus(record["s3"]["object"]["key"])
        body = (REPO_ROOT / "events" / "documents" / SAMPLE_DOCUMENTS[key]).read_bytes()
        assert record["s3"]["object"]["size"] == len(body)
        aws_clients("s3").put_object(Bucket=record["s3"]["bucket"]["name"], Key=key, Body=body)
    result = local_stack.invoke(name.split("-", 1)[0], event)
    if "httpMethod" in event:
        assert result["statusCode"] == SAMPLE_STATUS.get(name, 200), result
    else:
        assert "failed" not in result or result["failed"] == 0, result
        assert not result.get("batchItemFailures"), result


# --------------------------------------------------------------------------- S3 notifications


def test_s3_uploads_reach_the_handler_whose_prefix_matches(
    local_stack: LocalStack, aws_clients: Callable[[str], Any]
) -> None:
    extraction, summarization = Recorder(), Recorder()
    local_stack.handler_overrides["ExtractionFunction"] = extraction
    local_stack.handler_overrides["SummarizationFunction"] = summarization
    bucket = local_stack.physical["DocumentsBucket"]
    tag = uuid.uuid4().hex[:8]  # events from earlier tests may still be in flight: look for ours only
    s3 = aws_clients("s3")
    s3.put_object(Bucket=bucket, Key=f"elsewhere/{tag}.txt", Body=b"-")
    s3.put_object(Bucket=bucket, Key=f"incoming/extract/entities/{tag} b.txt", Body=b"text")
    s3.put_object(Bucket=bucket, Key=f"incoming/summarize/{tag}.md", Body=b"# report")

    def records(recorder: Recorder) -> list[tuple[dict[str, Any], Any]]:
        found = [(e["Records"][0], c) for e, c in recorder.calls]
        return [(r, c) for r, c in found if tag in r["s3"]["object"]["key"]]

    assert wait_until(lambda: bool(records(extraction)) and bool(records(summarization)))
    time.sleep(0.5)  # anything misrouted would have arrived by now
    assert all(len(e["Records"]) == 1 for e, _ in extraction.calls + summarization.calls)
    ((record, context),) = records(extraction)
    assert record["eventSource"] == "aws:s3" and record["eventName"] == "ObjectCreated:Put"
    assert record["s3"]["bucket"]["name"] == bucket
    assert record["s3"]["object"]["key"] == f"incoming/extract/entities/{tag}+b.txt"  # URL-encoded, as S3 sends
    assert context.function_name.endswith("ExtractionFunction")
    assert [unquote_plus(r["s3"]["object"]["key"]) for r, _ in records(summarization)] == [
        f"incoming/summarize/{tag}.md"
    ]
    every_key = [unquote_plus(e["Records"][0]["s3"]["object"]["key"]) for e, _ in extraction.calls]
    assert all(key.startswith("incoming/extract/") for key in every_key)


# --------------------------------------------------------------------------- a second, custom template

MINI_TEMPLATE = """
Transform: AWS::Serverless-2016-10-31
Parameters:
  Stage: {Type: String, Default: test}
Globals:
  Function:
    Timeout: 10
    Environment:
      Variables:
        MODE: shared
        JOBS_TABLE: !Ref JobsTable
        JOBS_QUEUE_ARN: !GetAtt JobsQueue.Arn
        LABEL: !Sub "${AWS::StackName}-${Stage}"
Resources:
  Api:
    Type: AWS::Serverless::Api
    Properties: {StageName: !Ref Stage, Auth: {ApiKeyRequired: true}}
  JobsTable:
    Type: AWS::DynamoDB::Table
    Properties:
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions: [{AttributeName: pk, AttributeType: S}, {AttributeName: tenant, AttributeType: S}]
      KeySchema: [{AttributeName: pk, KeyType: HASH}]
      GlobalSecondaryIndexes:
        - IndexName: by-tenant
          KeySchema: [{AttributeName: tenant, KeyType: HASH}]
          Projection: {ProjectionType: ALL}
  JobsQueue:
    Type: AWS::SQS::Queue
    Properties:
      VisibilityTimeout: 30
      RedrivePolicy: {deadLetterTargetArn: !GetAtt JobsDLQ.Arn, maxReceiveCount: 2}
  JobsDLQ:
    Type: AWS::SQS::Queue
  JobsFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: {echo_dir}
      Handler: app.lambda_handler
      Events:
        GetJob: {Type: Api, Properties: {RestApiId: !Ref Api, Path: "/v1/jobs/{id}", Method: get}}
        Files:
          Type: Api
          Properties: {RestApiId: !Ref Api, Path: "/files/{proxy+}", Method: any, Auth: {ApiKeyRequired: false}}
  WorkerFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: {echo_dir}
      Handler: app.lambda_handler
      Environment: {Variables: {MODE: worker}}
      Events:
        Jobs:
          Type: SQS
          Properties:
            Queue: !GetAtt JobsQueue.Arn
            BatchSize: 5
            FunctionResponseTypes: [ReportBatchItemFailures]
"""


@pytest.fixture
def mini_template(tmp_path: Path) -> Path:
    path = tmp_path / "template.yaml"
    path.write_text(MINI_TEMPLATE.replace("{echo_dir}", str(ECHO_DIR)))
    return path


def _harness_threads() -> list[str]:
    prefixes = ("api-bridge", "poller-", "lambda-", "provider-sim")
    return [t.name for t in threading.enumerate() if t.name.startswith(prefixes)]


def test_custom_template_drives_routes_sqs_sources_and_environment(mini_template: Path) -> None:
    threads_before = _harness_threads()
    stack = LocalStack(
        mini_template,
        port=0,
        api_keys={"k": "t"},
        simulate=False,
        stack_name="llm-gateway-mini",
        failed_message_visibility=0,
    )
    with stack:
        assert stack.api_url and stack.simulator is None
        ddb = stack.client("dynamodb").describe_table(TableName="llm-gateway-mini-JobsTable")["Table"]
        assert [i["IndexName"] for i in ddb["GlobalSecondaryIndexes"]] == ["by-tenant"]
        assert os.environ["LABEL"] == "llm-gateway-mini-test"
        assert os.environ["JOBS_QUEUE_ARN"].endswith(":llm-gateway-mini-JobsQueue")

        with httpx.Client(base_url=stack.api_url, timeout=10) as client:
            job = client.get("/v1/jobs/j-7", headers={"x-api-key": "k"})
            assert job.status_code == 200, job.text
            seen = job.json()
            assert seen["event"]["pathParameters"] == {"id": "j-7"}
            assert seen["event"]["resource"] == "/v1/jobs/{id}"
            assert seen["event"]["requestContext"]["stage"] == "test"
            assert seen["mode"] == "shared"  # the real handler module, loaded from CodeUri
            files = client.delete("/files/a/b.txt")  # this method needs no API key
            assert files.status_code == 200
            assert files.json()["event"]["pathParameters"] == {"proxy": "a/b.txt"}
            assert files.json()["event"]["requestContext"]["identity"]["apiKeyId"] is None

        # SQS event source: ReportBatchItemFailures deletes only the successes; failures redrive.
        batches: list[list[str]] = []
        modes: list[str | None] = []

        def worker(event: dict[str, Any], context: Any) -> dict[str, Any]:
            modes.append(os.environ.get("MODE"))
            batches.append([r["body"] for r in event["Records"]])
            assert all(r["eventSource"] == "aws:sqs" for r in event["Records"])
            failed = [{"itemIdentifier": r["messageId"]} for r in event["Records"] if r["body"] == "fail"]
            return {"batchItemFailures": failed}

        stack.handler_overrides["WorkerFunction"] = worker
        sqs = stack.client("sqs")
        for body in ("ok-1", "fail", "ok-2"):
            sqs.send_message(QueueUrl=stack.physical["JobsQueue"], MessageBody=body)

        def dead_lettered() -> bool:
            got = sqs.receive_message(QueueUrl=stack.physical["JobsDLQ"], WaitTimeSeconds=0)
            return [m["Body"] for m in got.get("Messages", [])] == ["fail"]

        assert wait_until(dead_lettered, timeout=20)
        delivered = [body for batch in batches for body in batch]
        assert sorted(b for b in delivered if b != "fail") == ["ok-1", "ok-2"]
        assert delivered.count("fail") == 2  # maxReceiveCount
        assert set(modes) == {"worker"}  # the function's own MODE, set for its invocations only
        assert os.environ["MODE"] == "shared"
        api_port = int(stack.api_url.rsplit(":", 1)[1])

    assert _harness_threads() == threads_before
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", api_port), timeout=1):
        pass
    assert "LABEL" not in os.environ


# --------------------------------------------------------------------------- the CLI


def _run_invoke(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OPENAI", "ANTHROPIC", "GEMINI"))}
    return subprocess.run(
        [sys.executable, "-m", "local.invoke", *args],
        cwd=REPO_ROOT,
        env={**env, "PYTHONPATH": f"{REPO_ROOT}:{REPO_ROOT / 'layers' / 'gateway'}"},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=90,
    )


def test_invoke_cli_prints_the_handler_response() -> None:
    done = _run_invoke("--function", "completion", "--event", "events/completion-stepfunctions.json", "--simulate")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["content"].startswith("[sim ")


@pytest.mark.parametrize(
    ("function", "outcome"), [("extraction", {"extracted": 1}), ("summarization", {"summarized": 1})]
)
def test_invoke_cli_puts_the_sample_document_of_an_s3_event_first(function: str, outcome: dict[str, int]) -> None:
    done = _run_invoke("--function", function, "--event", f"events/{function}-s3-put.json", "--simulate")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == outcome  # not {"failed": 1}: the object the event names exists
    logged = [json.loads(line) for line in done.stderr.splitlines() if line.startswith('{"level"')]
    assert logged, done.stderr
    # One process serves every function locally: each log line says which one wrote it.
    assert {line.get("function_name") for line in logged} == {f"llm-gateway-local-{function.title()}Function"}


def test_invoke_cli_reports_a_raised_error_and_exits_1(mini_template: Path) -> None:
    done = _run_invoke(
        "--template", str(mini_template), "--function", "JobsFunction", "--event", "-", stdin='{"raise": "boom"}'
    )
    assert done.returncode == 1
    assert json.loads(done.stdout) == {"errorType": "EchoError", "errorMessage": "boom"}
    assert "Traceback" in done.stderr


def test_a_cancelled_transaction_leaves_every_item_as_it_was(local_stack):
    """The stack's moto backs up a transaction's own items, not whole tables: a cancelled one must
    still leave nothing half-done (a new item gone, an updated one back to its old value)."""
    from botocore.exceptions import ClientError

    ddb, table = local_stack.client("dynamodb"), local_stack.physical["UsageTable"]
    pk = f"TX#{uuid.uuid4().hex}"
    ddb.put_item(TableName=table, Item={"pk": {"S": pk}, "sk": {"S": "old"}, "n": {"N": "1"}})
    with pytest.raises(ClientError) as info:
        ddb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": table, "Item": {"pk": {"S": pk}, "sk": {"S": "new"}}}},
                {
                    "Update": {
                        "TableName": table,
                        "Key": {"pk": {"S": pk}, "sk": {"S": "old"}},
                        "UpdateExpression": "ADD n :one",
                        "ExpressionAttributeValues": {":one": {"N": "1"}},
                    }
                },
                {
                    "ConditionCheck": {
                        "TableName": table,
                        "Key": {"pk": {"S": pk}, "sk": {"S": "missing"}},
                        "ConditionExpression": "attribute_exists(pk)",
                    }
                },
            ]
        )
    assert info.value.response["Error"]["Code"] == "TransactionCanceledException"
    items = ddb.query(TableName=table, KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": {"S": pk}})[
        "Items"
    ]
    assert items == [{"pk": {"S": pk}, "sk": {"S": "old"}, "n": {"N": "1"}}]
