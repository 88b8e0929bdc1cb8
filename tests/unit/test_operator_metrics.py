"""The operator metrics' EMF documents, in memory: what a request, an error and an attempt emit."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llm_gateway.errors import BudgetExceededError
from llm_gateway.http import observe
from llm_gateway.models import Attempt, Usage
from llm_gateway.observability import metrics


@pytest.fixture(autouse=True)
def namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "LLMGateway")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "llm-gateway")


def documents(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]


def dimension_sets(document: dict[str, Any]) -> list[set[str]]:
    return [set(d) for d in document["_aws"]["CloudWatchMetrics"][0]["Dimensions"]]


def attempt(provider: str, model: str, outcome: str, **fields: Any) -> Attempt:
    return Attempt(provider=provider, model=model, outcome=outcome, duration_ms=12.5, **fields)  # type: ignore[arg-type]


def test_a_request_that_fell_back_after_a_retry(capsys: pytest.CaptureFixture[str]) -> None:
    tried = [
        attempt("openai", "gpt-4o-mini", "error", error_code="provider_unavailable"),
        attempt("openai", "gpt-4o-mini", "error", error_code="provider_unavailable"),
        attempt("anthropic", "claude-3-5-haiku-latest", "success", usage=Usage(input_tokens=5, output_tokens=7)),
        attempt("gemini", "gemini-2.0-flash-lite", "skipped"),  # never called: no provider metrics
    ]
    metrics.request(
        metrics.RequestOutcome("completion", "tenant-a", "key_1", "req-1", attempts=tried, cost_usd=0.5, cached=False)
    )
    request, *calls = documents(capsys)
    assert dimension_sets(request) == [{"Operation", "service"}, {"service"}]
    assert (request["Fallbacks"], request["Retries"], request["Errors"]) == ([1.0], [1.0], [0.0])
    assert (request["tenant"], request["key_id"], request["record"]) == ("tenant-a", "key_1", "request")
    assert [(c["Provider"], c["ProviderErrors"]) for c in calls] == [
        ("openai", [1.0]),
        ("openai", [1.0]),
        ("anthropic", [0.0]),
    ]
    assert all(dimension_sets(c) == [{"Provider", "Model", "service"}, {"Provider", "service"}] for c in calls)
    assert calls[2]["InputTokens"] == [5.0] and calls[2]["duration_ms"] == 12.5


def test_an_error_answer_is_counted_by_code_and_a_budget_refusal_as_a_budget_rejection(
    capsys: pytest.CaptureFixture[str],
) -> None:
    observe.failure("extraction", BudgetExceededError("over budget"), tenant="t", key_id="k")
    request, by_code = documents(capsys)
    assert (request["Errors"], request["BudgetRejections"], request["error_code"]) == ([1.0], [1.0], "budget_exceeded")
    assert request["CostUSD"] == [0.0] and request["InputTokens"] == [0.0]  # refused before any call
    assert "Latency" not in request and "CacheHits" not in request  # an error has no latency or cache figure
    assert dimension_sets(by_code) == [{"ErrorCode", "service"}]
    assert (by_code["ErrorCode"], by_code["Operation"], by_code["Errors"]) == ("budget_exceeded", "extraction", [1.0])


def test_a_broken_emitter_never_fails_the_request(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: Any) -> None:
        raise RuntimeError("broken")

    monkeypatch.setattr(metrics, "_document", broken)
    metrics.request(metrics.RequestOutcome("completion"))
    metrics.first_token("openai", "gpt-4o-mini", 10.0)
    assert documents(capsys) == []


def test_nothing_is_emitted_without_a_namespace(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POWERTOOLS_METRICS_NAMESPACE")
    metrics.request(metrics.RequestOutcome("completion"))
    metrics.first_token("openai", "gpt-4o-mini", 10.0)
    assert documents(capsys) == []
