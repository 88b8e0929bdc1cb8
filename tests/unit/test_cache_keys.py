"""Cache keys, cacheability rules, entry encoding and the HTTP cache controls (no I/O)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from llm_gateway.accounting.cache import (
    cache_control_from_headers,
    cache_key,
    cache_scope,
    decode_entry,
    encode_entry,
    is_cacheable_request,
    is_cacheable_result,
)
from llm_gateway.catalog import Catalog, default_catalog
from llm_gateway.errors import InvalidRequestError
from llm_gateway.models import CacheControl, CompletionRequest, CompletionResult, Usage

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE: dict[str, Any] = {"messages": [{"role": "user", "content": "What is 2+2?"}], "temperature": 0}


def request(**changes: Any) -> CompletionRequest:
    return CompletionRequest.model_validate({**BASE, **changes})


def key(tenant: str = "t1", catalog: str = "c1", **changes: Any) -> str:
    return cache_key(tenant, request(**changes), catalog_version=catalog, default_tier="fast", default_max_tokens=1024)


def result(**changes: Any) -> CompletionResult:
    values: dict[str, Any] = {
        "content": "4",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "finish_reason": "stop",
        "usage": Usage(input_tokens=10, output_tokens=1),
        "cost_usd": 0.0001,
        "latency_ms": 12.0,
        "attempts": [],
        "metadata": {"caller": "first"},
    }
    return CompletionResult(**{**values, **changes})


def test_same_request_same_key_and_key_is_opaque():
    assert key() == key()
    assert key().startswith("v2:") and "t1" not in key() and "2+2" not in key()


def test_tenants_never_share_a_key():
    assert key("tenant-a") != key("tenant-b")


def test_a_tenant_namespace_stays_within_the_tenant():
    ns = {"cache": {"namespace": "faq"}}
    assert key("tenant-a", **ns) != key("tenant-a")
    assert key("tenant-a", **ns) != key("tenant-b", **ns)


def test_only_an_explicit_shared_namespace_crosses_tenants():
    shared = {"cache": {"namespace": "shared:faq"}}
    assert key("tenant-a", **shared) == key("tenant-b", **shared)
    assert key("tenant-a", **shared) != key("tenant-a", cache={"namespace": "shared:other"})
    assert cache_scope("tenant-a", "shared:faq") == {"shared": "faq"}
    with pytest.raises(ValueError):
        cache_scope("", None)


@pytest.mark.parametrize(
    ("tenant", "namespace", "other_tenant", "other_namespace"),
    [
        ("a/ns/b", None, "a", "b"),  # joined as strings, these two scopes were the same
        ("a", "b", "a/ns", "b"),
        ("shared/faq", None, "anyone", "shared:faq"),  # a tenant named like a shared scope
    ],
)
def test_tenant_and_namespace_cannot_be_crafted_to_collide(tenant, namespace, other_tenant, other_namespace):
    assert cache_scope(tenant, namespace) != cache_scope(other_tenant, other_namespace)
    mine = {"cache": {"namespace": namespace}} if namespace else {}
    theirs = {"cache": {"namespace": other_namespace}}
    assert key(tenant, **mine) != key(other_tenant, **theirs)


@pytest.mark.parametrize(
    "change",
    [
        {"model": "gpt-4o-mini"},
        {"tier": "best"},
        {"fallback": ["claude-3-5-haiku-latest"]},
        {"capabilities": ["vision"]},
        {"messages": [{"role": "user", "content": "What is 2+3?"}]},
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]},
        {"max_tokens": 50},
        {"temperature": 0.5},
        {"top_p": 0.5},
        {"stop": ["\n"]},
        {"seed": 7},
        {"response_format": {"type": "json_object"}},
        {"response_format": {"type": "json_schema", "schema": {"type": "object"}}},
        {"prompt_version": "v2"},
    ],
)
def test_every_parameter_that_changes_the_answer_changes_the_key(change):
    assert key(**change) != key()


def test_schemas_are_part_of_the_key():
    one = {"type": "json_schema", "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}
    two = {"type": "json_schema", "schema": {"type": "object", "properties": {"b": {"type": "string"}}}}
    assert key(response_format=one) != key(response_format=two)


def test_catalog_version_is_part_of_the_key():
    assert key(catalog="c1") != key(catalog="c2")


def test_the_catalog_fingerprint_follows_its_content_not_just_the_version():
    bundled = default_catalog()
    same = Catalog.model_validate(bundled.model_dump())
    assert same.fingerprint == bundled.fingerprint and bundled.fingerprint.startswith(bundled.version + "+")
    first = bundled.models[0]
    doubled = first.model_copy(update={"output_per_mtok": first.output_per_mtok * 2})
    repriced = bundled.model_copy(update={"models": [doubled, *bundled.models[1:]]})
    rewired = bundled.model_copy(
        update={"models": [first.model_copy(update={"provider_model": first.id + "-002"}), *bundled.models[1:]]}
    )
    fingerprints = {bundled.fingerprint, repriced.fingerprint, rewired.fingerprint}
    assert len(fingerprints) == 3 and {c.version for c in (bundled, repriced, rewired)} == {bundled.version}
    assert len({key(catalog=f) for f in fingerprints}) == 3


def test_the_catalog_fingerprint_is_the_same_in_every_process():
    """Capabilities and tiers are sets: their order must not leak into the hash (string hashing is per process)."""
    script = "from llm_gateway.catalog import default_catalog; print(default_catalog().fingerprint)"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "layers" / "gateway")}
    seen = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**env, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.strip()
        for seed in ("1", "2", "3")
    }
    assert seen == {default_catalog().fingerprint}


def test_defaults_are_resolved_and_metadata_and_controls_ignored():
    assert key() == key(tier="fast")  # the default tier, as resolved
    assert key() == key(max_tokens=1024)  # the default max_tokens
    assert key() == key(metadata={"trace": "abc"})
    assert key() == key(cache={"no_store": True, "ttl_seconds": 60})


def test_only_deterministic_or_forced_requests_are_cacheable():
    assert is_cacheable_request(request())
    assert not is_cacheable_request(request(temperature=None))
    assert not is_cacheable_request(request(temperature=0.7))
    assert is_cacheable_request(request(temperature=0.7, cache={"force": True}))


@pytest.mark.parametrize(
    ("changes", "fmt", "cacheable"),
    [
        ({}, None, True),
        ({"finish_reason": "length"}, None, False),  # truncated
        ({"finish_reason": "content_filter", "content": ""}, None, False),  # refusal
        ({"content": "  "}, None, False),
        ({"content": "not json"}, {"type": "json_object"}, False),
        ({"content": '{"a": 1}'}, {"type": "json_object"}, True),
    ],
)
def test_only_complete_answers_are_stored(changes, fmt, cacheable):
    assert is_cacheable_result(request(response_format=fmt), result(**changes)) is cacheable


def test_entries_round_trip_without_the_first_callers_metadata():
    value = encode_entry(result())
    hit, saved = decode_entry(value, request(metadata={"caller": "second"}))
    assert hit.content == "4" and hit.model == "gpt-4o-mini" and hit.usage.output_tokens == 1
    assert hit.cached and hit.cost_usd == 0.0 and hit.attempts == []
    assert hit.metadata == {"caller": "second"}
    assert saved == pytest.approx(0.0001)
    assert b"first" not in value


def test_large_entries_are_compressed():
    text = "The quick brown fox jumps over the lazy dog. " * 20_000  # ~900 KB
    value = encode_entry(result(content=text))
    assert value[:1] == b"Z" and len(value) < 50_000
    hit, _ = decode_entry(value, request())
    assert hit.content == text


def test_unknown_encoding_is_rejected():
    with pytest.raises(ValueError):
        decode_entry(b"Q" + json.dumps({}).encode(), request())


def test_cache_control_headers():
    assert cache_control_from_headers({}) is None
    base = CacheControl(ttl_seconds=30)
    assert cache_control_from_headers({"Accept": "x"}, base) is base
    control = cache_control_from_headers({"Cache-Control": "no-cache, No-Store"})
    assert control == CacheControl(no_cache=True, no_store=True)
    control = cache_control_from_headers(
        {"x-gateway-cache-ttl": "60", "X-Gateway-Cache-Namespace": "shared:faq", "x-gateway-cache-force": "true"}, base
    )
    assert control == CacheControl(ttl_seconds=60, namespace="shared:faq", force=True)


@pytest.mark.parametrize("headers", [{"x-gateway-cache-ttl": "soon"}, {"x-gateway-cache-namespace": "a b"}])
def test_bad_cache_headers_are_caller_errors(headers):
    with pytest.raises(InvalidRequestError) as info:
        cache_control_from_headers(headers)
    assert info.value.http_status == 400 and "x-gateway-cache" in info.value.details["param"]
