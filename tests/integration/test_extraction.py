"""Extraction over real sockets: the HTTP bridge, the real handler, moto (S3, DynamoDB) and the provider simulator."""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from llm_gateway import wiring
from llm_gateway.catalog import default_catalog
from llm_gateway.errors import (
    AllProvidersFailedError,
    ExtractionFailedError,
    GatewayError,
    ProviderAuthError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitedError,
)
from llm_gateway.http.framing import named_error
from llm_gateway.models import Usage
from llm_gateway.structured.schemas import named_schema, validation_problems
from local.simulator import ProviderSimulator
from local.stack import LocalStack
from tests.pdf_bytes import pdf_with_lines
from tests.support.accounting import api_key_for, ledger_items
from tests.support.accounting import unique as unique_id
from tests.support.waiting import queue_depth, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_real_aws")]

PERSON = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "age"],
    "properties": {"name": {"type": "string"}, "age": {"type": ["integer", "null"]}},
}
VALID_PERSON = '{"name": "Ada Lovelace", "age": 36}'


@pytest.fixture
def api(local_stack: LocalStack) -> Iterator[httpx.Client]:
    assert local_stack.api_url
    with httpx.Client(base_url=local_stack.api_url, headers={"x-api-key": "key-a"}, timeout=30) as client:
        yield client


@pytest.fixture
def s3(local_stack: LocalStack, aws_clients: Callable[[str], Any]) -> Any:
    return aws_clients("s3")


@pytest.fixture
def bucket(local_stack: LocalStack) -> str:
    return local_stack.env["DOCUMENTS_BUCKET"]


def unique(text: str) -> str:
    """Extraction is cached by default: every test asks about its own document."""
    return f"{text} (ref {uuid.uuid4().hex[:8]})"


def extract(api: httpx.Client, **body: Any) -> httpx.Response:
    return api.post("/v1/extractions", json=body)


# --------------------------------------------------------------------------- native modes on the wire


