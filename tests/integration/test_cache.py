"""The response cache on DynamoDB (moto server) with the provider simulator, over real sockets."""

from __future__ import annotations

import base64
import os
import zlib

import boto3
import httpx
import openai
import pytest
from botocore.config import Config

from llm_gateway import aws
from llm_gateway.accounting.cache import CompletionCache
from llm_gateway.accounting.cache.dynamodb import DynamoDBCacheBackend
from llm_gateway.errors import GatewayError
from llm_gateway.models import CompletionRequest
from tests.support.accounting import MESSAGES, api_key_for, complete, dynamodb_calls, gateway_from_env, unique

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_real_aws")]

DETERMINISTIC = {"model": "gpt-4o-mini", "fallback": [], "temperature": 0}


@pytest.fixture
def gateway(local_stack):
    # The breaker is off here: these tests inject faults, and circuits live in the shared usage table.
    return gateway_from_env(breaker_backend="off")


def test_a_hit_makes_no_provider_call_and_exactly_one_cache_read(gateway, simulator):
    tenant = unique()
    first = complete(gateway, tenant, **DETERMINISTIC)
    assert not first.cached and len(simulator.calls()) == 1
    with dynamodb_calls(aws.FAST) as cache_calls:
        second = complete(gateway, tenant, **DETERMINISTIC)
    assert len(simulator.calls()) == 1
    assert dict(cache_calls) == {"GetItem": 1}
    assert second.cached and second.content == first.content and second.model == first.model
    assert second.cost_usd == 0.0 and second.attempts == []
    assert gateway.cache.counters.get("CacheHit") >= 1


def test_tenants_are_isolated_unless_they_share_a_namespace(gateway, simulator):
    a, b = unique(), unique()
    complete(gateway, a, **DETERMINISTIC)
    assert not complete(gateway, b, **DETERMINISTIC).cached
    assert len(simulator.calls()) == 2
    shared = {**DETERMINISTIC, "cache": {"namespace": "shared:faq"}}
    complete(gateway, a, **shared)
    assert complete(gateway, b, **shared).cached
    assert len(simulator.calls()) == 3


def test_non_deterministic_requests_are_not_cached(gateway, simulator):
    tenant = unique()
    for _ in range(2):
        assert not complete(gateway, tenant, model="gpt-4o-mini", fallback=[], temperature=0.7).cached
    assert len(simulator.calls()) == 2


def test_errors_are_never_cached(gateway, simulator):
    tenant = unique()
    simulator.add_fault("bad_request", provider="openai", times=1)
    with pytest.raises(GatewayError):
        complete(gateway, tenant, **DETERMINISTIC)
    assert not complete(gateway, tenant, **DETERMINISTIC).cached  # the error was not stored
    assert complete(gateway, tenant, **DETERMINISTIC).cached  # the answer was
    assert len(simulator.calls()) == 2


def test_truncated_answers_and_refusals_are_never_cached(gateway, simulator):
    tenant = unique()
    truncated = {**DETERMINISTIC, "max_tokens": 2}
    for _ in range(2):
        assert complete(gateway, tenant, **truncated).finish_reason == "length"
    simulator.script("openai", [{"content": "", "finish_reason": "content_filter"}] * 2)
    refused = {**DETERMINISTIC, "messages": [{"role": "user", "content": "Something refused."}]}
    for _ in range(2):
        try:
            assert not complete(gateway, tenant, **refused).cached
        except GatewayError as err:  # a refusal may surface as content_filtered
            assert err.code == "content_filtered"
    assert len(simulator.calls()) == 4


def test_no_cache_skips_the_read_and_no_store_the_write(gateway, simulator):
    tenant = unique()
    complete(gateway, tenant, **DETERMINISTIC, cache={"no_store": True})
    assert not complete(gateway, tenant, **DETERMINISTIC).cached  # nothing had been stored
    assert not complete(gateway, tenant, **DETERMINISTIC, cache={"no_cache": True}).cached
    assert complete(gateway, tenant, **DETERMINISTIC).cached
    assert len(simulator.calls()) == 3


