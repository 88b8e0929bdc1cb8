"""No dead widgets: a short workload through the local stack (cache miss and hit, a fallback, a failure, a
stream, an extraction; a circuit opened through the services' own metrics sink), its EMF documents read
from the handlers' stdout, and every metric the dashboard and alarms name in LLMGateway, with its exact
dimension set, is one of them. The saved queries read only fields those documents carry."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from llm_gateway import wiring as service
from llm_gateway.accounting.counters import Counters, powertools_sink
from llm_gateway.catalog import default_catalog
from llm_gateway.quotas.metrics import QuotaMetrics
from llm_gateway.routing.breaker import DynamoDBBreakerStore, SharedCircuitBreaker
from local.simulator import ProviderSimulator
from local.stack import LocalStack
from tests.support.accounting import private_table_like
from tests.support.dashboard import (
    NAMESPACE,
    alarm_metrics,
    dashboard_body,
    emitted,
    emitted_pairs,
    load_template,
    query_fields,
    resources_of,
    widget_metrics,
)
from tests.support.sse import CHAT, prompt, read_stream

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_real_aws")]


@pytest.fixture
def api(local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[httpx.Client]:
    monkeypatch.setenv("GATEWAY_MAX_ATTEMPTS", "2")  # a retry on the failing provider, then the fallback
    service.reset()
    assert local_stack.api_url
    with httpx.Client(base_url=local_stack.api_url, timeout=60, headers={"x-api-key": "key-a"}) as client:
        yield client
    monkeypatch.undo()
    service.reset()


def run_workload(api: httpx.Client, simulator: ProviderSimulator, local_stack: LocalStack) -> None:
    cached = {"messages": [{"role": "user", "content": prompt()}], "model": "gpt-4o-mini", "temperature": 0}
    answers = [api.post("/v1/completions", json=cached) for _ in range(2)]  # a miss, then a hit
    fault = "[[sim:fault=server_error,provider=openai]] " + prompt()
    fallback = {"messages": [{"role": "user", "content": fault}], "model": "gpt-4o-mini"}
    answers.append(api.post("/v1/completions", json={**fallback, "fallback": ["claude-3-5-haiku-latest"]}))
    text = f"Invoice 42 from Acme, total 12.50 EUR. {prompt()}"  # unique: a cache miss
    answers.append(api.post("/v1/extractions", json={"text": text, "schema": "invoice"}))
    streamed = read_stream(api, CHAT, {"model": "gpt-4o-mini", "messages": cached["messages"][:1], "stream": True})
    assert streamed.status == 200 and streamed.events, streamed.raw
    assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
    assert answers[1].headers["x-gateway-cache"] == "hit"
    assert answers[2].json()["provider"] == "anthropic"  # openai failed (retried), anthropic answered
    # A guardrail verdict: an address redacted on its way in (the request's header asks for it).
    screened = {"messages": [{"role": "user", "content": f"Mail ada@example.com. {prompt()}"}], "model": "gpt-4o-mini"}
    redacted = api.post("/v1/completions", json=screened, headers={"x-gateway-guardrails": "pii=redact"})
    assert redacted.status_code == 200, redacted.text
    simulator.add_fault("bad_request")
    failed = api.post("/v1/completions", json={"messages": [{"role": "user", "content": prompt()}]})
    simulator.clear_faults()
    assert failed.status_code == 400, failed.text

    # Circuits: the breaker the services build, counting through the services' own metrics sink.
    breaker = SharedCircuitBreaker(
        DynamoDBBreakerStore(private_table_like(local_stack, "UsageTable")),
        failure_threshold=1,
        counters=Counters(powertools_sink()),
    )

    async def trip() -> None:
        await breaker.record("gemini", "gemini-2.0-flash-lite", ok=False)
        await breaker.record("anthropic", "claude-3-5-haiku-latest", ok=False, auth_failure=True)

    asyncio.run(trip())

    # Quotas (off in the session's stack): the metrics object the tracker counts through, emitting at once.
    quota = QuotaMetrics(emit=True, flush_s=0)
    quota.utilisation("openai", 0.5)
    quota.skipped("openai")
    quota.rate_limited("openai")


@pytest.fixture
def documents(
    api: httpx.Client,
    simulator: ProviderSimulator,
    local_stack: LocalStack,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> list[dict[str, Any]]:
    environment = local_stack.template.function_environment("CompletionFunction", local_stack.resolver)
    for name in ("POWERTOOLS_METRICS_NAMESPACE", "POWERTOOLS_SERVICE_NAME"):  # what the functions run with
        monkeypatch.setenv(name, environment[name])
    capfd.readouterr()
    run_workload(api, simulator, local_stack)
    out, _ = capfd.readouterr()
    found = emitted(out.splitlines())
    assert found, "the workload emitted no EMF document"
    return found


def test_every_widget_and_alarm_names_a_metric_the_code_emits(documents: list[dict[str, Any]]) -> None:
    template = load_template()
    service_name = template["Globals"]["Function"]["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"]
    providers = {spec.provider for spec in default_catalog().models}
    pairs = emitted_pairs(documents)
    named = [*widget_metrics(dashboard_body(template)), *alarm_metrics(template)]
    ours = [m for m in named if m.namespace == NAMESPACE]
    assert len(ours) >= 20  # the parsing found the widgets (a parser that saw nothing would prove nothing)
    dead = [(m.where, m.name, sorted(m.dimensions)) for m in ours if (NAMESPACE, m.name, m.dimensions) not in pairs]
    assert dead == []
    for metric in ours:
        emitted_by = pairs[(NAMESPACE, metric.name, metric.dimensions)]
        for key, value in metric.values:
            seen = {d[key] for d in emitted_by}
            if key == "service":  # exactly what every document carries
                assert seen == {value} == {service_name}, (metric.where, key)
            elif key == "Provider":  # one alarm per catalog provider, called or not in this workload
                assert value in providers, (metric.where, value)
            else:
                assert value in seen, (metric.where, key, value)


def test_operator_metrics_carry_tenant_and_key_as_properties_never_as_dimensions(
    documents: list[dict[str, Any]],
) -> None:
    requests = [d for d in documents if d.get("record") == "request"]
    calls = [d for d in documents if d.get("record") == "provider_call"]
    assert requests and calls
    assert {d["tenant"] for d in requests} == {"tenant-a"}
    assert all(d.get("key_id") for d in requests + calls)
    for document in documents:
        for directive in document["_aws"]["CloudWatchMetrics"]:
            for dimension_set in directive["Dimensions"]:
                assert not {"tenant", "key_id", "request_id"} & set(dimension_set)
    # Only requests the cache could answer count as hits or misses: the temperature-0 completion twice and
    # the extraction; the fallback, the stream (default temperature) and the failure do not.
    assert sorted(d["CacheHits"][0] + 2 * d["CacheMisses"][0] for d in requests if "CacheHits" in d) == [1, 2, 2]
    hit = next(d for d in requests if d.get("CacheHits") == [1.0])
    assert hit["CostSavedUSD"][0] > 0 and hit["CostUSD"] == [0.0]
    fell_back = next(d for d in requests if d["Fallbacks"] == [1.0])
    assert fell_back["Retries"] == [1.0]  # openai twice (GATEWAY_MAX_ATTEMPTS=2), then anthropic
    errors = [d for d in documents if "ErrorCode" in d]
    assert errors and errors[0]["Errors"] == [1.0]
    assert any("TimeToFirstToken" in d for d in documents)


def test_saved_queries_read_fields_the_documents_carry(documents: list[dict[str, Any]]) -> None:
    queries = resources_of(load_template(), "AWS::Logs::QueryDefinition")
    assert len(queries) == 3
    for lid, query in queries.items():
        record, fields = query_fields(query["Properties"]["QueryString"])
        assert record is not None, f"{lid} does not say which documents it reads"
        carried = set().union(*(d.keys() for d in documents if d.get("record") == record))
        assert fields and fields <= carried, (lid, sorted(fields - carried))