def test_openai_gets_strict_json_schema_at_temperature_zero(api: httpx.Client, simulator: ProviderSimulator) -> None:
    response = extract(api, text=unique("Invoice 7 from Acme"), schema="invoice", model="gpt-4o-mini")
    assert response.status_code == 200, response.text
    body = response.json()
    assert validation_problems(named_schema("invoice"), body["data"]) == []
    assert (body["provider"], body["model"], body["schema"], body["asks"]) == ("openai", "gpt-4o-mini", "invoice", 1)
    wire = simulator.calls("openai")[-1]["body"]
    assert wire["temperature"] == 0
    fmt = wire["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["name"] == "invoice"
    assert fmt["json_schema"]["schema"]["properties"] == named_schema("invoice")["properties"]
    assert "$schema" not in fmt["json_schema"]["schema"]


def test_openai_gets_non_strict_mode_for_a_schema_outside_the_strict_subset(
    api: httpx.Client, simulator: ProviderSimulator
) -> None:
    loose = {"type": "object", "properties": {"name": {"type": "string", "minLength": 1}}, "required": ["name"]}
    response = extract(api, text=unique("Ada"), schema=loose, model="gpt-4o-mini")
    assert response.status_code == 200, response.text
    assert simulator.calls("openai")[-1]["body"]["response_format"]["json_schema"]["strict"] is False


def test_anthropic_gets_a_forced_tool(api: httpx.Client, simulator: ProviderSimulator) -> None:
    response = extract(api, text=unique("Jane Doe, CTO"), schema="contact", model="claude-3-5-haiku-latest")
    assert response.status_code == 200, response.text
    assert validation_problems(named_schema("contact"), response.json()["data"]) == []
    wire = simulator.calls("anthropic")[-1]["body"]
    assert wire["tool_choice"] == {"type": "tool", "name": "contact"}
    assert wire["tools"][0]["name"] == "contact"
    assert wire["tools"][0]["input_schema"]["required"] == named_schema("contact")["required"]
    assert wire["temperature"] == 0


def test_gemini_gets_a_response_schema_in_its_dialect(api: httpx.Client, simulator: ProviderSimulator) -> None:
    response = extract(api, text=unique("Met Ada in Paris"), schema="entities", model="gemini-2.0-flash")
    assert response.status_code == 200, response.text
    config = simulator.calls("gemini")[-1]["body"]["generationConfig"]
    assert config["responseMimeType"] == "application/json" and config["temperature"] == 0
    schema = config["responseSchema"]
    assert "additionalProperties" not in schema and "$schema" not in schema
    assert schema["propertyOrdering"] == list(named_schema("entities")["properties"])
    label = schema["properties"]["dates"]["items"]["properties"]["label"]
    assert label == {"type": "string", "nullable": True, "description": label["description"]}


def test_model_without_native_mode_gets_json_in_text_and_a_lenient_parse(
    api: httpx.Client, simulator: ProviderSimulator
) -> None:
    simulator.script("compat", [f"Sure! Here is the JSON:\n```json\n{VALID_PERSON[:-1]},\n}}\n```\nAnything else?"])
    response = extract(api, text=unique("Ada Lovelace, 36"), schema=PERSON, model="local-llama")
    assert response.status_code == 200, response.text
    assert response.json()["data"] == {"name": "Ada Lovelace", "age": 36}
    wire = simulator.calls("compat")[-1]["body"]
    assert "response_format" not in wire
    assert "JSON Schema" in wire["messages"][0]["content"] and '"age"' in wire["messages"][0]["content"]


# --------------------------------------------------------------------------- reasks, attempts and cost


def _openai_usage(body: dict[str, Any], reply: str) -> Usage:
    """The simulator's documented token accounting for one OpenAI call."""
    texts = [m["content"] for m in body["messages"]]
    return Usage(input_tokens=sum(math.ceil(len(t) / 4) + 4 for t in texts), output_tokens=math.ceil(len(reply) / 4))


def test_malformed_then_invalid_answers_are_reasked_until_valid(
    api: httpx.Client, simulator: ProviderSimulator
) -> None:
    replies = ["I think the name is Ada.", '{"name": "Ada", "age": "thirty-six"}', VALID_PERSON]
    simulator.script("openai", list(replies))
    response = extract(api, text=unique("Ada Lovelace, 36"), schema=PERSON, model="gpt-4o-mini")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["data"] == {"name": "Ada Lovelace", "age": 36} and body["asks"] == 3
    calls = simulator.calls("openai")[-3:]
    # A reask carries the original two messages, the last bad answer and its errors: never the history.
    assert [len(c["body"]["messages"]) for c in calls] == [2, 4, 4]
    assert calls[1]["body"]["messages"][2] == {"role": "assistant", "content": replies[0]}
    assert "contains no JSON object" in calls[1]["body"]["messages"][3]["content"]
    assert calls[2]["body"]["messages"][2]["content"] == replies[1]
    assert "/age" in calls[2]["body"]["messages"][3]["content"]
    # Every attempt is reported, with the simulator's token counts, and the cost is their sum.
    spec = default_catalog().get("gpt-4o-mini")
    expected = [_openai_usage(c["body"], reply) for c, reply in zip(calls, replies, strict=True)]
    assert [Usage(**a["usage"]) for a in body["attempts"]] == expected
    assert [a["cost_usd"] for a in body["attempts"]] == [spec.cost(u) for u in expected]
    assert body["cost_usd"] == pytest.approx(sum(spec.cost(u) for u in expected), abs=1e-9)
    assert response.headers["x-gateway-attempts"] == "3"


def test_exhausted_reasks_answer_422_with_the_last_errors(api: httpx.Client, simulator: ProviderSimulator) -> None:
    simulator.script("openai", ['{"name": 1}', '{"name": 2}', '{"name": 3, "age": 1}'])
    response = extract(api, text=unique("Ada"), schema=PERSON, model="gpt-4o-mini", max_reasks=2)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "extraction_failed"
    assert error["details"]["reason"] == "max_reasks" and error["details"]["asks"] == 3
    assert error["details"]["errors"] == [{"path": "/name", "message": "3 is not of type 'string'"}]
    assert len(error["attempts"]) == 3 and all(a["outcome"] == "success" for a in error["attempts"])
    assert error["details"]["cost_usd"] == pytest.approx(sum(a["cost_usd"] for a in error["attempts"]), abs=1e-9)
    assert len(simulator.calls("openai")) == 3


def test_provider_faults_are_retried_inside_one_ask(api: httpx.Client, simulator: ProviderSimulator) -> None:
    simulator.add_fault("server_error", provider="openai", times=1)
    simulator.script("openai", [VALID_PERSON])
    response = extract(api, text=unique("Ada"), schema=PERSON, model="gpt-4o-mini", fallback=[])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["asks"] == 1
    assert [a["outcome"] for a in body["attempts"]] == ["error", "success"]


def test_extraction_is_cached_by_default(api: httpx.Client, simulator: ProviderSimulator) -> None:
    text = unique("Ada Lovelace, 36")
    simulator.script("openai", ['{"name": "Ada"}', VALID_PERSON])  # one reask, then valid
    first = extract(api, text=text, schema=PERSON, model="gpt-4o-mini")
    assert first.status_code == 200 and first.json()["asks"] == 2
    second = extract(api, text=text, schema=PERSON, model="gpt-4o-mini")
    assert second.status_code == 200, second.text
    assert second.json()["cached"] is True and second.json()["cost_usd"] == 0
    assert second.json()["data"] == first.json()["data"]
    assert second.headers["x-gateway-cache"] == "hit"
    assert len(simulator.calls("openai")) == 2  # nothing new was called
    other_tenant = extract(api, text=text, schema=PERSON, model="gpt-4o-mini", cache={"no_cache": True})
    assert other_tenant.json()["cached"] is False


# --------------------------------------------------------------------------- bad input


def _nested(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"x": schema}}
    return schema