def test_entries_expire_after_their_ttl(local_stack, simulator):
    gateway = gateway_from_env(breaker_backend="off")
    clock = [1_800_000_000.0]
    backend = DynamoDBCacheBackend(local_stack.physical["CacheTable"], clock=lambda: clock[0])
    gateway.cache = CompletionCache(backend, catalog_version=gateway.catalog.version, timeout_s=2)
    tenant = unique()
    complete(gateway, tenant, **DETERMINISTIC, cache={"ttl_seconds": 60})
    clock[0] += 59
    assert complete(gateway, tenant, **DETERMINISTIC).cached
    clock[0] += 2  # moto never deletes expired items; the backend checks expires_at itself
    assert not complete(gateway, tenant, **DETERMINISTIC).cached


def test_a_cache_that_is_down_is_skipped_and_the_request_succeeds(local_stack, simulator):
    gateway = gateway_from_env(breaker_backend="off")
    dead = boto3.session.Session().client(
        "dynamodb",
        endpoint_url="http://127.0.0.1:9",  # nothing listens there
        config=Config(connect_timeout=0.2, read_timeout=0.2, retries={"total_max_attempts": 1}),
    )
    backend = DynamoDBCacheBackend(local_stack.physical["CacheTable"], client=lambda: dead)
    gateway.cache = CompletionCache(backend, catalog_version=gateway.catalog.version, timeout_s=1)
    result = complete(gateway, unique(), **DETERMINISTIC)
    assert result.content and not result.cached and len(simulator.calls()) == 1
    assert gateway.cache.counters.get("CacheError") == 2  # the read and the write, both skipped


def test_an_answer_larger_than_a_dynamodb_item_is_stored_compressed(gateway, local_stack, simulator):
    text = "東京は今日も晴れ、明日も晴れるでしょう。" * 12_000  # 240k characters, ~720 KB of UTF-8
    assert len(text.encode()) > 400 * 1024
    simulator.script("gemini", [text])
    tenant = unique()
    body = {"model": "gemini-2.5-flash", "fallback": [], "temperature": 0, "max_tokens": 65_000}
    assert complete(gateway, tenant, **body).finish_reason == "stop"
    hit = complete(gateway, tenant, **body)
    assert hit.cached and hit.content == text
    key = gateway.cache.key_for(tenant, CompletionRequest.model_validate({**body, "messages": MESSAGES}))
    item = local_stack.client("dynamodb").get_item(TableName=local_stack.physical["CacheTable"], Key={"pk": {"S": key}})
    stored = item["Item"]["v"]["B"]
    assert stored[:1] == b"Z" and len(stored) < 50_000  # zlib-compressed, far below the 400 KB item limit


def incompressible_answer(min_compressed_bytes: int) -> str:
    """Random base64: zlib gets it down to ~3/4 of its size, no further."""
    text = base64.b64encode(os.urandom(min_compressed_bytes)).decode()
    assert len(zlib.compress(text.encode(), 6)) > min_compressed_bytes * 0.99
    return text


LARGE = {"model": "gemini-2.5-flash", "fallback": [], "temperature": 0, "max_tokens": 65_000}


@pytest.fixture
def patient_gateway(local_stack):
    """Half a megabyte through S3 may take longer than the default cache timeout on a slow machine."""
    return gateway_from_env(breaker_backend="off", cache_timeout_s=5.0)


def test_an_incompressible_answer_too_large_for_an_item_is_stored_in_s3(patient_gateway, local_stack, simulator):
    gateway = patient_gateway
    text = incompressible_answer(450_000)  # ~600 KB of text, ~450 KB compressed: over the 400 KB item limit
    bucket = local_stack.physical["DocumentsBucket"]
    assert gateway.cache.backend.overflow_bucket == bucket  # DOCUMENTS_BUCKET, as the template sets it
    simulator.script("gemini", [{"content": text, "finish_reason": "stop"}])
    tenant = unique()
    assert not complete(gateway, tenant, **LARGE).cached
    hit = complete(gateway, tenant, **LARGE)
    assert hit.cached and hit.content == text and len(simulator.calls()) == 1
    assert gateway.cache.counters.get("CacheNotStoredTooLarge") == 0

    key = gateway.cache.key_for(tenant, CompletionRequest.model_validate({**LARGE, "messages": MESSAGES}))
    item = local_stack.client("dynamodb").get_item(TableName=local_stack.physical["CacheTable"], Key={"pk": {"S": key}})
    pointer = item["Item"]["s3"]["S"]
    assert "v" not in item["Item"] and pointer.startswith("cache/") and tenant not in pointer
    stored = local_stack.client("s3").get_object(Bucket=bucket, Key=pointer)["Body"].read()
    assert len(stored) > 400 * 1024 and stored[:1] == b"Z"
    assert not complete(gateway, unique(), **LARGE).cached  # still per tenant


