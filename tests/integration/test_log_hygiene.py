"""With prompt logging off, no log line carries what a caller sent or a model answered: run a workload
(completion, extraction, summary, an extraction that never validates, a provider error) through the
local stack, capture every log line (stdout, stderr and Python logging at INFO, the deployed level) and
look for each request's distinctive text. Error bodies carry no raw provider text either."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import httpx
import pytest

from llm_gateway import wiring as service
from local.simulator import ProviderSimulator
from local.stack import LocalStack

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_real_aws")]


@pytest.fixture
def api(local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[httpx.Client]:
    monkeypatch.setenv("GATEWAY_LOG_PROMPTS", "false")
    monkeypatch.setenv("GATEWAY_MAX_ATTEMPTS", "1")
    service.reset()
    assert local_stack.api_url
    with httpx.Client(base_url=local_stack.api_url, timeout=60, headers={"x-api-key": "key-a"}) as client:
        yield client
    monkeypatch.undo()
    service.reset()


def test_no_log_line_carries_the_workloads_text(
    api: httpx.Client, simulator: ProviderSimulator, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    run = uuid.uuid4().hex[:10]
    secret = {
        name: f"zq{name}{run}" for name in ("prompt", "document", "schema", "summary", "answer", "failing", "bad")
    }
    caplog.set_level(logging.INFO)
    answers = []

    answers.append(api.post("/v1/completions", json={"messages": [{"role": "user", "content": secret["prompt"]}]}))
    schema = {
        "type": "object",
        "description": f"extract {secret['schema']}",
        "properties": {"name": {"type": "string", "description": secret["schema"]}},
    }
    answers.append(api.post("/v1/extractions", json={"text": f"Name: {secret['document']}", "schema": schema}))
    text = f"{secret['summary']} is a sentence. " * 20
    answers.append(api.post("/v1/summaries", json={"text": text, "length": {"sentences": 1}}))

    # An extraction that never validates: the model's answer (which quotes the document) is refused.
    simulator.script("*", [f'{{"name": "{secret["answer"]}"}}'] * 3)
    strict = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string", "maxLength": 5}}}
    failing = api.post("/v1/extractions", json={"text": secret["failing"], "schema": strict, "max_reasks": 1})
    assert failing.status_code == 422, failing.text
    simulator.reset()

    # A provider error on every provider: the caller gets a code, not the provider's text.
    simulator.add_fault("bad_request")
    bad = api.post("/v1/completions", json={"messages": [{"role": "user", "content": secret["bad"]}]})
    simulator.clear_faults()
    assert 400 <= bad.status_code < 600, bad.text
    assert "simulated bad request" not in bad.json()["error"]["message"]

    assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
    out, err = capfd.readouterr()
    lines = [*out.splitlines(), *err.splitlines(), *(caplog.text.splitlines())]
    assert len(lines) > 5  # the workload did log (a capture that saw nothing would prove nothing)
    leaks = [(name, line[:300]) for line in lines for name, value in secret.items() if value in line]
    assert leaks == []