@pytest.mark.parametrize(
    ("schema", "status", "code"),
    [
        ({"type": "objekt"}, 400, "invalid_schema"),
        ({"type": "object", "properties": {"a": {"type": "string", "maxLength": "ten"}}}, 400, "invalid_schema"),
        (_nested(30), 400, "invalid_schema"),
        ({"type": "object", "description": "x" * 40_000}, 400, "invalid_schema"),
        ({"type": "array", "items": {"type": "string"}}, 400, "invalid_schema"),
        ("no-such-schema", 404, "schema_not_found"),
        ("../catalog", 400, "invalid_schema"),
        ([1, 2], 400, "invalid_request"),
    ],
)
def test_bad_schemas_get_a_4xx_before_any_provider_call(
    api: httpx.Client, simulator: ProviderSimulator, schema: Any, status: int, code: str
) -> None:
    response = extract(api, text="Ada", schema=schema)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]
    assert simulator.calls() == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"schema": "contact"}, "body"),  # neither text nor s3
        ({"schema": "contact", "text": "a", "s3": {"key": "k"}}, "body"),
        ({"text": "a"}, "schema"),
        ({"schema": "contact", "text": "a", "max_reasks": 9}, "max_reasks"),
        ({"schema": "contact", "text": "a", "tenant": "tenant-b"}, "tenant"),  # never from the body
    ],
)
def test_bad_requests_get_a_400_naming_the_problem(api: httpx.Client, body: dict[str, Any], param: str) -> None:
    response = api.post("/v1/extractions", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_request"
    assert response.json()["error"]["details"]["param"] == param


# --------------------------------------------------------------------------- documents in S3 over HTTP


def test_tenants_read_only_their_own_documents(api: httpx.Client, s3: Any, bucket: str) -> None:
    own = f"incoming/tenants/tenant-a/{uuid.uuid4().hex}.md"
    s3.put_object(Bucket=bucket, Key=own, Body=unique("# Card\nJane Doe, jane@acme.example").encode())
    ok = extract(api, s3={"key": own}, schema="contact")
    assert ok.status_code == 200, ok.text
    assert ok.json()["source"]["key"] == own
    as_b = api.post("/v1/extractions", json={"s3": {"key": own}, "schema": "contact"}, headers={"x-api-key": "key-b"})
    assert as_b.status_code == 403 and as_b.json()["error"]["details"]["param"] == "s3.key"
    assert as_b.json()["error"]["code"] == "document_forbidden"
    other_bucket = extract(api, s3={"bucket": "someone-elses", "key": own}, schema="contact")
    assert other_bucket.status_code == 400
    missing = extract(api, s3={"key": "incoming/tenants/tenant-a/none.md"}, schema="contact")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "document_not_found"


# --------------------------------------------------------------------------- S3 trigger


def wait_for_object(s3: Any, bucket: str, key: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())  # type: ignore[no-any-return]
        except s3.exceptions.NoSuchKey:
            time.sleep(0.1)
    raise AssertionError(f"s3://{bucket}/{key} did not appear within {timeout}s")


def test_upload_is_extracted_into_a_result_object(
    local_stack: LocalStack, simulator: ProviderSimulator, s3: Any, bucket: str
) -> None:
    run = uuid.uuid4().hex[:8]
    key = f"incoming/extract/contact/{run}/business card (1).md"  # spaces and parentheses: URL-encoded in events
    s3.put_object(Bucket=bucket, Key=key, Body=unique("# Jane Doe\nCTO, Acme GmbH\njane@acme.example").encode())
    result = wait_for_object(s3, bucket, f"results/extract/contact/{run}/business card (1).md.json")
    assert result["source_key"] == key and result["schema"] == "contact"
    assert validation_problems(named_schema("contact"), result["result"]) == []
    assert result["provider"] in {"openai", "anthropic", "gemini"} and result["model"]
    assert result["cost_usd"] == pytest.approx(sum(a["cost_usd"] for a in result["attempts"]), abs=1e-9)
    assert result["cost_usd"] > 0 and len(result["attempts"]) == 1
    prompt = json.dumps(simulator.calls()[-1]["body"])
    assert "Jane Doe" in prompt  # the document's text reached the model
    assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] > 0  # the document stays


