"""``python -m bench.run``: every benchmark part in one run, a table of ratios, JSON and a PNG.

Absolute times vary from machine to machine; the ratios against LiteLLM, measured in the same run, are
what to compare. Parts: layer, cold, warm, cache, stream, tracing, quota, summarize (``--parts`` picks some).
Output goes to ``bench/results/<timestamp>.json``, ``latest.json`` and ``latest.png``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench import cold_start, layer_size, tracing_import
from bench.common import (
    API_KEY,
    LITELLM_VENV,
    PY312_VENV,
    REPO_ROOT,
    TENANT,
    Interpreter,
    MotoTimer,
    chat_body,
    probe_interpreter,
    progress,
    venv_python,
)
from bench.stats import Row, render_table, rows_to_json, write_results

RESULTS_DIR = REPO_ROOT / "bench" / "results"
PARTS = ("layer", "cold", "warm", "cache", "stream", "tracing", "quota", "summarize")
COLD_TARGET = 0.10  # handler import <= 1/10 of `import litellm`
WARM_TARGET = 1 / 3  # added p50 <= 1/3 of LiteLLM proxy's
WARM_NOTES = {
    "bridge": "incl. moto server time and the local API Gateway stand-in",
    "bridge_excl_moto": "incl. the local API Gateway stand-in (API Gateway's job in AWS)",
    "handler": "incl. moto server time",
}


def _functions() -> list[tuple[str, Path]]:
    """(CodeUri directory name, directory) of each template function whose handler module exists."""
    from local.cfn import Template

    found = []
    for spec in Template.load(REPO_ROOT / "template.yaml").functions().values():
        module = spec.handler.rpartition(".")[0]
        if (spec.code_uri / f"{module.replace('.', '/')}.py").is_file() and module == "app":
            found.append((spec.dir_name, spec.code_uri))
    return sorted(found)


def _ours_interpreter(py312_venv: Path) -> tuple[Interpreter, bool]:
    """(interpreter, uses the built layer). Python 3.12 as on Lambda, else this interpreter on sources."""
    candidate = probe_interpreter(venv_python(py312_venv)) if venv_python(py312_venv).exists() else None
    if candidate is not None and candidate.minor == "3.12":
        return candidate, True
    here = Interpreter((sys.executable,), platform.python_version())
    return here, False  # the layer's compiled wheels are for 3.12: use the sources and this venv instead


def run_layer(results: dict[str, Any]) -> None:
    layer_size.ensure_layer(log=progress)
    results["layer"] = layer_size.measure(layer_size.DEFAULT_LAYER)


def run_cold(args: argparse.Namespace, results: dict[str, Any]) -> cold_start.Target | None:
    """Import timings of every handler and LiteLLM; returns the completion target for the first-call part."""
    ours, use_layer = _ours_interpreter(args.py312_venv)
    layer_python = layer_size.ensure_layer(log=progress) if use_layer else None
    litellm = probe_interpreter(venv_python(args.litellm_venv)) if venv_python(args.litellm_venv).exists() else None
    section: dict[str, Any] = {
        "python_ours": ours.version,
        "python_litellm": litellm.version if litellm else None,
        "ours_from": "built layer (.pyc)" if use_layer else "sources + project venv (no Python 3.12 venv)",
        "targets": {},
    }
    results["cold_start"] = section
    targets = [
        cold_start.handler_target(name, ours, directory, layer_python, {"POWERTOOLS_SERVICE_NAME": "llm-gateway"})
        for name, directory in _functions()
    ]
    if litellm is not None:
        targets.append(cold_start.litellm_target(litellm))
    else:
        section["litellm_error"] = f"no LiteLLM venv at {args.litellm_venv} (make bench creates it)"
    progress(f"cold start: {', '.join(t.name for t in targets)}; ours on Python {ours.version}, {section['ours_from']}")
    cold_start.measure_imports(targets, runs=args.runs, budget_s=args.cold_budget)
    for target in targets:
        entry: dict[str, Any] = {"error": target.error}
        if target.samples:
            from bench.stats import median, summarize

            entry.update(
                median_ms=median(target.samples),
                import_ms=summarize(target.samples),
                process_wall_ms=summarize(target.process_ms),
                samples_ms=target.samples,
            )
        section["targets"][target.name] = entry
    for target in targets:
        if target.name in ("completion", "litellm") and target.error is None:
            try:
                section["targets"][target.name]["importtime"] = cold_start.import_profile(target)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                section["targets"][target.name]["importtime_error"] = str(exc)[:500]
    return next((t for t in targets if t.name == "completion" and t.error is None), None)


def run_first_invocation(stack: Any, target: cold_start.Target, results: dict[str, Any], runs: int) -> None:
    from bench.common import apigw_event

    progress("cold start: import + first invocation of the completion handler (fresh processes)")
    event = apigw_event(stack, chat_body())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    try:
        results["cold_start"]["first_invocation"] = cold_start.import_and_first_call(target, event, env, runs=runs)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        results["cold_start"]["first_invocation_error"] = str(exc)[:1000]


def run_stack_parts(
    args: argparse.Namespace, parts: set[str], results: dict[str, Any], completion: cold_start.Target | None
) -> None:
    from bench import cache_hit, warm_overhead
    from local.stack import LocalStack

    progress("starting the local stack (moto server, provider simulator, API bridge)")
    with LocalStack(port=0, api_keys={API_KEY: TENANT}, simulate=True, event_sources=False) as stack:
        moto = MotoTimer().install(stack)
        if completion is not None:
            run_first_invocation(stack, completion, results, runs=max(5, args.runs // 2 + 1))
        if "warm" in parts:
            litellm_bin = args.litellm_venv / "bin" / "litellm"
            results["warm_overhead"] = warm_overhead.run(
                stack,
                litellm_bin=litellm_bin if litellm_bin.exists() else None,
                moto=moto,
                n=args.n,
                warmup=args.warmup,
            )
        if "stream" in parts:
            from bench import stream_ttft

            litellm_bin = args.litellm_venv / "bin" / "litellm"
            results["stream"] = stream_ttft.run(
                stack, litellm_bin=litellm_bin if litellm_bin.exists() else None, n=max(30, args.n // 2)
            )
        if "cache" in parts:
            progress(f"cache: {args.cache_n} miss/hit pairs through the completion handler")
            results["cache_hit"] = cache_hit.run(stack, moto=moto, n=args.cache_n)


def run_quota(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """The per-request cost of the quota check (bench/quota_check.py), against quotas off in the same run."""
    from bench import quota_check

    results["quota"] = quota_check.run(n=args.n, warmup=args.warmup)


def _quota_rows(quota: dict[str, Any]) -> list[Row]:
    if not quota:
        return []
    rows = []
    labels = {"declared": "declared RPM/TPM", "headers": "headers only (no declared limits)"}
    for name, label in labels.items():
        ops = quota["store_calls_per_request"].get(name, {})
        note = ", ".join(f"{op.removeprefix('dynamodb:')} x{count:g}" for op, count in ops.items()) or "none"
        rows.append(Row("quota", f"added p50, {label}", quota["added_p50_ms"][name], note=note))
        rows.append(Row("quota", f"store calls per request, {label}", sum(ops.values()), unit="count"))
    rows.append(Row("quota", "p50 with quotas off (baseline)", quota["latency_ms"]["off"]["p50"]))
    return rows


def run_summarize_bench(results: dict[str, Any]) -> None:
    """The summarization benchmark (issue 5), when it exists: its ``run() -> dict`` result is included."""
    if importlib.util.find_spec("bench.summarize_bench") is None:
        return
    from bench import summarize_bench

    runner: Callable[[], dict[str, Any]] | None = getattr(summarize_bench, "run", None)
    if runner is None:
        results["summarize_error"] = "bench/summarize_bench.py has no run() function"
        return
    progress("summarization benchmark (bench/summarize_bench.py)")
    results["summarize"] = runner()


# --------------------------------------------------------------------------- table


def _stream_rows(stream: dict[str, Any]) -> list[Row]:
    """Time to first token added over a direct streamed call, ours (through the bridge and the streaming
    runtime) next to LiteLLM's proxy, from the same rounds."""
    added_ttft = stream.get("added_ttft") or {}
    if "bridge" not in added_ttft:
        return []
    theirs = added_ttft.get("litellm") or {}
    rows = [
        Row("stream", f"TTFT added, via HTTP bridge {q}", added_ttft["bridge"][q], theirs.get(q), note="SSE")
        for q in ("p50", "p99")
    ]
    rows.append(Row("stream", "TTFT direct to simulator p50 (baseline)", stream["ttft"]["direct"]["p50"]))
    return rows


