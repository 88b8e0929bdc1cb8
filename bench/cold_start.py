"""Part 1: cold start. A fresh interpreter importing each function's handler module vs ``import litellm``.

Each sample is a new process (``-c``) that times only the import itself with ``perf_counter`` (interpreter
start-up is the same for both and is reported separately as the process's wall time). Targets run
interleaved, round by round in rotating order, so that machine drift hits them alike; the first round
is a warm-up (page cache) and is not counted.

Ours runs as on Lambda: the function directory first on ``sys.path`` (``/var/task``), then the built
layer's ``python/`` (``/opt/python``, precompiled .pyc), then an interpreter whose site-packages holds
boto3 (the runtime's own). ``import_and_first_call`` also times the first invocation in that process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import REPO_ROOT, Interpreter, lambda_env, progress
from bench.stats import median, summarize

MARKER = "BENCH_RESULT "
SAMPLE_TIMEOUT_S = 120.0
_IMPORTTIME = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)")

_IMPORT_PROBE = """
import json, time
t0 = time.perf_counter()
import {module}
t1 = time.perf_counter()
print({marker!r} + json.dumps({{"import_ms": (t1 - t0) * 1000.0}}), flush=True)
"""

# Import, then two invocations with the same event: the first pays settings, catalog, adapters,
# the HTTP client and connection set-up; the second is warm.
_FIRST_CALL_PROBE = """
import json, sys, time, uuid
t0 = time.perf_counter()
import app
t1 = time.perf_counter()

class Context:
    function_name = "bench"
    memory_limit_in_mb = 1024
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:bench"
    log_group_name = "/aws/lambda/bench"
    log_stream_name = "bench"
    identity = None
    client_context = None
    def __init__(self):
        self.aws_request_id = str(uuid.uuid4())
        self._deadline = time.monotonic() + 60
    def get_remaining_time_in_millis(self):
        return int((self._deadline - time.monotonic()) * 1000)

event = json.load(open(sys.argv[1]))
t2 = time.perf_counter()
first = app.lambda_handler(event, Context())
t3 = time.perf_counter()
second = app.lambda_handler(event, Context())
t4 = time.perf_counter()
print({marker!r} + json.dumps({{
    "import_ms": (t1 - t0) * 1000.0,
    "first_call_ms": (t3 - t2) * 1000.0,
    "second_call_ms": (t4 - t3) * 1000.0,
    "status": [first.get("statusCode"), second.get("statusCode")],
}}), flush=True)
"""


@dataclass
class Target:
    name: str
    interpreter: Interpreter
    module: str
    cwd: Path
    env: dict[str, str]
    samples: list[float] = field(default_factory=list)  # import ms
    process_ms: list[float] = field(default_factory=list)  # whole process wall time
    error: str | None = None


def _run(target: Target, code: str, *args: str, extra_flags: tuple[str, ...] = ()) -> tuple[dict[str, Any], str]:
    started = time.perf_counter()
    res = subprocess.run(
        [*target.interpreter.argv, *extra_flags, "-c", code, *args],
        cwd=target.cwd,
        env=target.env,
        capture_output=True,
        text=True,
        timeout=SAMPLE_TIMEOUT_S,
        check=False,
    )
    wall = (time.perf_counter() - started) * 1000.0
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith(MARKER)), None)
    if res.returncode != 0 or line is None:
        tail = (res.stderr or res.stdout).strip().splitlines()[-8:]
        raise RuntimeError(f"{target.name}: exit {res.returncode}: " + " | ".join(tail))
    data: dict[str, Any] = json.loads(line[len(MARKER) :])
    data["wall_ms"] = wall
    return data, res.stderr


def measure_imports(targets: list[Target], *, runs: int = 7, warmup: int = 1, budget_s: float = 600.0) -> None:
    """Fill each target's samples: ``warmup + runs`` interleaved rounds, rotating the order each round."""
    deadline = time.monotonic() + budget_s
    for round_no in range(warmup + runs):
        if time.monotonic() > deadline and round_no > warmup + 4:  # at least 5 counted rounds
            progress(f"cold start: time budget spent after {round_no - warmup} rounds")
            break
        shift = round_no % len(targets)
        for target in targets[shift:] + targets[:shift]:
            if target.error is not None:
                continue
            try:
                data, _ = _run(target, _IMPORT_PROBE.format(module=target.module, marker=MARKER))
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                target.error = str(exc)[:500]
                progress(f"cold start: {target.name} failed: {target.error}")
                continue
            if round_no >= warmup:
                target.samples.append(data["import_ms"])
                target.process_ms.append(data["wall_ms"])
        counted = max(0, round_no + 1 - warmup)
        if counted:
            done = ", ".join(f"{t.name} {median(t.samples):.0f} ms" for t in targets if t.samples)
            progress(f"cold start round {counted}/{runs}: medians so far: {done}")


