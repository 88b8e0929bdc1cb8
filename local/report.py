"""Write a usage report as a PNG and an HTML page: ``python -m local.report`` (``make report``).

Cost per day by model, requests and cache hit rate per day, cost saved by the cache, top tenants (and the
budget alerts sent), from the usage table's aggregates (local/report_data.py), drawn by
local/report_charts.py. The table is found as for ``make usage``: the running ``make run`` when no AWS
target is set, else ``AWS_ENDPOINT_URL`` (any moto) or real AWS, with ``--table`` / ``$USAGE_TABLE`` or
the one table named like ``UsageTable``; or a deployed stack's ``UsageTableName`` output (``--stack-name``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from llm_gateway import aws
from llm_gateway.accounting.usage_reports import report_range
from llm_gateway.errors import InvalidRequestError
from local import state
from local.report_data import collect
from local.usage_cli import aws_errors, find_table, target_environment

DEFAULT_OUT_DIR = state.REPO_ROOT / ".local" / "report"
BASENAME = "usage-report"


def stack_table(stack_name: str) -> str:
    """A deployed stack's usage table, from its outputs (AWS_PROFILE / AWS_REGION pick the account)."""
    outputs = aws.client("cloudformation").describe_stacks(StackName=stack_name)["Stacks"][0].get("Outputs", [])
    found = {o["OutputKey"]: o["OutputValue"] for o in outputs}.get("UsageTableName")
    if not found:
        raise state.NoTarget(f"stack {stack_name} has no UsageTableName output")
    return str(found)


def write_report(data_dir: Path, png: bytes, page: str) -> tuple[Path, Path]:
    data_dir.mkdir(parents=True, exist_ok=True)
    png_path, html_path = data_dir / f"{BASENAME}.png", data_dir / f"{BASENAME}.html"
    png_path.write_bytes(png)
    html_path.write_text(page, encoding="utf-8")
    return png_path, html_path


def main(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.report", description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="start", help="first day, YYYY-MM-DD (default: 6 days before --to)")
    parser.add_argument("--to", dest="end", help="last day, YYYY-MM-DD (default: today, UTC)")
    parser.add_argument("--tenant", action="append", help="only this tenant (repeatable); default: every tenant")
    parser.add_argument("--table", help="usage table name")
    parser.add_argument("--stack-name", help="a deployed stack: its UsageTableName output")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR, help=f"default {DEFAULT_OUT_DIR}")
    parser.add_argument("--json", action="store_true", help="also print the aggregated numbers as JSON")
    args = parser.parse_args(argv)
    try:
        first, last = report_range(args.start, args.end)
    except InvalidRequestError as err:
        print(f"error: {err.message}", file=sys.stderr)
        return 2
    try:
        if args.stack_name:
            table = args.table or stack_table(args.stack_name)
        else:
            table = find_table(args.table, target_environment(environ))
        data = collect(aws.dynamodb(), table, first, last, tenants=args.tenant)
    except (state.NoTarget, *aws_errors()) as exc:
        return state.exit_without_traceback(exc)
    from local.report_charts import render_html, render_png  # matplotlib: only once there is something to draw

    png = render_png(data)
    png_path, html_path = write_report(args.out_dir, png, render_html(data, png))
    if args.json:
        print(json.dumps(data.as_json(), indent=2))
    print(f"usage report for {first.isoformat()} .. {last.isoformat()} ({data.totals.requests} requests):")
    print(f"  PNG  {png_path}")
    print(f"  HTML {html_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
