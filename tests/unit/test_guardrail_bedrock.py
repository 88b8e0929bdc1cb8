"""Bedrock Guardrails' verdicts mapped onto findings, and what a guardrail that cannot answer does (the
real wire is exercised against the simulator in tests/integration/test_guardrails_stack.py)."""

import asyncio

import httpx
import pytest

from llm_gateway.errors import GuardrailUnavailableError
from llm_gateway.guardrails.bedrock import BedrockGuardrail, _verdict


def test_none_is_no_finding():
    assert _verdict({"action": "NONE", "outputs": [], "assessments": [{}]}, 10).findings == []


@pytest.mark.parametrize(
    ("assessment", "kind"),
    [
        ({"contentPolicy": {"filters": [{"type": "HATE", "confidence": "HIGH", "action": "BLOCKED"}]}}, "content:HATE"),
        ({"sensitiveInformationPolicy": {"piiEntities": [{"type": "EMAIL", "match": "a@b.c"}]}}, "pii:EMAIL"),
        ({"topicPolicy": {"topics": [{"name": "Investing", "type": "DENY", "action": "BLOCKED"}]}}, "topic:Investing"),
        ({"wordPolicy": {"customWords": [{"match": "secret", "action": "BLOCKED"}]}}, "word"),
        ({}, "intervened"),
    ],
)
def test_an_intervention_is_one_finding_over_the_text_named_by_its_assessment(assessment, kind):
    data = {"action": "GUARDRAIL_INTERVENED", "outputs": [{"text": "masked"}], "assessments": [assessment]}
    verdict = _verdict(data, 42)
    [finding] = verdict.findings
    assert (finding.check, finding.kind, finding.start, finding.end) == ("bedrock", kind, 0, 42)
    assert verdict.output == "masked"
    assert "a@b.c" not in finding.reason  # the matched text never becomes the reason


def guardrail(status, *, fail_open):
    def answer(request):
        assert request.url.path == "/guardrail/gr1/version/2/apply"
        assert request.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=")
        return httpx.Response(
            status, json={"message": "slow down"}, headers={"x-amzn-errortype": "ThrottlingException"}
        )

    client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    return BedrockGuardrail(
        guardrail_id="gr1",
        version="2",
        region="us-east-1",
        base_url="https://bedrock-runtime.us-east-1.amazonaws.com",
        client=lambda: client,
        fail_open=fail_open,
    )


def test_a_guardrail_that_cannot_answer_fails_closed_or_open_as_configured(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with pytest.raises(GuardrailUnavailableError) as caught:
        asyncio.run(guardrail(429, fail_open=False).scan("hello", "INPUT", 5.0))
    assert caught.value.http_status == 503 and caught.value.retryable
    assert asyncio.run(guardrail(429, fail_open=True).scan("hello", "INPUT", 5.0)).findings == []
    assert asyncio.run(guardrail(500, fail_open=False).scan("  ", "INPUT", 5.0)).findings == []  # nothing to send
