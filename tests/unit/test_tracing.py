"""X-Ray tracing: the core's spans become subsegments a real X-Ray daemon would receive (a UDP socket
stands in for it), overlapping spans stay siblings, and with tracing off nothing imports the X-Ray SDK."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
TRACE_ID = "1-5759e988-bd862e3fe1be46a994272793"

# Runs in a fresh interpreter: the X-Ray SDK's recorder is process-wide.
SCRIPT = """
import asyncio
from llm_gateway.observability import spans, tracing

async def call(model):
    with spans.span("provider.call", Provider="openai", Model=model):
        await asyncio.sleep(0.02)

async def work():
    await asyncio.gather(call("a"), call("b"))  # overlapping spans

def handler(event, context):
    asyncio.run(work())
    return {"ok": True}

traced = tracing.trace_handler(handler)
assert traced is not handler, "tracing is on: the handler must be wrapped"
assert traced({}, None) == {"ok": True}
with spans.span("ledger.write"):  # after the handler: no handler subsegment to carry it
    pass
"""


def run_traced(env_extra: dict[str, str], code: str = SCRIPT) -> list[dict[str, Any]]:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(5)
    port = receiver.getsockname()[1]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(REPO_ROOT / "layers" / "gateway"),
        "LAMBDA_TASK_ROOT": str(REPO_ROOT),
        "AWS_LAMBDA_FUNCTION_NAME": "llm-gateway-test",
        "AWS_REGION": "us-east-1",
        "_X_AMZN_TRACE_ID": f"Root={TRACE_ID};Parent=53995c3f42cd8ad8;Sampled=1",
        "AWS_XRAY_DAEMON_ADDRESS": f"127.0.0.1:{port}",
        "POWERTOOLS_SERVICE_NAME": "llm-gateway",
        **env_extra,
    }
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    documents = []
    receiver.settimeout(0.5)
    try:
        while True:
            datagram = receiver.recv(65536).decode()
            header, _, body = datagram.partition("\n")
            assert json.loads(header) == {"format": "json", "version": 1}
            documents.append(json.loads(body))
    except TimeoutError:
        pass
    finally:
        receiver.close()
    return documents


def test_spans_reach_the_daemon_as_subsegments_and_overlapping_spans_stay_siblings() -> None:
    documents = run_traced({"POWERTOOLS_TRACE_DISABLED": "false"})
    handler = next(d for d in documents if d["name"] == "## handler")
    assert handler["trace_id"] == TRACE_ID
    calls = [s for s in handler.get("subsegments", []) if s["name"] == "provider.call"]
    assert sorted(c["annotations"]["Model"] for c in calls) == ["a", "b"]
    assert all(c["annotations"]["Provider"] == "openai" and not c.get("subsegments") for c in calls)
    for call in calls:  # each span timed on its own, inside the handler's
        assert handler["start_time"] <= call["start_time"] < call["end_time"] <= handler["end_time"]
        assert call["end_time"] - call["start_time"] >= 0.015
    ledger = next(d for d in documents if d["name"] == "ledger.write")
    assert ledger["trace_id"] == TRACE_ID and ledger["type"] == "subsegment" and ledger["parent_id"]


def test_tracing_off_never_imports_the_xray_sdk_and_leaves_the_handler_alone() -> None:
    code = (
        "import sys\n"
        "from llm_gateway.observability import spans, tracing\n"
        "def handler(event, context):\n"
        "    with spans.span('provider.call'):\n"
        "        return 1\n"
        "assert tracing.trace_handler(handler) is handler\n"
        "assert handler({}, None) == 1\n"
        "import llm_gateway.http.events, llm_gateway.gateway\n"
        # (aws_lambda_powertools' own __init__ imports its tracer module, which loads no X-Ray SDK.)
        "assert 'aws_xray_sdk' not in sys.modules, 'the X-Ray SDK was imported'\n"
    )
    assert run_traced({"POWERTOOLS_TRACE_DISABLED": "true"}, code) == []
