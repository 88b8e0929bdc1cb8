"""Draw ``latest.png`` from a results JSON: ``python bench/chart.py results.json out.png``.

Runs in the bench-only venv (matplotlib lives there, not in the project's dependencies), so it imports
nothing from the project.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OURS = "#2b7bba"
THEIRS = "#d9534f"
NEUTRAL = "#7f7f7f"


def _bars(ax: Any, labels: list[str], values: list[float], colors: list[str], unit: str) -> None:
    bars = ax.barh(labels, values, color=colors)
    ax.invert_yaxis()
    ax.set_xlabel(unit)
    top = max(values, default=0) or 1
    for bar, value in zip(bars, values, strict=True):
        text = f"{value:.0f}" if value >= 100 else f"{value:.2f}" if value < 10 else f"{value:.1f}"
        ax.text(bar.get_width() + top * 0.01, bar.get_y() + bar.get_height() / 2, text, va="center", fontsize=8)
    ax.set_xlim(0, top * 1.18)


def draw(results: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    fig.suptitle(
        f"llm-gateway vs LiteLLM  ({results.get('timestamp', '')}, {results.get('machine', {}).get('python', '')})"
    )

    cold = results.get("cold_start") or {}
    labels, values, colors = [], [], []
    for name, data in (cold.get("targets") or {}).items():
        if data.get("median_ms") is not None:
            labels.append(f"import {name}")
            values.append(data["median_ms"])
            colors.append(THEIRS if name == "litellm" else OURS)
    first = (cold.get("first_invocation") or {}).get("import_plus_first_call_ms")
    if first:
        labels.append("completion: import + 1st call")
        values.append(first["p50"])
        colors.append(OURS)
    _bars(axes[0][0], labels, values, colors, "ms (median of fresh processes)")
    axes[0][0].set_title("Cold start")

    warm = results.get("warm_overhead") or {}
    labels, values, colors = [], [], []
    for name, data in (warm.get("added") or {}).items():
        for q in ("p50", "p99"):
            labels.append(f"{name} {q}")
            values.append(max(data[q], 0.0))
            colors.append(THEIRS if name == "litellm" else OURS)
    _bars(axes[0][1], labels, values, colors, "ms added over a direct call")
    axes[0][1].set_title("Warm added latency")

    cache = results.get("cache_hit") or {}
    labels, values, colors = [], [], []
    if cache.get("miss_ms") and cache.get("hit_ms"):
        labels += ["miss p50", "hit p50", "miss p99", "hit p99"]
        values += [cache["miss_ms"]["p50"], cache["hit_ms"]["p50"], cache["miss_ms"]["p99"], cache["hit_ms"]["p99"]]
        colors += [NEUTRAL, OURS, NEUTRAL, OURS]
    _bars(axes[1][0], labels, values, colors, "ms (handler in-process)")
    axes[1][0].set_title("Response cache" if labels else "Response cache (not configured)")

    layer = results.get("layer") or {}
    largest = layer.get("largest") or []
    _bars(axes[1][1], [p["package"] for p in largest], [p["mb"] for p in largest], [OURS] * len(largest), "MB")
    total = layer.get("unzipped_mb")
    axes[1][1].set_title(f"Layer: {total:.1f} MB unzipped" if total is not None else "Layer")

    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python bench/chart.py results.json out.png", file=sys.stderr)
        return 2
    draw(json.loads(Path(argv[1]).read_text(encoding="utf-8")), Path(argv[2]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