def import_profile(target: Target, *, top: int = 12) -> dict[str, Any]:
    """One ``-X importtime`` run: the modules with the most self time, and totals per top-level package."""
    _, stderr = _run(
        target, _IMPORT_PROBE.format(module=target.module, marker=MARKER), extra_flags=("-X", "importtime")
    )
    return summarize_importtime(stderr, top=top)


def summarize_importtime(stderr: str, *, top: int = 12) -> dict[str, Any]:
    by_module: list[tuple[str, float]] = []
    by_package: dict[str, float] = {}
    for line in stderr.splitlines():
        m = _IMPORTTIME.match(line)
        if m is None:
            continue
        self_us, name = int(m.group(1)), m.group(4)
        by_module.append((name, self_us / 1000.0))
        package = name.split(".")[0]
        by_package[package] = by_package.get(package, 0.0) + self_us / 1000.0
    by_module.sort(key=lambda item: -item[1])
    packages = sorted(by_package.items(), key=lambda item: -item[1])
    return {
        "total_self_ms": sum(ms for _, ms in by_module),
        "top_modules": [{"module": n, "self_ms": round(ms, 2)} for n, ms in by_module[:top]],
        "top_packages": [{"package": n, "self_ms": round(ms, 2)} for n, ms in packages[:top]],
    }


def handler_target(
    name: str, interpreter: Interpreter, function_dir: Path, layer_python: Path | None, extra_env: dict[str, str]
) -> Target:
    """A handler import as on Lambda; ``layer_python`` None: sources plus the interpreter's packages."""
    path = str(layer_python) if layer_python is not None else str(REPO_ROOT / "layers" / "gateway")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        **lambda_env(f"llm-gateway-{name}"),
        **extra_env,
        "PYTHONPATH": path,
        "LAMBDA_TASK_ROOT": str(function_dir),
    }
    return Target(name=name, interpreter=interpreter, module="app", cwd=function_dir, env=env)


def litellm_target(interpreter: Interpreter) -> Target:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # the bundled cost map, no download
        "LITELLM_TELEMETRY": "False",
        # Anything that is not 127.0.0.1 goes to a closed port: the import must not reach the network.
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    return Target(name="litellm", interpreter=interpreter, module="litellm", cwd=Path(tempfile.gettempdir()), env=env)


def import_and_first_call(
    target: Target, event: dict[str, Any], env: dict[str, str], *, runs: int = 5
) -> dict[str, Any]:
    """Median import, first and second invocation times of one handler, in fresh processes."""
    runner = Target(target.name, target.interpreter, target.module, target.cwd, {**env, **target.env})
    samples: list[dict[str, Any]] = []
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(event, fh)
        event_path = fh.name
    try:
        for _ in range(runs + 1):
            data, _ = _run(runner, _FIRST_CALL_PROBE.format(marker=MARKER), event_path)
            if data["status"][0] != 200 or data["status"][1] != 200:
                raise RuntimeError(f"{target.name}: the handler answered {data['status']} (expected 200, 200)")
            samples.append(data)
    finally:
        os.unlink(event_path)
    counted = samples[1:]  # the first process warms the page cache
    result: dict[str, Any] = {
        key: summarize([s[key] for s in counted]) for key in ("import_ms", "first_call_ms", "second_call_ms")
    }
    totals = [s["import_ms"] + s["first_call_ms"] for s in counted]
    result["import_plus_first_call_ms"] = summarize(totals)
    return result
