"""Summarization over the provider simulator (real sockets), and end to end through the local stack:
stuff, map-reduce call counts, collapse recursion, refine order, per-chunk caching, deadlines, the
degraded extractive mode, POST /v1/summaries, S3 uploads and Step Functions payloads."""

from __future__ import annotations

import json
import re
import string
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from llm_gateway import wiring
from llm_gateway.catalog import Catalog, default_catalog
from llm_gateway.config import Settings
from llm_gateway.documents.chunking import ESTIMATE_SAFETY
from llm_gateway.documents.tokens import estimate_text_tokens
from llm_gateway.errors import (
    AllProvidersFailedError,
    DeadlineExceededError,
    InvalidRequestError,
    ProviderBadRequestError,
)
from llm_gateway.interfaces import RequestContext
from llm_gateway.jobs import store as jobs
from llm_gateway.jobs.model import Job
from llm_gateway.operations.summarization import run as summary_run_module
from llm_gateway.operations.summarization import summarizer as summarizer_module
from llm_gateway.operations.summarization.planning import CallTimer
from llm_gateway.operations.summarization.request import SummaryRequest
from llm_gateway.operations.summarization.summarizer import Summarizer
from llm_gateway.routing.deadline import Deadline
from llm_gateway.routing.retry import RetryPolicy
from llm_gateway.runtime import run_sync
from llm_gateway.wiring import build_gateway
from local.context import LambdaContext
from local.simulator import ProviderSimulator
from local.stack import LocalStack, api_gateway_event
from tests.support.accounting import unique

pytestmark = pytest.mark.integration

FILLER = "the committee reviewed the harbour budget and the ferry timetable with the local council and residents"


def section_id(i: int) -> str:
    return string.ascii_lowercase[i // 26] + string.ascii_lowercase[i % 26]


def paragraph(i: int) -> str:
    """One sentence of exactly 238 characters, no digits: with its blank line, exactly 60 tokens."""
    text = f"Section {section_id(i)} says that {FILLER} {FILLER} {FILLER}"[:237]
    return text.rstrip() + "s" * (237 - len(text.rstrip())) + "."


def document(paragraphs: int) -> str:
    return "\n\n".join(paragraph(i) for i in range(paragraphs))


def sections_in(text: str) -> list[str]:
    return re.findall(r"Section ([a-z]{2}) says", text)


def gateway_for(sim: ProviderSimulator, *, catalog: Catalog | None = None, **settings: Any):
    urls = sim.base_urls()
    config = Settings(
        openai_base_url=urls["openai"],
        anthropic_base_url=urls["anthropic"],
        gemini_base_url=urls["gemini"],
        **{f"{p}_api_key": "sim-key" for p in ("openai", "anthropic", "gemini")},
        request_timeout_s=5.0,
        **settings,
    )
    retry = RetryPolicy(max_attempts=2, base_delay_s=0.01, max_delay_s=0.05)
    return build_gateway(config, retry=retry, catalog=catalog)


def summarize(
    gateway: Any,
    text: str,
    *,
    deadline_s: float = 30.0,
    timer: CallTimer | None = None,
    plan_ahead: bool = False,
    concurrency: int = 8,
    tenant: str = "t1",
    **fields: Any,
):
    fields.setdefault("model", "gpt-4o-mini")
    fields.setdefault("fallback", [])
    request = SummaryRequest.model_validate({"text": text, **fields})
    ctx = RequestContext(tenant=tenant, request_id="r1", deadline=Deadline(deadline_s), operation="summarization")
    summarizer = Summarizer(gateway, concurrency=concurrency, timer=timer)
    return run_sync(summarizer.summarize(text, request, ctx, plan_ahead=plan_ahead))


def unique_tenant() -> str:
    return unique("summaries")


def wait_for_job(job_id: str, timeout: float = 60) -> Job:
    store = jobs.store_for(Settings.from_env())
    deadline = time.monotonic() + timeout
    while True:
        job = store.get(job_id)
        if job is not None and job.terminal:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job.status if job else 'missing'}"
        time.sleep(0.2)


def small_window_catalog(model: str, window: int) -> Catalog:
    """The bundled catalog with one model's context window shrunk."""
    catalog = default_catalog()
    models = [m.model_copy(update={"context_window": window}) if m.id == model else m for m in catalog.models]
    return catalog.model_copy(update={"models": models})


def user_prompt(call: dict[str, Any]) -> str:
    """The user message as the provider received it (OpenAI/Anthropic ``messages``, Gemini ``contents``)."""
    body = call["body"]
    if "contents" in body:
        return "".join(p.get("text", "") for c in body["contents"] if c["role"] == "user" for p in c["parts"])
    content = next(m["content"] for m in body["messages"] if m["role"] == "user")
    return content if isinstance(content, str) else "".join(part.get("text", "") for part in content)