def test_pdf_upload_is_read_through_its_text_layer(simulator: ProviderSimulator, s3: Any, bucket: str) -> None:
    run = uuid.uuid4().hex[:8]
    key = f"incoming/extract/invoice/{run}.pdf"
    s3.put_object(Bucket=bucket, Key=key, Body=pdf_with_lines(["INVOICE 2026-0042", f"Acme GmbH {run}", "Total 19.90"]))
    result = wait_for_object(s3, bucket, f"results/extract/invoice/{run}.pdf.json")
    assert result["source"]["kind"] == "pdf" and result["source"]["pages"] == 1
    assert "INVOICE 2026-0042" in json.dumps(simulator.calls()[-1]["body"])


@pytest.mark.parametrize(
    ("relative", "body", "code"),
    [
        ("no-such-schema/doc.txt", b"Jane Doe", "schema_not_found"),
        ("contact/binary.bin", bytes(range(256)) * 4, "unsupported_document"),
        ("contact/empty.txt", b"   \n", "invalid_request"),
        ("loose-file.txt", b"Jane Doe", "invalid_request"),  # no schema folder in the key
    ],
)
def test_failed_uploads_leave_an_error_object_and_the_document(
    s3: Any, bucket: str, simulator: ProviderSimulator, relative: str, body: bytes, code: str
) -> None:
    run = uuid.uuid4().hex[:8]
    key = f"incoming/extract/{run}-{relative}"
    if "/" in relative:
        key = f"incoming/extract/{relative.split('/')[0]}/{run}-{relative.split('/', 1)[1]}"
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    record = wait_for_object(s3, bucket, "errors/extract/" + key.removeprefix("incoming/extract/") + ".json")
    assert record["source_key"] == key and record["status"] == "failed"
    assert record["error"]["code"] == code and record["error"]["message"]
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body
    assert simulator.calls() == []


def test_upload_whose_answers_never_validate_records_the_cost_of_trying(
    local_stack: LocalStack, simulator: ProviderSimulator, s3: Any, bucket: str
) -> None:
    simulator.script("*", ["no json here"] * 3)
    key = f"incoming/extract/contact/{uuid.uuid4().hex[:8]}.txt"
    s3.put_object(Bucket=bucket, Key=key, Body=unique("Jane Doe").encode())
    record = wait_for_object(s3, bucket, "errors/extract/" + key.removeprefix("incoming/extract/") + ".json")
    assert record["error"]["code"] == "extraction_failed" and record["error"]["retryable"] is False
    assert record["status"] == "failed" and "job_id" not in record  # retrying cannot fix it: no job
    assert len(record["attempts"]) == 3 and record["cost_usd"] > 0


# --------------------------------------------------------------------------- Step Functions (direct invocation)


def test_step_functions_payload_returns_the_result(local_stack: LocalStack, s3: Any, bucket: str) -> None:
    key = f"incoming/pipeline/{uuid.uuid4().hex}.md"  # not under incoming/extract/: no trigger
    s3.put_object(Bucket=bucket, Key=key, Body=unique("Invoice 12, total 30.00 EUR").encode())
    result = local_stack.invoke("ExtractionFunction", {"s3": {"bucket": bucket, "key": key}, "schema": "invoice"})
    assert result["object"] == "extraction" and result["schema"] == "invoice"
    assert validation_problems(named_schema("invoice"), result["data"]) == []
    inline = local_stack.invoke("extraction", {"text": unique("Ada, 36"), "schema": PERSON, "tenant": "pipeline-1"})
    assert set(inline["data"]) == {"name", "age"}