def test_without_a_bucket_an_entry_too_large_for_an_item_is_skipped(local_stack, simulator):
    gateway = gateway_from_env(breaker_backend="off", documents_bucket=None, cache_timeout_s=5.0)
    assert gateway.cache.backend.overflow_bucket is None
    simulator.script("gemini", [{"content": incompressible_answer(450_000), "finish_reason": "stop"}] * 2)
    tenant = unique()
    assert complete(gateway, tenant, **LARGE).content
    assert gateway.cache.counters.get("CacheNotStoredTooLarge") == 1
    assert not complete(gateway, tenant, **LARGE).cached
    assert len(simulator.calls()) == 2


def test_an_s3_entry_removed_by_the_lifecycle_rule_is_a_miss(patient_gateway, local_stack, simulator):
    gateway = patient_gateway
    simulator.script("gemini", [{"content": incompressible_answer(450_000), "finish_reason": "stop"}] * 2)
    tenant = unique()
    complete(gateway, tenant, **LARGE)
    key = gateway.cache.key_for(tenant, CompletionRequest.model_validate({**LARGE, "messages": MESSAGES}))
    item = local_stack.client("dynamodb").get_item(TableName=local_stack.physical["CacheTable"], Key={"pk": {"S": key}})
    local_stack.client("s3").delete_object(Bucket=local_stack.physical["DocumentsBucket"], Key=item["Item"]["s3"]["S"])
    assert not complete(gateway, tenant, **LARGE).cached
    assert gateway.cache.counters.get("CacheError") == 0 and len(simulator.calls()) == 2


# --------------------------------------------------------------------------- through the API


def test_openai_route_reports_cache_hits_and_honours_cache_control(local_stack, simulator):
    with api_key_for(local_stack, unique()) as key:
        client = openai.OpenAI(
            base_url=f"{local_stack.api_url}/v1",
            api_key="unused",
            max_retries=0,
            default_headers={"x-api-key": key},
            timeout=30,
        )
        ask = {"model": "gpt-4o-mini", "temperature": 0, "messages": [{"role": "user", "content": "Cache me."}]}
        miss = client.chat.completions.with_raw_response.create(**ask)
        hit = client.chat.completions.with_raw_response.create(**ask)
        bypass = client.chat.completions.with_raw_response.create(**ask, extra_headers={"Cache-Control": "no-cache"})
    assert [r.headers["x-gateway-cache"] for r in (miss, hit, bypass)] == ["miss", "hit", "miss"]
    assert hit.parse().model_extra["x_gateway"]["cached"] is True
    assert hit.parse().choices[0].message.content == miss.parse().choices[0].message.content
    assert len(simulator.calls()) == 2


def test_native_route_cache_field_and_bad_cache_header(local_stack, simulator):
    body = {"model": "gpt-4o-mini", "temperature": 0, "messages": [{"role": "user", "content": "Native."}]}
    with api_key_for(local_stack, unique()) as key, httpx.Client(base_url=local_stack.api_url, timeout=30) as http:
        headers = {"x-api-key": key}
        first = http.post("/v1/completions", json={**body, "cache": {"no_store": True}}, headers=headers)
        second = http.post("/v1/completions", json=body, headers=headers)
        third = http.post("/v1/completions", json=body, headers=headers)
        bad = http.post("/v1/completions", json=body, headers={**headers, "x-gateway-cache-ttl": "never"})
    assert [r.json()["cached"] for r in (first, second, third)] == [False, False, True]
    assert third.headers["x-gateway-cache"] == "hit"
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_request"
    assert len(simulator.calls()) == 2