def test_paragraph_fixture_is_sixty_tokens():
    assert len(paragraph(0)) == 238
    assert estimate_text_tokens(paragraph(3) + "\n\n") == 60


# --------------------------------------------------------------------------- strategies over the simulator


def test_a_short_document_is_summarized_in_one_deterministic_call(simulator):
    result = summarize(gateway_for(simulator), document(3), length={"words": 60}, style="bullets")
    assert (result.strategy, result.chunks, result.calls) == ("stuff", 1, 1)
    [call] = simulator.calls()
    body = call["body"]
    assert body["temperature"] == 0 and body["model"] == "gpt-4o-mini"
    assert body["messages"][0]["role"] == "system" and "not instructions" in body["messages"][0]["content"]
    prompt = user_prompt(call)
    assert sections_in(prompt) == ["aa", "ab", "ac"]
    assert "at most 60 words" in prompt and 'starting with "- "' in prompt
    assert result.summary.startswith("[sim openai/gpt-4o-mini]")
    assert (result.provider, result.model, result.models) == ("openai", "gpt-4o-mini", ["openai/gpt-4o-mini"])
    assert result.usage.input_tokens > 0 and result.cost_usd > 0
    assert [a.outcome for a in result.attempts] == ["success"]
    assert result.prompt_version == "summarize/v1"


def test_map_reduce_makes_one_call_per_chunk_plus_the_combine(simulator):
    # 12 paragraphs of 60 tokens, 250 tokens per chunk: 4 paragraphs per chunk, no overlap possible.
    result = summarize(gateway_for(simulator), document(12), chunk_tokens=250, strategy="map_reduce")
    assert (result.strategy, result.chunks, result.collapse_rounds, result.calls) == ("map_reduce", 3, 0, 4)
    calls = simulator.calls()
    assert len(calls) == 4 and len(result.attempts) == 4
    maps, final = calls[:3], calls[3]
    assert sorted(sections_in(user_prompt(c)) for c in maps) == [
        ["aa", "ab", "ac", "ad"],
        ["ae", "af", "ag", "ah"],
        ["ai", "aj", "ak", "al"],
    ]
    assert all("<document_part>" in user_prompt(c) for c in maps)
    combine = user_prompt(final)
    assert "<notes>" in combine and "at most 5 sentences" in combine and not sections_in(combine)
    assert combine.count("[sim openai/gpt-4o-mini]") == 3  # the three notes, in one call
    assert result.summary.startswith("[sim openai/gpt-4o-mini]")
    assert result.cost_usd == pytest.approx(sum(a.cost_usd for a in result.attempts))


def test_notes_too_long_for_one_call_are_collapsed_recursively(simulator):
    # 100 tokens per chunk: one paragraph per chunk, and 16 notes of ~45 tokens need several rounds.
    result = summarize(gateway_for(simulator), document(16), chunk_tokens=100, strategy="map_reduce")
    assert result.strategy == "map_reduce" and result.chunks == 16
    assert result.collapse_rounds >= 2
    calls = simulator.calls()
    assert len(calls) == result.calls
    kinds = ["map" if "<document_part>" in user_prompt(c) else "collapse" if "plain prose notes" in user_prompt(c)
             else "final" for c in calls]  # fmt: skip
    assert kinds[:16] == ["map"] * 16  # every map call finished before the first collapse started
    assert kinds[-1] == "final" and set(kinds[16:-1]) == {"collapse"}
    collapses = [user_prompt(c) for c in calls[16:-1]]
    assert len(collapses) >= result.collapse_rounds + 1  # at least two groups in the first round
    for prompt in collapses:
        notes = prompt.split("<notes>")[1].split("</notes>")[0].strip().split("\n\n")
        assert len(notes) >= 2 and all(n.startswith("[sim ") for n in notes)
    final_notes = user_prompt(calls[-1]).split("<notes>")[1].split("</notes>")[0].strip()
    assert estimate_text_tokens(final_notes) <= 100


def test_refine_goes_through_the_chunks_in_order_carrying_the_summary(simulator):
    simulator.script("openai", ["SUMMARY ONE", "SUMMARY TWO", "SUMMARY THREE", "SUMMARY FOUR"])
    result = summarize(gateway_for(simulator), document(8), chunk_tokens=130, strategy="refine")
    assert (result.strategy, result.chunks, result.calls) == ("refine", 4, 4)
    assert result.summary == "SUMMARY FOUR"
    prompts = [user_prompt(c) for c in simulator.calls()]
    assert [sections_in(p) for p in prompts] == [["aa", "ab"], ["ac", "ad"], ["ae", "af"], ["ag", "ah"]]
    assert "<summary_so_far>" not in prompts[0]
    for previous, prompt in zip(["SUMMARY ONE", "SUMMARY TWO", "SUMMARY THREE"], prompts[1:], strict=True):
        assert f"<summary_so_far>\n{previous}\n</summary_so_far>" in prompt


