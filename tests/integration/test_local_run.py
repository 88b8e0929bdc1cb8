"""``make run`` as a newcomer uses it: a real ``python -m local.run`` process on free ports, stopped by a
signal, and the CLIs (``make usage``, ``make budget``, ``make redrive``, ``make upload``) finding it through
its state file with no variables set by hand."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from local import state as stack_state
from local.stack import REPO_ROOT

pytestmark = pytest.mark.integration

STOP_WITHIN_S = 5.0
START_WITHIN_S = 90.0
# Anything that could name an AWS target or a real provider is left out of the children's environment.
_DROPPED_PREFIXES = ("AWS_", "OPENAI", "ANTHROPIC", "GEMINI", "LOCAL_", "MOTO_", "GATEWAY_", "USAGE_TABLE", "RETRY_")


def clean_environment(state_file: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_DROPPED_PREFIXES)}
    env.update(LOCAL_STATE_FILE=str(state_file), LOCAL_PORT="0", PYTHONUNBUFFERED="1", **extra)
    return env


class RunningStack:
    """``python -m local.run`` in its own process; ``state`` once it has written its state file."""

    def __init__(self, state_file: Path, log: Path, *, quiet: bool = True) -> None:
        self.state_file = state_file
        self._log = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "local.run", *(["--quiet"] if quiet else [])],
            cwd=REPO_ROOT,
            env=clean_environment(state_file),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.state = self._wait_until_serving()

    def _wait_until_serving(self) -> stack_state.StackState:
        deadline = time.monotonic() + START_WITHIN_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"local.run exited early:\n{self.output()}"
            current = stack_state.running(self.state_file)
            if current is not None and current.api_url:
                with httpx.Client(base_url=current.api_url, timeout=5) as client:
                    if client.get("/v1/nope").status_code == 404:  # the bridge answers
                        return current
            time.sleep(0.2)
        raise AssertionError(f"local.run did not start within {START_WITHIN_S} s:\n{self.output()}")

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return Path(self._log.name).read_text()

    def stop(self, signum: int = signal.SIGTERM) -> float:
        """Send ``signum``; the seconds until the process exited."""
        sent = time.monotonic()
        self.process.send_signal(signum)
        try:
            self.process.wait(timeout=STOP_WITHIN_S * 4)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"local.run ignored signal {signum}:\n{self.output()}") from None
        finally:
            self._log.close()
        return time.monotonic() - sent


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    directory = tmp_path_factory.mktemp("local-run")
    stack = RunningStack(directory / "stack.json", directory / "run.log")
    try:
        yield stack
    finally:
        if stack.process.poll() is None:
            stack.stop()


def make(target: str, state_file: Path, *variables: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", "-s", target, *variables],
        cwd=REPO_ROOT,
        env=clean_environment(state_file),
        capture_output=True,
        text=True,
        timeout=120,
    )


def moto_client(current: stack_state.StackState, service: str) -> Any:
    import boto3

    return boto3.session.Session().client(
        service,  # type: ignore[call-overload]
        endpoint_url=current.moto_url,
        region_name=current.region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


# --------------------------------------------------------------------------- signals


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_make_run_stops_within_seconds_of_a_signal(tmp_path: Path, signum: int) -> None:
    stack = RunningStack(tmp_path / "stack.json", tmp_path / "run.log", quiet=False)
    assert stack.state.pid == stack.process.pid
    key = next(iter(stack.state.api_keys))
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}
    answer = httpx.post(f"{stack.state.api_url}/v1/chat/completions", json=chat, headers={"x-api-key": key}, timeout=30)
    assert answer.status_code == 200, answer.text
    elapsed = stack.stop(signum)
    assert elapsed < STOP_WITHIN_S, f"took {elapsed:.1f} s:\n{stack.output()}"
    assert stack.process.returncode == 0, stack.output()
    assert not stack.state_file.exists()  # a stopped stack leaves no endpoints behind
    assert "stopping..." in stack.output()
    assert '"POST /v1/chat/completions" 200' in stack.output()
    access_line = next(line for line in stack.output().splitlines() if '"POST /v1/chat/completions"' in line)
    assert access_line.endswith(" CompletionStreamFunction")  # the access log names the function


# --------------------------------------------------------------------------- the CLIs against it


def test_the_state_file_names_the_running_stacks_endpoints(running: RunningStack) -> None:
    current = running.state
    assert current.moto_url.startswith("http://127.0.0.1:") and current.region == "us-east-1"
    assert set(current.tables) >= {"UsageTable", "CacheTable", "JobsTable"}
    assert set(current.queues) >= {"RetryQueue", "RetryDeadLetterQueue"}
    assert current.topics["AlertsTopic"].startswith("arn:aws:sns:us-east-1:")  # budget alerts publish there
    assert current.bucket and current.api_keys
    assert oct(running.state_file.stat().st_mode & 0o777) == "0o600"  # it holds the API keys
    key = next(iter(current.api_keys))
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}
    answer = httpx.post(f"{current.api_url}/v1/chat/completions", json=body, headers={"x-api-key": key}, timeout=30)
    assert answer.status_code == 200, answer.text


def test_make_usage_reads_the_running_stack(running: RunningStack) -> None:
    tenant = next(iter(running.state.api_keys.values()))
    done = make("usage", running.state_file, f"TENANT={tenant}")
    assert done.returncode == 0, done.stderr
    assert f"Usage for {tenant}" in done.stdout and "Traceback" not in done.stderr


def test_make_budget_sets_and_shows_a_budget_on_the_running_stack(running: RunningStack) -> None:
    done = make("budget", running.state_file, "TENANT=budget-cli-tenant", "LIMIT=2.5", "WINDOW=month")
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["budget"] == {"limit_usd": 2.5, "window": "month"}, status
    shown = make("budget", running.state_file, "TENANT=budget-cli-tenant")
    assert shown.returncode == 0 and json.loads(shown.stdout)["budget"]["limit_usd"] == 2.5


def test_make_redrive_moves_the_running_stacks_dead_letters(running: RunningStack) -> None:
    sqs = moto_client(running.state, "sqs")
    dlq, retry = running.state.queues["RetryDeadLetterQueue"], running.state.queues["RetryQueue"]
    sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps({"kind": "job", "job_id": "job_missing"}))
    done = make("redrive", running.state_file)
    assert done.returncode == 0, done.stderr
    assert f"moved 1 message(s) from {dlq} to {retry}" in done.stdout


def test_make_upload_summarizes_a_document_through_the_bucket_notification(running: RunningStack) -> None:
    done = make("upload", running.state_file, "FILE=events/documents/q3-board-update.md")
    assert done.returncode == 0, (done.stdout, done.stderr)
    result = json.loads(done.stdout)
    assert result["summary"] and result["source_key"] == "incoming/summarize/q3-board-update.md", result
    assert f"uploaded s3://{running.state.bucket}/incoming/summarize/q3-board-update.md" in done.stderr


def test_make_upload_extracts_with_a_schema(running: RunningStack) -> None:
    done = make("upload", running.state_file, "FILE=events/documents/acme-invoice-0042.txt", "SCHEMA=entities")
    assert done.returncode == 0, (done.stdout, done.stderr)
    result = json.loads(done.stdout)
    assert result["schema"] == "entities" and isinstance(result["result"], dict), result


@pytest.mark.parametrize(
    ("target", "variables"),
    [
        ("usage", ["TENANT=t"]),
        ("budget", ["TENANT=t"]),
        ("redrive", []),
        ("upload", ["FILE=events/documents/q3-board-update.md"]),
    ],
)
def test_the_clis_say_in_one_line_that_nothing_runs(tmp_path: Path, target: str, variables: list[str]) -> None:
    done = make(target, tmp_path / "absent.json", *variables)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith("make")]
    assert lines == [f"error: {stack_state.NOT_RUNNING}"], done.stderr
    assert "Traceback" not in done.stderr


def test_a_stale_state_file_counts_as_nothing_running(tmp_path: Path) -> None:
    stale = tmp_path / "stack.json"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stack_state.write(
        stack_state.StackState(
            pid=int(dead.stdout),
            moto_url="http://127.0.0.1:9",
            region="us-east-1",
            api_url=None,
            api_keys={},
            bucket=None,
        ),
        stale,
    )
    done = make("usage", stale, "TENANT=t")
    assert done.returncode == 2 and f"error: {stack_state.NOT_RUNNING}\n" in done.stderr, done.stderr
