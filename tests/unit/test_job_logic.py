"""Async jobs without AWS: Prefer parsing, deferral rules, backoff, message parsing, error names, template."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from cfnlint.decode import cfn_yaml  # type: ignore[import-untyped]

from llm_gateway import api, job_http, jobs
from llm_gateway.errors import (
    AllProvidersFailedError,
    BudgetExceededError,
    InvalidRequestError,
    ProviderUnavailableError,
    RateLimitedError,
)
from llm_gateway.models import CompletionRequest
from llm_gateway.task_tokens import error_name
from llm_gateway.worker import JobMessage, PoisonMessage, backoff_s, parse_message

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


def event(*prefer: str, multi: bool = False, host: str = "127.0.0.1:3000") -> dict:
    if multi:
        return {"multiValueHeaders": {"Prefer": list(prefer)}, "headers": {"Host": host}, "requestContext": {}}
    headers = {"Host": host}
    if prefer:
        headers["prefer"] = ", ".join(prefer)
    return {"headers": headers, "requestContext": {"stage": "prod"}}


# --------------------------------------------------------------------------- Prefer


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (("respond-async",), {"respond-async"}),
        (("Respond-Async; foo=bar", "wait=10"), {"respond-async", "wait"}),
        (("defer-on-failure",), {"defer-on-failure"}),
        ((), set()),
    ],
)
def test_prefer_tokens_are_parsed_case_insensitively(headers, expected):
    assert job_http.preferences(event(*headers)) == expected
    if headers:
        assert job_http.preferences(event(*headers, multi=True)) == expected


def outage() -> AllProvidersFailedError:
    return AllProvidersFailedError("all down", attempts=[], last_error=ProviderUnavailableError("503"))


@pytest.fixture
def jobs_configured(monkeypatch):
    monkeypatch.setattr(jobs, "configured", lambda config=None: True)


def test_deferral_needs_the_opt_in_and_a_retryable_error(jobs_configured):
    opted_in = event("defer-on-failure")
    assert job_http.should_defer(opted_in, outage())
    assert job_http.should_defer(opted_in, RateLimitedError("slow down"))
    assert not job_http.should_defer(event(), outage())  # no opt-in: the caller gets the 503
    assert not job_http.should_defer(event("respond-async"), outage())
    assert not job_http.should_defer(opted_in, InvalidRequestError("bad"))  # waiting would not fix it
    assert not job_http.should_defer(opted_in, BudgetExceededError("over budget"))
    assert not job_http.should_defer(opted_in, ValueError("not a gateway error"))


def test_preferences_are_ignored_without_a_jobs_table(monkeypatch):
    monkeypatch.setattr(jobs, "configured", lambda config=None: False)
    assert not job_http.wants_async(event("respond-async"))
    assert not job_http.should_defer(event("defer-on-failure"), outage())


def test_location_includes_the_stage_only_on_the_execute_api_host():
    job_id = "job_" + "a" * 32
    assert job_http.location(event(), job_id) == f"/v1/jobs/{job_id}"
    aws_host = event(host="abc123.execute-api.us-east-1.amazonaws.com")
    assert job_http.location(aws_host, job_id) == f"/prod/v1/jobs/{job_id}"


# --------------------------------------------------------------------------- backoff


def test_backoff_grows_is_capped_jittered_and_honours_retry_after():
    rng = random.Random(7)
    delays = [backoff_s(n, base_s=30, cap_s=900, retry_after_s=None, rng=rng) for n in range(1, 8)]
    for n, delay in enumerate(delays, start=1):
        step = min(900, 30 * 2 ** (n - 1))
        assert step / 2 <= delay <= step, (n, delay)  # equal jitter: half fixed, half random
    assert max(delays) <= 900
    assert backoff_s(1, base_s=30, cap_s=900, retry_after_s=120, rng=rng) >= 120
    assert backoff_s(1, base_s=30, cap_s=900, retry_after_s=5000, rng=rng) == 900  # never past the cap
    assert backoff_s(50_000, base_s=30, cap_s=100_000, retry_after_s=None, rng=rng) <= 43_200  # SQS limit
    assert backoff_s(3, base_s=1, cap_s=1, retry_after_s=None, rng=rng) == 1


# --------------------------------------------------------------------------- messages


JOB_ID = "job_" + "0123456789abcdef" * 2


def test_job_messages_parse():
    message = parse_message(f'{{"kind":"job","job_id":"{JOB_ID}","tenant":"t","operation":"completion"}}')
    assert isinstance(message, JobMessage) and message.job_id == JOB_ID and message.tenant == "t"
    legacy = parse_message(f'{{"job_id":"{JOB_ID}","tenant":"t","attempt":0}}')  # kind defaults to job
    assert isinstance(legacy, JobMessage)
    submitted = parse_message('{"kind":"job","tenant":"t","operation":"completion","input":{},"task_token":"tok"}')
    assert isinstance(submitted, JobMessage) and submitted.job_id is None and submitted.task_token == "tok"
    assert parse_message('{"kind":"usage","version":1,"record":{}}') == {"kind": "usage", "version": 1, "record": {}}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"kind":"mystery"}', "unknown message kind"),
        ('{"kind":"job","job_id":"job_1","tenant":"t"}', "job_id"),
        (f'{{"kind":"job","job_id":"{JOB_ID}"}}', "tenant"),
        ('{"kind":"job","tenant":"t","operation":"completion"}', "operation and input"),
    ],
)
def test_poison_messages_are_named_with_a_reason(body, reason):
    with pytest.raises(PoisonMessage, match=reason):
        parse_message(body)


def test_derived_job_ids_are_stable_and_well_formed():
    assert jobs.derived_job_id("token-1") == jobs.derived_job_id("token-1") != jobs.derived_job_id("token-2")
    assert len(jobs.derived_job_id("x")) == len(jobs.new_job_id()) == 36


def test_task_failure_names_match_the_named_errors_of_direct_invocation():
    for err in (outage(), RateLimitedError("x"), InvalidRequestError("y")):
        assert error_name(err.code) == type(api.named_error(err)).__name__


def test_a_completion_request_survives_the_trip_through_a_job():
    request = CompletionRequest.model_validate(
        {
            "messages": [{"role": "user", "content": "Extract the total."}],
            "model": "gpt-4o-mini",
            "fallback": [],
            "response_format": {"type": "json_schema", "name": "total", "schema": {"type": "object"}},
            "cache": {"no_store": True},
        }
    )
    job_input = request.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert CompletionRequest.model_validate(job_input) == request


# --------------------------------------------------------------------------- template


@pytest.fixture(scope="module")
def resources() -> dict:
    return cfn_yaml.load(str(TEMPLATE))["Resources"]


def test_the_worker_gives_up_exactly_when_the_queue_dead_letters(resources):
    template = cfn_yaml.load(str(TEMPLATE))
    max_receives = resources["RetryQueue"]["Properties"]["RedrivePolicy"]["maxReceiveCount"]
    assert template["Globals"]["Function"]["Environment"]["Variables"]["JOB_MAX_RECEIVES"] == str(max_receives)


def test_the_worker_reports_partial_batch_failures_within_the_visibility_timeout(resources):
    worker = resources["RetryWorkerFunction"]["Properties"]
    [source] = worker["Events"].values()
    assert source["Type"] == "SQS"
    assert source["Properties"]["Queue"] == {"Fn::GetAtt": ["RetryQueue", "Arn"]}
    assert source["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert resources["RetryQueue"]["Properties"]["VisibilityTimeout"] >= 6 * worker["Timeout"]
    assert worker["Environment"]["Variables"]["RETRY_DLQ_URL"] == {"Ref": "RetryDeadLetterQueue"}


def test_the_worker_role_is_scoped(resources):
    role = resources["RetryWorkerRole"]["Properties"]
    [policy] = role["Policies"]
    grants = {
        action: statement["Resource"]
        for statement in policy["PolicyDocument"]["Statement"]
        for action in (statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]])
    }
    retry_queue = {"Fn::GetAtt": ["RetryQueue", "Arn"]}
    assert grants["sqs:ReceiveMessage"] == grants["sqs:ChangeMessageVisibility"] == retry_queue
    assert grants["sqs:SendMessage"] == {"Fn::GetAtt": ["RetryDeadLetterQueue", "Arn"]}
    assert grants["dynamodb:DeleteItem"] == {"Fn::GetAtt": ["IdempotencyTable", "Arn"]}
    wildcard = {action for action, resource in grants.items() if resource == "*"}
    assert wildcard == {"states:SendTaskSuccess", "states:SendTaskFailure", "xray:PutTraceSegments",
                        "xray:PutTelemetryRecords"}
    # No SAM-attached AWSLambdaSQSQueueExecutionRole (receive/delete on every queue): an explicit role.
    assert resources["RetryWorkerFunction"]["Properties"]["Role"] == {"Fn::GetAtt": ["RetryWorkerRole", "Arn"]}
    assert "Policies" not in resources["RetryWorkerFunction"]["Properties"]


def test_job_tables_expire_items(resources):
    for logical_id, key in (("JobsTable", "job_id"), ("IdempotencyTable", "id")):
        props = resources[logical_id]["Properties"]
        assert props["KeySchema"] == [{"AttributeName": key, "KeyType": "HASH"}]
        assert props["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
        assert props["SSESpecification"] == {"SSEEnabled": True}