def test_map_calls_run_in_parallel_up_to_the_concurrency_limit(simulator):
    simulator.set_latency(60)
    gateway = gateway_for(simulator)
    in_flight = 0
    peak = 0
    real_complete = gateway.complete

    async def counting_complete(request, ctx):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            return await real_complete(request, ctx)
        finally:
            in_flight -= 1

    gateway.complete = counting_complete
    text = document(12)
    request = SummaryRequest.model_validate(
        {"text": text, "model": "gpt-4o-mini", "chunk_tokens": 100, "strategy": "map_reduce"}
    )
    ctx = RequestContext(tenant="t1", request_id="r1", deadline=Deadline(30))
    result = run_sync(Summarizer(gateway, concurrency=5).summarize(text, request, ctx))
    assert result.chunks == 12
    assert peak == 5


def test_a_retried_document_does_not_pay_again_for_finished_chunks(simulator, local_stack):
    gateway = gateway_for(simulator, cache_table=local_stack.physical["CacheTable"])
    poisoned = document(8) + "\n\n" + "[[sim:fault=bad_request]] " + paragraph(8)  # its own chunk, fails
    with pytest.raises(ProviderBadRequestError) as info:
        summarize(gateway, poisoned, chunk_tokens=130, strategy="map_reduce")
    assert len(info.value.attempts) == 5  # four chunks paid for, then the failure
    simulator.clear_calls()

    retried = summarize(gateway, document(8), chunk_tokens=130, strategy="map_reduce")
    assert (retried.chunks, retried.cached_calls) == (4, 4)
    calls = simulator.calls()
    assert len(calls) == retried.calls - 4 == len(retried.attempts)  # only the combining reached a provider
    assert all("<notes>" in user_prompt(c) for c in calls)
    assert retried.cost_usd == pytest.approx(sum(a.cost_usd for a in retried.attempts))


def test_prompts_are_versioned_and_an_unknown_version_is_refused(simulator):
    summarize(gateway_for(simulator), document(2))
    [call] = simulator.calls()
    assert call["body"]["messages"][0]["content"].startswith("You write faithful, concise summaries")
    with pytest.raises(InvalidRequestError, match="unknown summarization prompt version"):
        Summarizer(gateway_for(simulator), prompt_version="v999")


# --------------------------------------------------------------------------- time and outages


def test_planning_ahead_a_document_that_cannot_finish_in_time_is_refused_before_any_call(simulator):
    with pytest.raises(DeadlineExceededError) as info:
        summarize(gateway_for(simulator), document(40), chunk_tokens=100, strategy="map_reduce", deadline_s=3.0,
                  timer=CallTimer(), plan_ahead=True)  # fmt: skip
    err = info.value
    assert (err.code, err.http_status, err.retryable) == ("deadline_exceeded", 504, True)
    assert err.details["phase"] == "map_reduce" and err.details["estimated_s"] > err.details["remaining_s"]
    assert simulator.calls() == []


def test_measured_call_times_replace_the_prior_estimate(simulator):
    timer = CallTimer()
    assert timer.expected("model:x", 240) == pytest.approx(4.0)
    summarize(gateway_for(simulator), document(4), timer=timer)  # the simulator is fast
    assert timer.expected("gpt-4o-mini", 240) < 1.0
    result = summarize(gateway_for(simulator), document(40), chunk_tokens=100, strategy="map_reduce", deadline_s=3.0,
                       timer=timer, plan_ahead=True)  # fmt: skip
    assert result.chunks == 40  # the same document and deadline as above, now known to fit


def test_when_every_provider_is_down_the_degraded_summary_is_extractive(simulator):
    simulator.add_fault("overloaded", retry_after=0)
    text = document(10) + "\n\nThe ferry timetable changes in spring."
    result = summarize(gateway_for(simulator), text, model=None, fallback=None, allow_degraded=True,
                       length={"sentences": 2})  # fmt: skip
    assert result.degraded is True and result.strategy == "extractive"
    assert result.degraded_reason == "providers_unavailable"
    assert result.provider is None and result.model is None
    assert result.attempts and all(a.outcome == "error" for a in result.attempts)
    assert {a.provider for a in result.attempts} == {"openai", "anthropic", "gemini"}  # every provider was tried
    sentences = [s for s in re.split(r"(?<=\.) ", result.summary) if s]
    assert len(sentences) == 2 and all(s in text for s in sentences)


def test_without_permission_an_outage_is_an_error_with_every_attempt(simulator):
    simulator.add_fault("overloaded", retry_after=0)
    with pytest.raises(AllProvidersFailedError) as info:
        summarize(gateway_for(simulator), document(3), model=None, fallback=None)
    assert info.value.retryable and info.value.attempts