def _raised(local_stack: LocalStack, payload: dict[str, Any]) -> Exception:
    with pytest.raises(Exception) as caught:
        local_stack.invoke("ExtractionFunction", payload)
    return caught.value


def test_step_functions_errors_are_named_for_retry_and_catch(
    local_stack: LocalStack, simulator: ProviderSimulator
) -> None:
    bad_schema = _raised(local_stack, {"text": "a", "schema": {"type": "objekt"}})
    assert type(bad_schema).__name__ == "InvalidSchemaError"
    assert json.loads(str(bad_schema))["code"] == "invalid_schema"

    simulator.script("openai", ["nope"] * 2)
    failed = _raised(local_stack, {"text": unique("a"), "schema": PERSON, "model": "gpt-4o-mini", "max_reasks": 1})
    assert type(failed).__name__ == "ExtractionFailedError"
    assert json.loads(str(failed))["details"]["asks"] == 2

    simulator.add_fault("rate_limit", provider="openai", retry_after=0)
    limited = _raised(local_stack, {"text": unique("a"), "schema": PERSON, "model": "gpt-4o-mini", "fallback": []})
    assert type(limited).__name__ == "RateLimitedError"
    assert json.loads(str(limited))["retryable"] is True


def test_state_machine_retries_and_catches_the_names_the_function_raises(local_stack: LocalStack) -> None:
    states = local_stack.template.resources["ExtractThenSummarizeStateMachine"]["Properties"]["Definition"]["States"]
    retried = {name for rule in states["Extract"]["Retry"] for name in rule["ErrorEquals"]}
    caught = {name for rule in states["Extract"]["Catch"] for name in rule["ErrorEquals"]}

    def name(err: GatewayError) -> str:
        return type(named_error(err)).__name__

    def exhausted(cause: ProviderError) -> GatewayError:
        return AllProvidersFailedError.for_last("all failed", attempts=[], last_error=cause)

    assert name(exhausted(RateLimitedError("429"))) in retried
    assert name(exhausted(ProviderUnavailableError("503"))) in retried
    assert name(exhausted(ProviderTimeoutError("slow"))) in retried
    assert caught == {name(ExtractionFailedError("never valid"))}
    assert name(exhausted(ProviderAuthError("401"))) not in retried  # retrying a bad key cannot help


# --------------------------------------------------------------------------- the usage ledger


