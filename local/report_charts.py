"""Draw the usage report (local/report_data.py) as one PNG, and an HTML page that embeds that same PNG.

matplotlib is a development dependency only (the ``dev`` extra), imported when a report is drawn, never
by the layer. The HTML page carries the PNG itself (a data: URI, byte for byte the file), so both show
the same charts, followed by the numbers behind them.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

from local.report_data import ReportData

TITLES = (
    "Cost per day by model (USD)",
    "Requests and cache hit rate per day",
    "Cost saved by the cache per day (USD)",
    "Top tenants by cost (USD)",
)
MAX_MODELS = 8  # the rest are drawn together as "other models"
DPI = 100


def render_png(data: ReportData) -> bytes:
    """The four charts on one figure, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(14, 9), dpi=DPI)
    try:
        figure.suptitle(f"LLM gateway usage, {data.first.isoformat()} to {data.last.isoformat()}", fontsize=14)
        _cost_by_model(axes[0][0], data)
        _requests_and_hit_rate(axes[0][1], data)
        _saved(axes[1][0], data)
        _top_tenants(axes[1][1], data)
        for axis, title in zip((axes[0][0], axes[0][1], axes[1][0], axes[1][1]), TITLES, strict=True):
            axis.set_title(title)
        figure.tight_layout(rect=(0, 0, 1, 0.96))
        out = io.BytesIO()
        figure.savefig(out, format="png")
        return out.getvalue()
    finally:
        plt.close(figure)


def render_html(data: ReportData, png: bytes) -> str:
    totals = data.totals
    picture = base64.b64encode(png).decode("ascii")
    summary = (
        f"{totals.requests} requests, {totals.cache_hits} cache hits ({totals.cache_hit_rate:.1%}), "
        f"{totals.errors} errors, cost {totals.cost_usd:.6f} USD, saved by the cache {totals.saved_usd:.6f} USD"
    )
    days = [
        [day, t.requests, t.cache_hits, f"{t.cache_hit_rate:.1%}", f"{t.cost_usd:.6f}", f"{t.saved_usd:.6f}"]
        for day, t in ((day, data.by_day[day]) for day in data.days)
    ]
    models = [[model, f"{sum(data.cost_by_day_model[model].values()):.6f}"] for model in data.models()]
    tenants = [[name, t.requests, f"{t.cache_hit_rate:.1%}", f"{t.cost_usd:.6f}"] for name, t in data.top_tenants()]
    alerts = [
        [a["tenant"], a["key_id"] or "", a["period"], f"{a['threshold']:.0%}", f"{a['spent_usd']:.6f}"]
        for a in data.alerts
    ]
    title = f"LLM gateway usage, {data.first.isoformat()} to {data.last.isoformat()}"
    return "\n".join(
        [
            "<!doctype html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{html.escape(title)}</title>",
            "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}"
            "table{border-collapse:collapse;margin-bottom:2em}td,th{border:1px solid #ccc;padding:4px 8px;"
            "text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:100%}</style>",
            "</head><body>",
            f"<h1>{html.escape(title)}</h1>",
            f"<p>{html.escape(summary)}</p>",
            f'<img alt="{html.escape("; ".join(TITLES))}" src="data:image/png;base64,{picture}">',
            "<h2>Per day</h2>",
            _table(["date", "requests", "cache hits", "hit rate", "cost USD", "saved USD"], days),
            "<h2>Cost by model</h2>",
            _table(["model", "cost USD"], models),
            "<h2>Top tenants</h2>",
            _table(["tenant", "requests", "hit rate", "cost USD"], tenants),
            "<h2>Budget alerts sent</h2>",
            _table(["tenant", "key", "window", "threshold", "spent USD"], alerts),
            "</body></html>",
        ]
    )


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    if not rows:
        return "<p>(none)</p>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _labels(data: ReportData) -> list[str]:
    return [day[5:] for day in data.days]  # MM-DD: the year is in the title


def _cost_by_model(axis: Any, data: ReportData) -> None:
    labels, models = _labels(data), data.models()
    shown, rest = models[:MAX_MODELS], models[MAX_MODELS:]
    bottom = [0.0] * len(data.days)
    series = [(m, [data.cost_by_day_model[m].get(d, 0.0) for d in data.days]) for m in shown]
    if rest:
        other = [sum(data.cost_by_day_model[m].get(d, 0.0) for m in rest) for d in data.days]
        series.append((f"{len(rest)} other models", other))
    for name, values in series:
        axis.bar(labels, values, bottom=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    if series:
        axis.legend(fontsize=8)
    _empty_note(axis, not series)
    axis.tick_params(axis="x", labelrotation=45)


def _requests_and_hit_rate(axis: Any, data: ReportData) -> None:
    labels = _labels(data)
    axis.bar(labels, [data.by_day[d].requests for d in data.days], color="#4c72b0", label="requests")
    axis.set_ylabel("requests")
    rate = axis.twinx()
    # No point on a day without requests: a rate of nothing is not 0 %.
    rates = [100 * t.cache_hit_rate if t.requests else float("nan") for t in (data.by_day[d] for d in data.days)]
    rate.plot(labels, rates, color="#dd8452", marker="o", label="cache hit rate")
    rate.set_ylabel("cache hit rate (%)")
    rate.set_ylim(0, 100)
    axis.tick_params(axis="x", labelrotation=45)


def _saved(axis: Any, data: ReportData) -> None:
    labels = _labels(data)
    axis.bar(labels, [data.by_day[d].saved_usd for d in data.days], color="#55a868")
    axis.text(
        0.02, 0.95, f"total saved {data.totals.saved_usd:.6f} USD", transform=axis.transAxes, va="top", fontsize=9
    )
    axis.tick_params(axis="x", labelrotation=45)


def _top_tenants(axis: Any, data: ReportData) -> None:
    top = list(reversed(data.top_tenants()))  # the most expensive at the top
    alerted: dict[str, float] = {}
    for alert in data.alerts:
        alerted[alert["tenant"]] = max(alerted.get(alert["tenant"], 0.0), alert["threshold"])
    names = [
        (name if len(name) <= 28 else name[:27] + "…") + (f" [alert {alerted[name]:.0%}]" if name in alerted else "")
        for name, _ in top
    ]
    axis.barh(names, [t.cost_usd for _, t in top], color="#8172b3")
    _empty_note(axis, not top)


def _empty_note(axis: Any, empty: bool) -> None:
    if empty:
        axis.text(0.5, 0.5, "no usage in this range", transform=axis.transAxes, ha="center", va="center")
