"""Summarization over the provider simulator (real sockets), and end to end through the local stack:
stuff, map-reduce call counts, collapse recursion, refine order, per-chunk caching, deadlines, the
degraded extractive mode, POST /v1/summaries, S3 uploads and Step Functions payloads."""

from __future__ import annotations

import json
import random
import re
import string
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from llm_gateway.config import Settings
from llm_gateway.deadline import Deadline
from llm_gateway.errors import (
    AllProvidersFailedError,
    DeadlineExceededError,
    InvalidRequestError,
    ProviderBadRequestError,
)
from llm_gateway.retry import RetryPolicy
from llm_gateway.runtime import run_sync
from llm_gateway.seams import RequestContext
from llm_gateway.service import build_gateway
from llm_gateway.summarize import CallTimer, Summarizer, SummaryRequest
from llm_gateway.tokens import estimate_text_tokens
from local.context import LambdaContext
from local.simulator import ProviderSimulator
from local.stack import LocalStack, api_gateway_event

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


def gateway_for(sim: ProviderSimulator, **settings: Any):
    urls = sim.base_urls()
    config = Settings(
        openai_base_url=urls["openai"],
        anthropic_base_url=urls["anthropic"],
        gemini_base_url=urls["gemini"],
        api_keys={p: "sim-key" for p in ("openai", "anthropic", "gemini")},
        request_timeout_s=5.0,
        **settings,
    )
    retry = RetryPolicy(max_attempts=2, base_delay_s=0.01, max_delay_s=0.05, rng=random.Random(5))
    return build_gateway(config, retry=retry)


def summarize(gateway: Any, text: str, *, deadline_s: float = 30.0, timer: CallTimer | None = None, **fields: Any):
    fields.setdefault("model", "gpt-4o-mini")
    fields.setdefault("fallback", [])
    request = SummaryRequest.model_validate({"text": text, **fields})
    ctx = RequestContext(tenant="t1", request_id="r1", deadline=Deadline(deadline_s), operation="summarization")
    return run_sync(Summarizer(gateway, concurrency=8, timer=timer).summarize(text, request, ctx))


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
    result = summarize(gateway_for(simulator), document(12), chunk_tokens=250)
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
    result = summarize(gateway_for(simulator), document(16), chunk_tokens=100)
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
    request = SummaryRequest.model_validate({"text": text, "model": "gpt-4o-mini", "chunk_tokens": 100})
    ctx = RequestContext(tenant="t1", request_id="r1", deadline=Deadline(30))
    result = run_sync(Summarizer(gateway, concurrency=5).summarize(text, request, ctx))
    assert result.chunks == 12
    assert peak == 5


def test_a_retried_document_does_not_pay_again_for_finished_chunks(simulator, local_stack):
    gateway = gateway_for(simulator, cache_table=local_stack.physical["CacheTable"])
    poisoned = document(8) + "\n\n" + "[[sim:fault=bad_request]] " + paragraph(8)  # its own chunk, fails
    with pytest.raises(ProviderBadRequestError) as info:
        summarize(gateway, poisoned, chunk_tokens=130)
    assert len(info.value.attempts) == 5  # four chunks paid for, then the failure
    simulator.clear_calls()

    retried = summarize(gateway, document(8), chunk_tokens=130)
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


def test_a_document_that_cannot_finish_in_time_is_refused_before_any_call(simulator):
    with pytest.raises(DeadlineExceededError) as info:
        summarize(gateway_for(simulator), document(40), chunk_tokens=100, deadline_s=3.0, timer=CallTimer())
    err = info.value
    assert (err.code, err.http_status, err.retryable) == ("deadline_exceeded", 504, True)
    assert err.details["phase"] == "map_reduce" and err.details["estimated_s"] > err.details["remaining_s"]
    assert simulator.calls() == []


def test_measured_call_times_replace_the_prior_estimate(simulator):
    timer = CallTimer()
    assert timer.expected("model:x", 240) == pytest.approx(4.0)
    summarize(gateway_for(simulator), document(4), chunk_tokens=100, timer=timer)  # the simulator is fast
    assert timer.expected("gpt-4o-mini", 240) < 1.0
    result = summarize(gateway_for(simulator), document(40), chunk_tokens=100, deadline_s=3.0, timer=timer)
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
    body = {"text": document(12), "chunk_tokens": 250, "model": "gemini-2.0-flash", "fallback": []}
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
    assert other.status_code == 400 and other.json()["error"]["details"]["param"] == "s3.key"


def test_http_request_that_cannot_finish_before_api_gateway_gives_up(local_stack):
    text = document(60)
    match = local_stack.routes.match("POST", "/v1/summaries")
    event = api_gateway_event(
        match=match, method="POST", path="/v1/summaries", query="", headers=[("content-type", "application/json")],
        body=json.dumps({"text": text, "chunk_tokens": 100, "concurrency": 1}).encode(), source_ip="127.0.0.1",
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
    context = LambdaContext(function_name="summarization", timeout_s=2.0)
    with pytest.raises(Exception) as info:
        too_long = {"text": document(60), "chunk_tokens": 100, "concurrency": 1}
        local_stack.invoke("SummarizationFunction", too_long, context)
    assert type(info.value).__name__ == "DeadlineExceededError"
    assert json.loads(str(info.value))["retryable"] is True


def test_prefer_respond_async_queues_a_job_that_the_worker_summarizes(api, simulator):
    headers = {"x-api-key": "key-a", "prefer": "respond-async"}
    accepted = api.post("/v1/summaries", json={"text": document(12), "chunk_tokens": 250}, headers=headers)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]
    assert accepted.headers["location"] == f"/v1/jobs/{job_id}"
    deadline = time.monotonic() + 20
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