# --------------------------------------------------------------------------- through the local stack


@pytest.fixture
def api(local_stack: LocalStack) -> Iterator[httpx.Client]:
    assert local_stack.api_url
    with httpx.Client(base_url=local_stack.api_url, timeout=30) as client:
        yield client


def wait_for_object(s3: Any, bucket: str, key: str, timeout: float = 20) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return s3.get_object(Bucket=bucket, Key=key)  # type: ignore[no-any-return]
        except s3.exceptions.NoSuchKey:
            time.sleep(0.1)
    return None


def test_http_endpoint_returns_the_summary(api, simulator):
    body = {"text": document(12), "chunk_tokens": 250, "strategy": "map_reduce", "model": "gemini-2.0-flash",
            "fallback": []}  # fmt: skip
    response = api.post("/v1/summaries", json=body, headers={"x-api-key": "key-a"})
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["strategy"], result["chunks"], result["calls"], result["degraded"]) == ("map_reduce", 3, 4, False)
    assert result["summary"].startswith("[sim gemini/gemini-2.0-flash]")
    assert response.headers["x-gateway-strategy"] == "map_reduce"
    assert response.headers["x-gateway-model"] == "gemini-2.0-flash"
    assert response.headers["x-gateway-degraded"] == "false"
    assert len(simulator.calls("gemini")) == 4 - result["cached_calls"]


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({"length": {"sentences": 3}}, 400, "invalid_request", "body"),
        ({"text": "x", "s3": {"key": "incoming/a.txt"}}, 400, "invalid_request", "body"),
        ({"text": "Some text.", "length": {"sentences": 2, "words": 40}}, 400, "invalid_request", "length"),
        ({"text": "Some text.", "style": "haiku"}, 400, "invalid_request", "style"),
        ({"text": "Some text.", "chunk_tokens": 5}, 400, "invalid_request", "chunk_tokens"),
        ({"text": "   "}, 400, "invalid_request", "text"),
        ({"text": "Some text.", "model": "no-such-model"}, 404, "model_not_found", None),
    ],
)
def test_http_endpoint_refuses_bad_input_with_a_clear_error(api, simulator, body, status, code, param):
    response = api.post("/v1/summaries", json=body, headers={"x-api-key": "key-a"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    if param is not None:
        assert error["details"]["param"] == param
    assert simulator.calls() == []


def test_http_s3_references_are_limited_to_the_tenants_prefix(api, local_stack, aws_clients, simulator):
    bucket = local_stack.physical["DocumentsBucket"]
    key = "incoming/tenants/tenant-a/notes.md"
    aws_clients("s3").put_object(Bucket=bucket, Key=key, Body=document(3).encode())
    own = api.post("/v1/summaries", json={"s3": {"key": key}}, headers={"x-api-key": "key-a"})
    assert own.status_code == 200, own.text
    assert own.json()["source"]["key"] == key and own.json()["strategy"] == "stuff"
    other = api.post("/v1/summaries", json={"s3": {"key": key}}, headers={"x-api-key": "key-b"})
    assert other.status_code == 403 and other.json()["error"]["details"]["param"] == "s3.key"


def test_http_request_that_cannot_finish_before_api_gateway_gives_up(local_stack):
    text = document(60)
    match = local_stack.routes.match("POST", "/v1/summaries")
    event = api_gateway_event(
        match=match, method="POST", path="/v1/summaries", query="",
        headers=[("content-type", "application/json"), ("x-api-key", "key-a")],
        body=json.dumps({"text": text, "chunk_tokens": 100, "strategy": "map_reduce", "concurrency": 1}).encode(),
        source_ip="127.0.0.1",
        stage="test", api_key="key-a", tenant="tenant-a",
    )  # fmt: skip
    context = LambdaContext(function_name="summarization", timeout_s=2.0)  # 0.5 s after the safety margin
    response = local_stack.invoke("SummarizationFunction", event, context)
    body = json.loads(response["body"])
    if local_stack.env.get("JOBS_TABLE"):
        assert response["statusCode"] == 202 and body["object"] == "job"
        raw = response.get("headers") or {k: v[-1] for k, v in response["multiValueHeaders"].items()}
        headers = {k.lower(): v for k, v in raw.items()}
        assert headers["location"] == f"/v1/jobs/{body['id']}"
        assert body["deferred_because"]["code"] == "deadline_exceeded"
    else:
        assert response["statusCode"] == 504
        assert body["error"]["code"] == "deadline_exceeded" and body["error"]["retryable"] is True


def test_s3_upload_is_summarized_into_json_and_text(local_stack, aws_clients, simulator):
    bucket = local_stack.physical["DocumentsBucket"]
    s3 = aws_clients("s3")
    s3.put_object(Bucket=bucket, Key="incoming/summarize/reports/q3 report.md", Body=document(12).encode())
    found = wait_for_object(s3, bucket, "results/summarize/reports/q3 report.md.json")
    assert found is not None, "no result object"
    result = json.loads(found["Body"].read())
    assert result["source_key"] == "incoming/summarize/reports/q3 report.md"
    assert result["strategy"] in ("stuff", "map_reduce") and result["degraded"] is False
    assert result["summary"] and result["provider"] and result["model"] and "cost_usd" in result
    assert result["source"] == {"bucket": bucket, "key": result["source_key"], "kind": "text", "pages": None}
    text = s3.get_object(Bucket=bucket, Key="results/summarize/reports/q3 report.md.txt")
    assert text["Body"].read().decode() == result["summary"]
    assert text["ContentType"].startswith("text/plain")


def test_s3_html_upload_is_stripped_to_text_before_summarizing(local_stack, aws_clients, simulator):
    bucket = local_stack.physical["DocumentsBucket"]
    s3 = aws_clients("s3")
    html = f"<html><head><script>alert('x')</script></head><body><h1>Ferry news</h1><p>{paragraph(0)}</p></body></html>"
    s3.put_object(Bucket=bucket, Key="incoming/summarize/page.html", Body=html.encode(), ContentType="text/html")
    found = wait_for_object(s3, bucket, "results/summarize/page.html.json")
    assert found is not None and json.loads(found["Body"].read())["source"]["kind"] == "html"
    prompts = [user_prompt(c) for c in simulator.calls()]
    assert any("Ferry news" in p and "Section aa says" in p for p in prompts)
    assert not any("<p>" in p or "alert" in p for p in prompts)


def test_s3_upload_that_cannot_be_read_leaves_an_error_object(local_stack, aws_clients):
    bucket = local_stack.physical["DocumentsBucket"]
    s3 = aws_clients("s3")
    s3.put_object(Bucket=bucket, Key="incoming/summarize/blob.bin", Body=b"\x00\x01\x02binary")
    found = wait_for_object(s3, bucket, "errors/summarize/blob.bin.json")
    assert found is not None, "no error object"
    record = json.loads(found["Body"].read())
    assert record["error"]["code"] == "unsupported_document" and record["error"]["retryable"] is False
    assert record["source_key"] == "incoming/summarize/blob.bin"
    s3.head_object(Bucket=bucket, Key="incoming/summarize/blob.bin")  # the document is still there


def test_step_functions_payload_path_returns_the_result_and_names_errors(local_stack, simulator):
    result = local_stack.invoke("SummarizationFunction", {"text": document(3), "length": {"words": 40}})
    assert result["strategy"] == "stuff" and result["summary"]
    with pytest.raises(Exception) as info:
        local_stack.invoke("SummarizationFunction", {"text": "Some text.", "style": "haiku"})
    assert type(info.value).__name__ == "InvalidRequestError"
    assert json.loads(str(info.value))["code"] == "invalid_request"


def test_step_functions_payload_too_long_for_the_invocation_returns_a_job_that_finishes_it(local_stack, simulator):
    context = LambdaContext(function_name="summarization", timeout_s=2.0)  # 0.5 s after the safety margin
    too_long = {"text": document(60), "chunk_tokens": 100, "strategy": "map_reduce", "concurrency": 1,
                "tenant": unique_tenant()}  # fmt: skip
    reference = local_stack.invoke("SummarizationFunction", too_long, context)
    assert reference["object"] == "job" and reference["operation"] == "summarization"
    assert reference["deferred_because"]["code"] == "deadline_exceeded"
    job = wait_for_job(reference["id"])
    assert job.status == "succeeded" and job.tenant == too_long["tenant"] and job.source == "stepfunctions"
    result = jobs.store_for(Settings.from_env()).load_result(job)
    assert (result["strategy"], result["chunks"]) == ("map_reduce", 60)


def test_prefer_respond_async_queues_a_job_that_the_worker_summarizes(api, simulator):
    headers = {"x-api-key": "key-a", "prefer": "respond-async"}
    body = {"text": document(12), "chunk_tokens": 250, "strategy": "map_reduce"}
    accepted = api.post("/v1/summaries", json=body, headers=headers)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]
    assert accepted.headers["location"] == f"/v1/jobs/{job_id}"
    deadline = time.monotonic() + 60
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = api.get(f"/v1/jobs/{job_id}", headers={"x-api-key": "key-a"}).json()
        if job.get("status") in ("succeeded", "failed"):
            break
        time.sleep(0.1)
    assert job.get("status") == "succeeded", job
    assert job["result"]["strategy"] == "map_reduce" and job["result"]["chunks"] == 3
    assert api.get(f"/v1/jobs/{job_id}", headers={"x-api-key": "key-b"}).status_code == 404  # other tenant
    refused = api.post("/v1/summaries", json={"text": "x", "style": "haiku"}, headers=headers)
    assert refused.status_code == 400 and refused.json()["error"]["details"]["param"] == "style"


# --------------------------------------------------------------------------- choosing the strategy


def test_auto_stuffs_a_document_that_fits_the_models_window_whatever_the_chunk_size(simulator):
    text = document(200)  # 12,000 tokens: four 3,000-token chunks, but one call of a 128k model
    assert estimate_text_tokens(text) >= 12_000
    result = summarize(gateway_for(simulator), text, chunk_tokens=3_000)
    assert (result.strategy, result.chunks, result.calls) == ("stuff", 1, 1)
    [call] = simulator.calls()
    assert sections_in(user_prompt(call)) == [section_id(i) for i in range(200)]


def test_auto_maps_a_document_over_the_stuff_ceiling(simulator):
    text = document(20)  # 1,200 tokens
    request = SummaryRequest.model_validate({"text": text, "model": "gpt-4o-mini", "fallback": [], "chunk_tokens": 500})
    ctx = RequestContext(tenant="t1", request_id="r1", deadline=Deadline(30), operation="summarization")
    result = run_sync(Summarizer(gateway_for(simulator), stuff_max_tokens=1_000).summarize(text, request, ctx))
    assert (result.strategy, result.chunks) == ("map_reduce", 3)


def test_auto_maps_a_document_too_long_for_the_smallest_window_of_the_route(simulator):
    catalog = small_window_catalog("gpt-4o-mini", 2_000)
    result = summarize(gateway_for(simulator, catalog=catalog), document(30), fallback=[])  # 1,800 tokens
    assert result.strategy == "map_reduce" and result.chunks >= 2


def test_chunks_leave_room_for_the_notes_a_map_call_asks_for(simulator):
    # A map call asks for up to 564 tokens of notes, more than the 304 of a 5-sentence answer. Chunks sized
    # for the answer alone eat into the margin kept for the token estimate being low (ESTIMATE_SAFETY).
    window = 3_000
    catalog = small_window_catalog("gpt-4o-mini", window)
    result = summarize(gateway_for(simulator, catalog=catalog), document(100), length={"sentences": 5})
    assert result.strategy == "map_reduce" and result.chunks >= 3
    maps = [c for c in simulator.calls() if "<document_part>" in user_prompt(c)]
    assert len(maps) == result.chunks
    for call in maps:
        prompt = user_prompt(call)
        part = prompt.split("<document_part>")[1].split("</document_part>")[0].strip()
        prompt_tokens = sum(estimate_text_tokens(m["content"]) for m in call["body"]["messages"])
        around = prompt_tokens - estimate_text_tokens(part)
        room = window - around - call["body"]["max_completion_tokens"]
        assert estimate_text_tokens(part) <= room * (1 - ESTIMATE_SAFETY) + 1


# --------------------------------------------------------------------------- resumable: work until the time is up


def test_a_long_map_phase_finishes_over_several_deliveries_paying_for_each_chunk_once(simulator, local_stack):
    simulator.set_latency(300)
    gateway = gateway_for(simulator, cache_table=local_stack.physical["CacheTable"])
    timer = CallTimer()  # a warm worker: it knows how long a call takes
    timer.observe("gpt-4o-mini", 0.3)
    text = document(96)  # 24 chunks of 4 paragraphs: 6 waves of 4 calls, about 1.8 s of map calls
    fields = {"chunk_tokens": 250, "strategy": "map_reduce", "concurrency": 4, "timer": timer}
    tenant = unique_tenant()  # a job keeps its tenant, and the cache is per tenant
    progress: list[dict[str, Any]] = []
    result = None
    for _ in range(10):  # deliveries of a job whose attempts have 1.5 s each
        try:
            result = summarize(gateway, text, deadline_s=1.5, tenant=tenant, **fields)
            break
        except DeadlineExceededError as err:
            assert err.retryable
            progress.append(err.details)
    assert result is not None, f"not finished after 10 deliveries: {progress}"
    assert progress, "the document was meant to need more than one delivery"
    assert all(p["paid_calls"] > 0 for p in progress), f"a delivery made no progress: {progress}"
    assert progress[0]["phase"] == "map" and 0 < progress[0]["done"] < progress[0]["total"] == 24
    prompts = [user_prompt(c) for c in simulator.calls()]
    maps = [p for p in prompts if "<document_part>" in p]
    assert len(maps) == result.chunks == 24 and len(set(maps)) == 24  # every chunk paid for once
    assert len(prompts) == len(set(prompts))  # nor any collapse or combine twice
    assert result.cached_calls >= progress[0]["done"]  # the last delivery read earlier ones' work


def test_a_resumable_run_starts_one_wave_even_when_the_estimate_exceeds_the_whole_attempt(simulator):
    timer = CallTimer()
    timer.observe("gpt-4o-mini", 100.0)  # far more than the attempt has (the gateway caps it at 5 s)
    with pytest.raises(DeadlineExceededError) as info:
        summarize(gateway_for(simulator), document(40), chunk_tokens=100, strategy="map_reduce", concurrency=4,
                  deadline_s=5.45, timer=timer)  # fmt: skip
    assert info.value.details["paid_calls"] == info.value.details["done"] == 4  # one wave, then it stopped
    assert len(simulator.calls()) == 4
    with pytest.raises(DeadlineExceededError):  # planning ahead, the same estimate refuses everything
        summarize(gateway_for(simulator), document(40), chunk_tokens=100, strategy="map_reduce", concurrency=4,
                  deadline_s=5.45, timer=timer, plan_ahead=True)  # fmt: skip
    assert len(simulator.calls()) == 4


# --------------------------------------------------------------------------- hand-off to the job queue


@pytest.fixture
def short_upload_invocations(local_stack: LocalStack) -> Iterator[None]:
    """S3 notifications reach the summarization function with 2 s left (0.5 s after the safety margin)."""
    real = local_stack._load_handler(local_stack.function_id("SummarizationFunction"))

    def with_little_time(event: Any, _context: Any) -> Any:
        return real(event, LambdaContext(function_name="summarization", timeout_s=2.0))

    local_stack.handler_overrides["SummarizationFunction"] = with_little_time
    yield


@pytest.fixture
def short_job_attempts(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Job attempts of 8 s and 1 s between them; small chunks, a fresh call timer (prior estimates), and
    generous margins for a slow machine (a cache read that times out would pay for a chunk again)."""
    settings = {
        "JOB_MAX_RUNTIME": "8",
        "JOB_BACKOFF_BASE": "1",
        "JOB_BACKOFF_MAX": "1",
        "GATEWAY_SUMMARY_MAX_CHUNK_TOKENS": "250",
        "GATEWAY_SUMMARY_STUFF_MAX_TOKENS": "1000",
        "GATEWAY_SUMMARY_CONCURRENCY": "4",
        "GATEWAY_CACHE_TIMEOUT": "5",
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(summarizer_module, "_PROCESS_TIMER", CallTimer())
    monkeypatch.setattr(summary_run_module, "FINISH_RESERVE_S", 1.5)  # generous: slow CI calls still finish
    wiring.reset()
    yield
    monkeypatch.undo()
    wiring.reset()


@pytest.mark.timeout(300)  # several job deliveries of a long document: slow on a loaded machine
def test_s3_upload_too_long_for_its_invocation_is_finished_by_a_job_over_several_deliveries(
    local_stack, aws_clients, simulator, short_upload_invocations, short_job_attempts
):
    simulator.set_latency(800)  # 6 waves of map calls, 2 of collapse and the combine: over 7 s of calls
    bucket = local_stack.physical["DocumentsBucket"]
    s3 = aws_clients("s3")
    key = f"incoming/summarize/long/{unique('doc')}.md"
    s3.put_object(Bucket=bucket, Key=key, Body=document(96).encode())  # 24 chunks of 250 tokens
    result_key = key.replace("incoming/", "results/", 1) + ".json"
    found = wait_for_object(s3, bucket, result_key, timeout=180)
    assert found is not None, "no result object"
    result = json.loads(found["Body"].read())
    assert result["source_key"] == key and result["strategy"] == "map_reduce" and result["chunks"] == 24
    text = s3.get_object(Bucket=bucket, Key=key.replace("incoming/", "results/", 1) + ".txt")
    assert text["Body"].read().decode() == result["summary"]
    job = wait_for_job(result["job_id"])  # the result object is written just before the job is marked done
    assert job.status == "succeeded" and job.source == "s3" and job.tenant == "documents"
    assert job.attempts >= 2, "the map phase was meant to need several deliveries"
    prompts = [user_prompt(c) for c in simulator.calls()]
    maps = [p for p in prompts if "<document_part>" in p]
    assert len(set(maps)) == 24  # every chunk summarized
    # Finished calls are cached and never paid again. A call still in flight when an invocation's time
    # runs out is abandoned (the provider may bill it) and made again by the next delivery: on a slow
    # machine, one or two of those; a broken cache would repay whole waves.
    assert len(prompts) - len(set(prompts)) <= 2, f"{len(prompts) - len(set(prompts))} calls paid twice"
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket=bucket, Key=key.replace("incoming/", "errors/", 1) + ".json")


def test_s3_upload_handed_to_a_job_that_fails_for_good_leaves_the_error_object(
    local_stack, aws_clients, simulator, short_upload_invocations, short_job_attempts
):
    bucket = local_stack.physical["DocumentsBucket"]
    s3 = aws_clients("s3")
    key = f"incoming/summarize/broken/{unique('doc')}.md"
    body = document(40) + "\n\n[[sim:fault=bad_request]] " + paragraph(40)  # a chunk no provider accepts
    s3.put_object(Bucket=bucket, Key=key, Body=body.encode())
    found = wait_for_object(s3, bucket, key.replace("incoming/", "errors/", 1) + ".json", timeout=60)
    assert found is not None, "no error object"
    record = json.loads(found["Body"].read())
    assert record["source_key"] == key and record["error"]["retryable"] is False
    assert record["error"]["code"] == "provider_bad_request" and record["job_id"].startswith("job_")
    job = wait_for_job(record["job_id"])
    assert job.status == "failed" and job.source == "s3"
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket=bucket, Key=key.replace("incoming/", "results/", 1) + ".json")


@pytest.fixture
def executing_state_machines(local_stack: LocalStack) -> Iterator[None]:
    """moto runs state machines for real only when told to (its default is a stub)."""
    url = f"{local_stack.moto_url}/moto-api/config"
    before = httpx.get(url, timeout=5).json().get("stepfunctions", {"execute_state_machine": False})
    httpx.post(url, json={"stepfunctions": {"execute_state_machine": True}}, timeout=5).raise_for_status()
    yield
    httpx.post(url, json={"stepfunctions": before}, timeout=5).raise_for_status()


def summary_job_states(local_stack: LocalStack) -> str:
    """The sample ExtractThenSummarize machine from its job check on (the Lambda tasks need AWS), with
    1 s instead of 30 between polls."""
    definition = local_stack.template.properties("ExtractThenSummarizeStateMachine")["Definition"]
    states = json.loads(json.dumps(definition["States"]))
    states["WaitForSummaryJob"]["Seconds"] = 1
    text = json.dumps({"StartAt": "SummaryHandedToJob", "States": states})
    arn: str = local_stack.client("stepfunctions").create_state_machine(
        name=unique("summary-job"),
        definition=text.replace("${JobsTableName}", local_stack.physical["JobsTable"]),
        roleArn="arn:aws:iam::123456789012:role/local-sfn",
    )["stateMachineArn"]
    return arn


def run_execution(local_stack: LocalStack, machine: str, data: dict[str, Any], *, meanwhile: Any = None) -> dict:
    sfn = local_stack.client("stepfunctions")
    execution = sfn.start_execution(stateMachineArn=machine, name=unique("run"), input=json.dumps(data))
    if meanwhile is not None:
        meanwhile()
    deadline = time.monotonic() + 30
    while (described := sfn.describe_execution(executionArn=execution["executionArn"]))["status"] == "RUNNING":
        assert time.monotonic() < deadline, "the execution did not end"
        time.sleep(0.2)
    return dict(described)


def test_sample_state_machine_waits_for_a_summary_handed_to_a_job(local_stack, executing_state_machines):
    machine = summary_job_states(local_stack)
    store = jobs.store_for(Settings.from_env())
    job = store.create(store.new_job(operation="summarization", tenant=unique_tenant(), source="stepfunctions"),
                       {"text": document(3)})  # fmt: skip

    def finish_the_job_later() -> None:
        time.sleep(1.5)  # the machine has polled a queued job by now
        claimed = store.claim(job)
        store.mark_succeeded(claimed, store.store_result(claimed, {"summary": "S", "strategy": "map_reduce"}))

    reference = {"object": "job", "id": job.job_id, "status": "queued", "operation": "summarization"}
    ended = run_execution(local_stack, machine, {"text": "...", "summary": {"result": reference}},
                          meanwhile=finish_the_job_later)  # fmt: skip
    assert ended["status"] == "SUCCEEDED", ended
    output = json.loads(ended["output"])
    assert output["summary"] == {"result": {"summary": "S", "strategy": "map_reduce"}, "job_id": job.job_id}

    direct = run_execution(local_stack, machine, {"summary": {"result": {"summary": "T", "strategy": "stuff"}}})
    assert direct["status"] == "SUCCEEDED" and json.loads(direct["output"])["summary"]["result"]["summary"] == "T"

    failed_job = store.create(store.new_job(operation="summarization", tenant=unique_tenant(), source="stepfunctions"),
                              {"text": document(3)})  # fmt: skip
    store.mark_failed(failed_job, {"code": "providers_unavailable", "message": "down"}, exhausted=True)
    failed = run_execution(local_stack, machine, {"summary": {"result": {"object": "job", "id": failed_job.job_id}}})
    assert failed["status"] == "FAILED" and failed.get("error") == "SummaryJobFailed"
