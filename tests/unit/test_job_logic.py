"""Async jobs without AWS: Prefer parsing, deferral rules, backoff, message parsing, error names, template."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cfnlint.decode import cfn_yaml  # type: ignore[import-untyped]

from llm_gateway.config import Settings
from llm_gateway.errors import (
    AllProvidersFailedError,
    BudgetExceededError,
    InvalidRequestError,
    ProviderUnavailableError,
    RateLimitedError,
    SchemaError,
    SchemaNotFoundError,
)
from llm_gateway.http import framing as api
from llm_gateway.http import prefer as job_http
from llm_gateway.jobs.messages import JobMessage, PoisonMessage, backoff_s, parse_message, task_token_in
from llm_gateway.jobs.model import MAX_ERROR_BYTES, bounded_error, derived_job_id, new_job_id
from llm_gateway.jobs.task_tokens import error_name
from llm_gateway.jobs.views import encode_body, response_body_bytes
from llm_gateway.jobs.worker import BOOKKEEPING_S
from llm_gateway.models import CompletionRequest
from llm_gateway.operations import registry as operations
from llm_gateway.wiring import Services

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
def jobs_configured() -> Services:
    return Services(Settings(jobs_table="jobs", retry_queue_url="https://sqs.local/queue"))


def test_deferral_needs_the_opt_in_and_a_retryable_error(jobs_configured):
    opted_in = event("defer-on-failure")
    assert job_http.should_defer(opted_in, outage(), jobs_configured)
    assert job_http.should_defer(opted_in, RateLimitedError("slow down"), jobs_configured)
    assert not job_http.should_defer(event(), outage(), jobs_configured)  # no opt-in: the caller gets the 503
    assert not job_http.should_defer(event("respond-async"), outage(), jobs_configured)
    assert not job_http.should_defer(opted_in, InvalidRequestError("bad"), jobs_configured)  # waiting would not fix it
    assert not job_http.should_defer(opted_in, BudgetExceededError("over budget"), jobs_configured)
    assert not job_http.should_defer(opted_in, ValueError("not a gateway error"), jobs_configured)


def test_preferences_are_ignored_without_a_jobs_table():
    no_jobs = Services(Settings())
    assert not job_http.wants_async(event("respond-async"), no_jobs)
    assert not job_http.should_defer(event("defer-on-failure"), outage(), no_jobs)


def test_location_includes_the_stage_only_on_the_execute_api_host():
    job_id = "job_" + "a" * 32
    assert job_http.location(event(), job_id) == f"/v1/jobs/{job_id}"
    aws_host = event(host="abc123.execute-api.us-east-1.amazonaws.com")
    assert job_http.location(aws_host, job_id) == f"/prod/v1/jobs/{job_id}"


# --------------------------------------------------------------------------- backoff


def test_backoff_grows_is_capped_jittered_and_honours_retry_after():
    delays = [backoff_s(n, base_s=30, cap_s=900, retry_after_s=None) for n in range(1, 8)]
    for n, delay in enumerate(delays, start=1):
        step = min(900, 30 * 2 ** (n - 1))
        assert step / 2 <= delay <= step, (n, delay)  # equal jitter: half fixed, half random
    assert max(delays) <= 900
    assert backoff_s(1, base_s=30, cap_s=900, retry_after_s=120) >= 120
    assert backoff_s(1, base_s=30, cap_s=900, retry_after_s=5000) == 900  # never past the cap
    assert backoff_s(50_000, base_s=30, cap_s=100_000, retry_after_s=None) <= 43_200  # SQS limit
    assert backoff_s(3, base_s=1, cap_s=1, retry_after_s=None) == 1


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


@pytest.mark.parametrize(
    ("body", "token"),
    [
        ('{"kind":"job","tenant":"t","input":"not an object","task_token":"AQB-tok/en+1=="}', "AQB-tok/en+1=="),
        ('{"kind":"mystery","task_token":"tok"}', "tok"),
        ('<garbage "task_token": "tok-in-text" garbage>', "tok-in-text"),
        ('{"kind":"job","task_token":42}', None),
        ('{"kind":"job","task_token":""}', None),
        ("[1, 2]", None),
        ("not json", None),
    ],
)
def test_a_task_token_is_found_even_in_an_unusable_message(body, token):
    assert task_token_in(body) == token


def test_derived_job_ids_are_stable_and_well_formed():
    assert derived_job_id("token-1") == derived_job_id("token-1") != derived_job_id("token-2")
    assert len(derived_job_id("x")) == len(new_job_id()) == 36


def test_task_failure_names_match_the_named_errors_of_direct_invocation():
    for err in (outage(), RateLimitedError("x"), InvalidRequestError("y")):
        assert error_name(err.code) == type(api.named_error(err)).__name__


def test_extraction_jobs_are_checked_by_the_extraction_itself():
    operations.check("extraction", {"text": "Invoice 7", "schema": "invoice"})
    operations.check("extraction", {"s3": {"key": "incoming/a.pdf"}, "schema": {"type": "object"}})
    with pytest.raises(SchemaNotFoundError):
        operations.check("extraction", {"text": "Invoice 7", "schema": "no-such-schema"})
    with pytest.raises(SchemaError):
        operations.check("extraction", {"text": "Invoice 7", "schema": {"type": "array"}})
    for missing_or_both in ({"schema": "invoice"}, {"text": "x", "s3": {"key": "incoming/a"}, "schema": "invoice"}):
        with pytest.raises(InvalidRequestError, match="exactly one"):
            operations.check("extraction", missing_or_both)


# --------------------------------------------------------------------------- sizes


def test_error_records_are_bounded_for_the_job_item():
    small = {"code": "rate_limited", "message": "slow down", "retryable": True, "details": {"a": 1}}
    assert bounded_error(small) == small
    huge = {"code": "providers_unavailable", "message": "m" * 50_000, "retryable": True, "details": {"x": "y" * 9_000}}
    bounded = bounded_error(huge)
    assert bounded == {"code": "providers_unavailable", "message": "m" * 1_000, "retryable": True}
    assert len(json.dumps(bounded)) <= MAX_ERROR_BYTES


def test_answers_are_measured_as_lambda_sends_them():
    ascii_body = {"result": {"content": "a" * 1_000}}
    cjk_body = {"result": {"content": "长" * 1_000}}
    assert len(encode_body(cjk_body).encode("utf-8")) < 3_100  # sent as UTF-8, not \u-escaped
    assert response_body_bytes(ascii_body) < 1_100
    assert response_body_bytes(cjk_body) >= 6_000  # escaped, in the worst case, inside the proxy JSON
    assert response_body_bytes({"text": 'say "hi"'}) == len(json.dumps(encode_body({"text": 'say "hi"'})))


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


def test_the_queue_keeps_one_delivery_past_the_workers_last_attempt(resources):
    # The worker dead-letters a job's message itself after JOB_MAX_RECEIVES; the queue's one extra
    # delivery settles a job whose last attempt died with its invocation.
    template = cfn_yaml.load(str(TEMPLATE))
    max_receives = resources["RetryQueue"]["Properties"]["RedrivePolicy"]["maxReceiveCount"]
    assert int(template["Globals"]["Function"]["Environment"]["Variables"]["JOB_MAX_RECEIVES"]) == max_receives - 1


def test_a_batch_of_jobs_fits_in_one_invocation(resources):
    worker = resources["RetryWorkerFunction"]["Properties"]
    [source] = worker["Events"].values()
    runtime = float(worker["Environment"]["Variables"]["JOB_MAX_RUNTIME"])
    assert source["Properties"]["BatchSize"] * (runtime + BOOKKEEPING_S) <= worker["Timeout"]
    assert runtime >= 0.8 * worker["Timeout"]  # long summaries need most of the invocation


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
    assert wildcard == {
        "states:SendTaskSuccess",
        "states:SendTaskFailure",
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
    }
    # No SAM-attached AWSLambdaSQSQueueExecutionRole (receive/delete on every queue): an explicit role.
    assert resources["RetryWorkerFunction"]["Properties"]["Role"] == {"Fn::GetAtt": ["RetryWorkerRole", "Arn"]}
    assert "Policies" not in resources["RetryWorkerFunction"]["Properties"]


def test_job_tables_expire_items(resources):
    for logical_id, key in (("JobsTable", "job_id"), ("IdempotencyTable", "id")):
        props = resources[logical_id]["Properties"]
        assert props["KeySchema"] == [{"AttributeName": key, "KeyType": "HASH"}]
        assert props["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
        assert props["SSESpecification"] == {"SSEEnabled": True}


def test_s3_references_are_held_to_the_tenants_scope_at_submit():
    from llm_gateway.operations.extraction import DocumentForbiddenError

    own = {"s3": {"key": "incoming/tenants/t1/a.md"}, "schema": "invoice"}
    other = {"s3": {"key": "incoming/tenants/t2/a.md"}, "schema": "invoice"}
    climbing = {"s3": {"key": "incoming/tenants/t1/../t2/a.md"}, "schema": "invoice"}
    operations.check("extraction", own, tenant="t1", source="api")
    for payload in (other, climbing):
        with pytest.raises(DocumentForbiddenError) as info:
            operations.check("extraction", payload, tenant="t1", source="api")
        assert (info.value.http_status, info.value.details["param"]) == (403, "s3.key")
    with pytest.raises(DocumentForbiddenError):
        operations.check("summarization", {"s3": {"key": "incoming/tenants/t2/a.md"}}, tenant="t1", source="api")
    # Trusted entry points (uploads, Step Functions) read the whole bucket, as their own routes do.
    operations.check("extraction", other, tenant="documents", source="stepfunctions")
