"""Statistics, the ratio table and the JSON writer shared by every benchmark part (pure, unit-tested)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of an empty sample")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50.0)


def summarize(values: Sequence[float]) -> dict[str, float]:
    """n, min, p50, p90, p99, max and mean of a sample (milliseconds in, milliseconds out)."""
    if not values:
        raise ValueError("summary of an empty sample")
    return {
        "n": len(values),
        "min": min(values),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values),
        "mean": sum(values) / len(values),
    }


def added(path: Sequence[float], baseline: Sequence[float], q: float) -> float:
    """Latency a path adds over the baseline at the q-th percentile (difference of the two percentiles)."""
    return percentile(path, q) - percentile(baseline, q)


def ratio(ours: float | None, theirs: float | None) -> float | None:
    """ours / theirs, or None when either is missing or theirs is not positive."""
    if ours is None or theirs is None or theirs <= 0:
        return None
    return ours / theirs


@dataclass(frozen=True)
class Row:
    """One line of the summary table: a measurement of ours next to LiteLLM's (or a bare figure)."""

    part: str
    metric: str
    ours: float | None
    theirs: float | None = None
    unit: str = "ms"
    target: float | None = None  # met when ours/theirs <= target (or ours <= target when there is no theirs)
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return ratio(self.ours, self.theirs)

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        if self.theirs is not None:
            r = self.ratio
            return None if r is None else r <= self.target
        return None if self.ours is None else self.ours <= self.target


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "MB":
        return f"{value:.1f} MB"
    if unit in ("", "count"):
        return f"{value:g}"
    if abs(value) >= 100:
        return f"{value:.0f} {unit}"
    return f"{value:.2f} {unit}"


def render_table(rows: Iterable[Row]) -> str:
    """A fixed-width text table: part, metric, ours, LiteLLM, ratio, target/verdict, note."""
    header = ("part", "metric", "ours", "LiteLLM", "ours/LiteLLM", "target", "note")
    lines: list[tuple[str, ...]] = [header]
    for row in rows:
        r = row.ratio
        if row.target is None:
            verdict = ""
        else:
            bound = f"<= {row.target:g}" if row.theirs is not None else f"<= {_fmt(row.target, row.unit)}"
            verdict = {True: "met", False: "MISSED", None: "n/a"}[row.met] + f" ({bound})"
        lines.append(
            (
                row.part,
                row.metric,
                _fmt(row.ours, row.unit),
                _fmt(row.theirs, row.unit),
                "-" if r is None else f"{r:.3f}",
                verdict,
                row.note,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        out.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def rows_to_json(rows: Iterable[Row]) -> list[dict[str, Any]]:
    return [
        {
            "part": row.part,
            "metric": row.metric,
            "ours": row.ours,
            "litellm": row.theirs,
            "unit": row.unit,
            "ratio": row.ratio,
            "target": row.target,
            "met": row.met,
            "note": row.note,
        }
        for row in rows
    ]


def write_results(results: dict[str, Any], directory: Path, stamp: str) -> tuple[Path, Path]:
    """Write ``<stamp>.json`` and ``latest.json`` atomically (a reader never sees half a file)."""
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2, sort_keys=True, default=_json_default) + "\n"
    stamped = directory / f"{stamp}.json"
    latest = directory / "latest.json"
    for path in (stamped, latest):
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return stamped, latest


def _json_default(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
