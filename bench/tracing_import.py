"""Part "tracing": what X-Ray tracing costs a cold start. The completion handler's import in fresh
processes with ``POWERTOOLS_TRACE_DISABLED`` true (template ``Tracing: Disabled``) and false (``Active``),
interleaved; each sample also says whether the X-Ray SDK got imported (it must not when tracing is off).

Runs on this interpreter and the layer's sources (``python -m bench.tracing_import``), or inside
``python -m bench.run --parts tracing``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from bench import cold_start
from bench.common import REPO_ROOT, Interpreter, progress
from bench.stats import median, summarize

_PROBE = """
import json, sys, time
t0 = time.perf_counter()
import app
t1 = time.perf_counter()
print({marker!r} + json.dumps({{"import_ms": (t1 - t0) * 1000.0, "xray_loaded": "aws_xray_sdk" in sys.modules}}))
"""
SETTINGS = {"tracing off": "true", "tracing on": "false"}  # POWERTOOLS_TRACE_DISABLED


def measure(*, runs: int = 7, warmup: int = 1, function: str = "completion") -> dict[str, Any]:
    interpreter = Interpreter((sys.executable,), ".".join(map(str, sys.version_info[:3])))
    directory = REPO_ROOT / "functions" / function
    targets = {
        name: cold_start.handler_target(
            f"{function} ({name})",
            interpreter,
            directory,
            None,
            {"POWERTOOLS_SERVICE_NAME": "llm-gateway", "POWERTOOLS_TRACE_DISABLED": disabled},
        )
        for name, disabled in SETTINGS.items()
    }
    loaded: dict[str, set[bool]] = {name: set() for name in targets}
    for round_no in range(warmup + runs):
        order = list(targets.items())
        for name, target in order[round_no % 2 :] + order[: round_no % 2]:  # alternate who goes first
            data, _ = cold_start._run(target, _PROBE.format(marker=cold_start.MARKER))
            loaded[name].add(bool(data["xray_loaded"]))
            if round_no >= warmup:
                target.samples.append(data["import_ms"])
        progress(f"tracing import round {round_no + 1}/{warmup + runs}")
    result: dict[str, Any] = {"python": interpreter.version, "from": "sources + project venv", "targets": {}}
    for name, target in targets.items():
        result["targets"][name] = {
            "median_ms": median(target.samples),
            "import_ms": summarize(target.samples),
            "xray_sdk_imported": sorted(loaded[name]),
        }
    off, on = (result["targets"][n]["median_ms"] for n in SETTINGS)
    result["tracing_cost_ms"] = on - off
    return result


if __name__ == "__main__":
    figures = measure()
    print(json.dumps(figures, indent=2))
    off = figures["targets"]["tracing off"]
    if off["xray_sdk_imported"] != [False]:
        raise SystemExit("the X-Ray SDK was imported with tracing off")