def test_every_ask_of_an_extraction_lands_in_the_usage_ledger(
    local_stack: LocalStack, simulator: ProviderSimulator, aws_clients: Callable[[str], Any]
) -> None:
    tenant = unique_id("ledger")
    simulator.script("openai", ['{"name": "Ada"}', VALID_PERSON])  # one reask (age missing), then valid
    with api_key_for(local_stack, tenant) as key:
        response = local_stack_api(local_stack).post(
            "/v1/extractions",
            json={"text": unique("Ada Lovelace, 36"), "schema": PERSON, "model": "gpt-4o-mini", "fallback": []},
            headers={"x-api-key": key},
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["asks"] == 2 and len(body["attempts"]) == 2
    records = ledger_records(local_stack, aws_clients, tenant)
    assert len(records) == 2  # one record per ask: the reask is billed like the first
    assert {r["request_id"]["S"] for r in records} == {response.headers["x-request-id"]}
    assert {(r["provider"]["S"], r["model"]["S"], r["outcome"]["S"]) for r in records} == {
        ("openai", "gpt-4o-mini", "success")
    }
    assert sum(float(r["cost_usd"]["N"]) for r in records) == pytest.approx(body["cost_usd"], abs=1e-9)
    assert sum(int(r["input_tokens"]["N"]) for r in records) == body["usage"]["input_tokens"]
    assert sorted(int(r["output_tokens"]["N"]) for r in records) == sorted(
        a["usage"]["output_tokens"] for a in body["attempts"]
    )


def local_stack_api(local_stack: LocalStack) -> httpx.Client:
    assert local_stack.api_url
    return httpx.Client(base_url=local_stack.api_url, timeout=30)


def ledger_records(local_stack: LocalStack, aws_clients: Callable[[str], Any], tenant: str) -> list[dict[str, Any]]:
    return ledger_items(local_stack, tenant)


# --------------------------------------------------------------------------- async and deferred (job queue)

# Quick but faithful: one try per candidate model, 2 s of SQS backoff between job attempts.
FAST_JOBS = {
    "GATEWAY_MAX_ATTEMPTS": "1",
    "GATEWAY_BACKOFF_BASE": "0",
    "JOB_BACKOFF_BASE": "2",
    "JOB_BACKOFF_MAX": "2",
    "GATEWAY_BREAKER_BACKEND": "off",  # an opened circuit would outlive this test's outage
}


@pytest.fixture
def fast_jobs(local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalStack]:
    for name, value in FAST_JOBS.items():
        monkeypatch.setenv(name, value)
    wiring.reset()  # the handlers re-read the environment
    yield local_stack
    sqs = local_stack.client("sqs")
    wait_for(lambda: queue_depth(sqs, local_stack.physical["RetryQueue"]) == 0, timeout=60, what="retry queue drained")
    monkeypatch.undo()
    wiring.reset()


def job_view(api: httpx.Client, job_id: str) -> dict[str, Any]:
    response = api.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_respond_async_answers_202_and_the_job_extracts(fast_jobs: LocalStack, api: httpx.Client) -> None:
    response = api.post(
        "/v1/extractions",
        json={"text": unique("Jane Doe, CTO at Acme, jane@acme.example"), "schema": "contact"},
        headers={"Prefer": "respond-async"},
    )
    assert response.status_code == 202, response.text
    assert response.headers["preference-applied"] == "respond-async"
    body = response.json()
    assert body["object"] == "job" and body["operation"] == "extraction"
    assert response.headers["location"] == f"/v1/jobs/{body['id']}"
    done = wait_for(
        lambda: (view := job_view(api, body["id"]))["status"] == "succeeded" and view, timeout=60, what="job done"
    )
    assert done["result"]["object"] == "extraction" and done["result"]["schema"] == "contact"
    assert validation_problems(named_schema("contact"), done["result"]["data"]) == []


def test_respond_async_refuses_a_bad_request_before_accepting_it(fast_jobs: LocalStack, api: httpx.Client) -> None:
    for body, code in (({"text": "a", "schema": "no-such-schema"}, "schema_not_found"), ({"schema": "contact"}, None)):
        response = api.post("/v1/extractions", json=body, headers={"Prefer": "respond-async"})
        assert 400 <= response.status_code < 500, response.text
        assert code is None or response.json()["error"]["code"] == code


def test_defer_on_failure_during_an_outage_answers_202_and_extracts_later(
    fast_jobs: LocalStack, api: httpx.Client, simulator: ProviderSimulator
) -> None:
    simulator.add_fault("overloaded")  # every provider answers 503/529
    plain = extract(api, text=unique("Ada Lovelace, 36"), schema=PERSON)
    assert plain.status_code == 503, plain.text
    deferred = api.post(
        "/v1/extractions",
        json={"text": unique("Ada Lovelace, 36"), "schema": PERSON},
        headers={"Prefer": "defer-on-failure"},
    )
    assert deferred.status_code == 202, deferred.text
    assert deferred.headers["preference-applied"] == "defer-on-failure"
    body = deferred.json()
    assert body["deferred_because"]["code"] == "providers_unavailable"
    assert deferred.headers["location"] == f"/v1/jobs/{body['id']}"
    simulator.clear_faults()
    done = wait_for(
        lambda: (view := job_view(api, body["id"]))["status"] == "succeeded" and view, timeout=60, what="job done"
    )
    assert set(done["result"]["data"]) == {"name", "age"}
    # A caller's mistake is never deferred: waiting would not fix it.
    invalid = api.post(
        "/v1/extractions", json={"text": "a", "schema": {"type": "objekt"}}, headers={"Prefer": "defer-on-failure"}
    )
    assert invalid.status_code == 400


# --------------------------------------------------------------------------- S3 uploads retried as jobs


def read_object(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())  # type: ignore[no-any-return]
    except s3.exceptions.NoSuchKey:
        return None


def test_upload_during_an_outage_is_retried_as_a_job_until_it_has_a_result(
    fast_jobs: LocalStack,
    simulator: ProviderSimulator,
    s3: Any,
    bucket: str,
    aws_clients: Callable[[str], Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 5 s between job attempts: on a slow machine the outage must not use up the job's deliveries
    # before the test has seen one attempt fail and ended it.
    monkeypatch.setenv("JOB_BACKOFF_BASE", "5")
    monkeypatch.setenv("JOB_BACKOFF_MAX", "5")
    wiring.reset()
    simulator.add_fault("overloaded")  # every provider answers 503/529
    run = uuid.uuid4().hex[:8]
    key = f"incoming/extract/contact/{run}/card.md"
    s3.put_object(Bucket=bucket, Key=key, Body=unique("# Jane Doe\nCTO, Acme GmbH\njane@acme.example").encode())
    error_key, result_key = f"errors/extract/contact/{run}/card.md.json", f"results/extract/contact/{run}/card.md.json"

    handed_over = wait_for_object(s3, bucket, error_key)
    assert handed_over["status"] == "retrying" and handed_over["job_id"].startswith("job_")
    assert handed_over["error"]["code"] == "providers_unavailable" and handed_over["error"]["retryable"] is True
    assert handed_over["source_key"] == key and handed_over["schema"] == "contact"
    # The job's own attempts fail too while the outage lasts, and say so (still retrying).
    retried = wait_for(
        lambda: (record := read_object(s3, bucket, error_key)) and record.get("attempt", 0) >= 1 and record,
        timeout=60,
        what="a job attempt during the outage",
    )
    assert retried["status"] == "retrying" and retried["job_id"] == handed_over["job_id"]
    assert read_object(s3, bucket, result_key) is None

    simulator.clear_faults()  # the providers recover: the next attempt extracts
    result = wait_for_object(s3, bucket, result_key, timeout=60)
    assert result["source_key"] == key and result["schema"] == "contact" and result["job_id"] == handed_over["job_id"]
    assert validation_problems(named_schema("contact"), result["result"]) == []
    assert result["cost_usd"] > 0 and result["provider"] in {"openai", "anthropic", "gemini"}
    resolved = wait_for(
        lambda: (record := read_object(s3, bucket, error_key)) and record["status"] == "resolved" and record,
        timeout=20,
        what="the error object marked resolved",
    )
    assert resolved["result_key"] == result_key
    job = aws_clients("dynamodb").get_item(
        TableName=fast_jobs.physical["JobsTable"], Key={"job_id": {"S": handed_over["job_id"]}}, ConsistentRead=True
    )["Item"]
    assert (job["status"]["S"], job["source"]["S"], job["tenant"]["S"]) == ("succeeded", "s3", "documents")
    assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] > 0  # the document stays


def test_document_jobs_cannot_be_claimed_by_an_api_caller(fast_jobs: LocalStack, api: httpx.Client) -> None:
    """A tenant's job naming an upload key reads only its own prefix and writes no upload objects."""
    response = api.post(
        "/v1/jobs",
        json={
            "operation": "extraction",
            "input": {"s3": {"key": "incoming/extract/contact/x.md"}, "schema": "contact"},
        },
    )
    # Refused at submit, as the synchronous route refuses it (issue 12), rather than accepted and failed later.
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert (error["code"], error["details"]["param"]) == ("document_forbidden", "s3.key")


def test_an_upload_whose_failure_cannot_be_recorded_fails_the_invocation(local_stack: LocalStack) -> None:
    """Then Lambda retries the S3 event and sends it to the on-failure queue: nothing is dropped silently."""
    on_failure = local_stack.template.resources["ExtractionFunction"]["Properties"]["EventInvokeConfig"]
    destination = on_failure["DestinationConfig"]["OnFailure"]
    assert destination["Type"] == "SQS"
    assert destination["Destination"] == {"Fn::GetAtt": ["ExtractionFailuresQueue", "Arn"]}
    assert local_stack.template.resources["ExtractionFailuresQueue"]["Type"] == "AWS::SQS::Queue"

    gone = f"no-such-bucket-{uuid.uuid4().hex[:8]}"  # neither the document nor its error object can be reached
    record = {
        "eventSource": "aws:s3",
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": gone}, "object": {"key": "incoming/extract/contact/card.md"}},
    }
    with pytest.raises(Exception, match="NoSuchBucket"):
        local_stack.invoke("ExtractionFunction", {"Records": [record]})