def build_rows(results: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    cold = results.get("cold_start") or {}
    targets = cold.get("targets") or {}
    theirs = (targets.get("litellm") or {}).get("median_ms")
    py = f"py{cold.get('python_ours', '?')}"
    for name, data in targets.items():
        if name == "litellm":
            continue
        rows.append(
            Row(
                "cold start",
                f"import {name} handler (median)",
                data.get("median_ms"),
                theirs,
                target=COLD_TARGET,
                note=py,
            )
        )
    first = cold.get("first_invocation")
    if first:
        total = first["import_plus_first_call_ms"]["p50"]
        rows.append(Row("cold start", "completion import + first call", total, theirs, note="vs import litellm alone"))
        rows.append(Row("cold start", "completion first call alone", first["first_call_ms"]["p50"]))
    warm = results.get("warm_overhead") or {}
    added = warm.get("added") or {}
    lite = added.get("litellm") or {}
    labels = {
        "bridge": "added, via HTTP bridge",
        "bridge_excl_moto": "added, via HTTP bridge, excl. moto",
        "handler": "added, handler in-process",
        "handler_excl_moto": "added, in-process, excl. moto",
        "core": "added, in-process, no AWS calls",
    }
    for name, label in labels.items():
        if name not in added:
            continue
        for q in ("p50", "p99"):
            rows.append(
                Row(
                    "warm",
                    f"{label} {q}",
                    added[name][q],
                    lite.get(q),
                    # Judged: the handler (event in, response out) without moto's own costs, which are
                    # not AWS's; the bridge rows also carry our local stand-in for API Gateway.
                    target=WARM_TARGET if q == "p50" and name in ("handler_excl_moto", "core") else None,
                    note=WARM_NOTES.get(name, ""),
                )
            )
    if aws_calls := warm.get("aws_calls_per_request"):
        ops = ", ".join(f"{op} x{n:g}" for op, n in aws_calls.items() if op != "total")
        rows.append(Row("warm", "AWS calls per request (handler)", aws_calls["total"], unit="count", note=ops))
    if "direct" in (warm.get("paths") or {}):
        rows.append(Row("warm", "direct to simulator p50 (baseline)", warm["paths"]["direct"]["p50"]))
    rows += _stream_rows(results.get("stream") or {})
    rows += _quota_rows(results.get("quota") or {})
    cache = results.get("cache_hit") or {}
    if cache.get("cache_configured"):
        rows.append(Row("cache", "miss p50 (handler in-process)", cache["miss_ms"]["p50"]))
        rows.append(Row("cache", "hit p50 (handler in-process)", cache["hit_ms"]["p50"]))
        if "hit_excl_moto_ms" in cache:
            rows.append(Row("cache", "miss p50, excl. moto", cache["miss_excl_moto_ms"]["p50"]))
            rows.append(Row("cache", "hit p50, excl. moto", cache["hit_excl_moto_ms"]["p50"]))
        rows.append(Row("cache", "provider calls per hit", cache["provider_calls_per_hit"], unit="count", target=0))
        ops = ", ".join(f"{op} x{n:g}" for op, n in cache.get("aws_ops_per_hit", {}).items())
        rows.append(Row("cache", "AWS calls per hit", cache["aws_calls_per_hit"], unit="count", note=ops))
    elif cache:
        rows.append(Row("cache", "cache hits", 0, unit="count", note="no response cache answered a repeat request"))
    layer = results.get("layer") or {}
    if layer:
        top = ", ".join(f"{p['package']} {p['mb']:.1f}" for p in layer.get("largest", [])[:5])
        rows.append(
            Row(
                "layer",
                "unzipped, boto3 excluded",
                layer["unzipped_mb"],
                unit="MB",
                target=layer_size.SIZE_TARGET_MB,
                note=top,
            )
        )
    traced = results.get("tracing_import") or {}
    for name, data in (traced.get("targets") or {}).items():
        note = "X-Ray SDK imported" if True in data["xray_sdk_imported"] else "no X-Ray SDK import"
        rows.append(Row("tracing", f"import completion handler, {name} (median)", data["median_ms"], note=note))
    summary = results.get("summarize")
    if isinstance(summary, dict):
        for row in summary.get("rows", []):
            rows.append(
                Row(
                    "summarize", str(row.get("metric")), row.get("ours"), row.get("litellm"), unit=row.get("unit", "ms")
                )
            )
    return rows


def _chart(results_json: Path, out_png: Path, litellm_venv: Path) -> str | None:
    """Draw the PNG with the bench venv's matplotlib; returns an error message or None."""
    python = venv_python(litellm_venv)
    if not python.exists():
        return f"no {python}: PNG skipped"
    res = subprocess.run(
        [str(python), str(REPO_ROOT / "bench" / "chart.py"), str(results_json), str(out_png)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return None if res.returncode == 0 else f"chart failed: {res.stderr.strip()[-500:]}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="llm-gateway benchmarks, side by side with LiteLLM")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--runs", type=int, default=7, help="cold-start processes per target (>= 5)")
    parser.add_argument("--n", type=int, default=300, help="warm requests per path (>= 200)")
    parser.add_argument("--warmup", type=int, default=30, help="warm-up requests per path")
    parser.add_argument("--cache-n", type=int, default=100, help="cache miss/hit pairs")
    parser.add_argument("--cold-budget", type=float, default=600.0, help="seconds for the cold-start rounds")
    parser.add_argument("--litellm-venv", type=Path, default=LITELLM_VENV)
    parser.add_argument("--py312-venv", type=Path, default=PY312_VENV)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if unknown := parts - set(PARTS):
        parser.error(f"unknown parts: {sorted(unknown)}")
    if args.runs < 5:
        parser.error("--runs must be >= 5 (medians of at least 5 runs)")

    started = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
    results: dict[str, Any] = {
        "timestamp": stamp,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": f"orchestrator {platform.python_version()}",
            "load_avg_start": os.getloadavg(),
        },
        "parts": sorted(parts),
        "errors": {},
    }

    def attempt(name: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as exc:  # one broken part must not lose the others' numbers
            results["errors"][name] = f"{type(exc).__name__}: {exc}"
            progress(f"{name} failed:\n{traceback.format_exc()}")

    if "layer" in parts:
        attempt("layer", lambda: run_layer(results))
    completion: list[cold_start.Target | None] = [None]
    if "cold" in parts:
        attempt("cold", lambda: completion.__setitem__(0, run_cold(args, results)))
    if parts & {"cold", "warm", "cache", "stream"}:
        attempt("stack", lambda: run_stack_parts(args, parts, results, completion[0]))
    if "tracing" in parts:  # the handler's import with X-Ray tracing on and off
        attempt("tracing", lambda: results.__setitem__("tracing_import", tracing_import.measure(runs=args.runs)))
    if "quota" in parts:
        attempt("quota", lambda: run_quota(args, results))
    if "summarize" in parts:
        attempt("summarize", lambda: run_summarize_bench(results))
    results["machine"]["load_avg_end"] = os.getloadavg()
    results["elapsed_s"] = round(time.time() - started, 1)

    rows = build_rows(results)
    results["table"] = rows_to_json(rows)
    stamped, latest = write_results(results, args.out, stamp)
    chart_error = _chart(latest, args.out / "latest.png", args.litellm_venv)

    print()
    print(render_table(rows))
    print()
    cold = results.get("cold_start") or {}
    if cold:
        ours = f"Python {cold.get('python_ours')} ({cold.get('ours_from')})"
        print(f"cold start: ours on {ours}, LiteLLM on Python {cold.get('python_litellm')}")
    for name, error in results["errors"].items():
        print(f"error in {name}: {error}")
    print(f"results: {stamped.relative_to(REPO_ROOT) if stamped.is_relative_to(REPO_ROOT) else stamped}")
    print(f"chart:   {chart_error or args.out / 'latest.png'}")
    print(f"elapsed: {results['elapsed_s']} s")
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
