"""Print a tenant's usage as a readable table: ``python -m local.usage_cli --tenant T`` (``make usage``).

Reads the usage table's aggregates (requests, cache hit rate, tokens, cost by day and by model) with
boto3: against the running ``make run`` when no AWS target is set (its endpoints are in
``.local/stack.json``, see local/state.py), against moto when ``AWS_ENDPOINT_URL`` points at it, else
real AWS with your ``AWS_PROFILE`` / ``AWS_REGION``.
The table is ``--table``, else ``$USAGE_TABLE``, else the one table whose name contains ``UsageTable``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from llm_gateway import aws
from llm_gateway.accounting.usage_reports import report_range, usage_summary
from llm_gateway.errors import InvalidRequestError
from local import state

COLUMNS = (
    ("requests", "requests", "{:d}"),
    ("cache_hits", "cache hits", "{:d}"),
    ("attempts", "attempts", "{:d}"),
    ("errors", "errors", "{:d}"),
    ("input_tokens", "input tok", "{:,d}"),
    ("output_tokens", "output tok", "{:,d}"),
    ("cached_input_tokens", "cached tok", "{:,d}"),
    ("cost_usd", "cost USD", "{:.6f}"),
    ("saved_usd", "saved USD", "{:.6f}"),
)


def find_table(explicit: str | None, environ: dict[str, str]) -> str:
    if explicit:
        return explicit
    if environ.get("USAGE_TABLE"):
        return environ["USAGE_TABLE"]
    names = [n for n in aws.dynamodb().list_tables().get("TableNames", []) if "UsageTable" in n]
    if len(names) != 1:
        raise state.NoTarget(f"give --table or USAGE_TABLE (usage tables found: {names or 'none'})")
    return names[0]


def target_environment(environ: dict[str, str] | None) -> dict[str, str]:
    """The variables to read the table name from; with no AWS target, the running local stack's, which
    are also put into ``os.environ`` for boto3. Raises ``state.NoTarget`` when there is neither."""
    env = dict(os.environ if environ is None else environ)
    local = state.use_local_stack_if_no_target(env)
    if local is not None:
        os.environ.update(local.aws_environment())
    return env


def aws_errors() -> tuple[type[Exception], ...]:
    """botocore's errors (unreachable endpoint, no region or credentials, a refused call): one line, exit 2."""
    from botocore.exceptions import BotoCoreError, ClientError

    return BotoCoreError, ClientError


def render(summary: dict[str, Any]) -> str:
    totals = summary["totals"]
    lines = [
        f"Usage for {summary['tenant']}, {summary['from']} .. {summary['to']}",
        f"requests {totals['requests']}   cache hits {totals['cache_hits']} ({totals['cache_hit_rate']:.1%})"
        f"   attempts {totals['attempts']}   errors {totals['errors']}"
        f"   cost ${totals['cost_usd']:.6f}   saved by cache ${totals['saved_usd']:.6f}",
        "",
        "By day",
        _table(["date"], [[row["date"]] for row in summary["days"]], summary["days"]),
        "",
        "By model and day",
        _table(
            ["date", "model"],
            [[row["date"], f"{row['provider']}/{row['model']}"] for row in summary["models"]],
            summary["models"],
        ),
        "",
        "Budget alerts sent",
        *_alert_lines(summary.get("alerts", [])),
    ]
    return "\n".join(lines)


def _alert_lines(alerts: list[dict[str, Any]]) -> list[str]:
    if not alerts:
        return ["  (none)"]
    return [
        f"  {a['sent_at'][:19]}  {'key ' + a['key_id'] if a['key_id'] else 'tenant'}  {a['window']} {a['period']}"
        f"  {a['threshold']:.0%} of {a['budget_usd']:.6f} USD (spent {a['spent_usd']:.6f})"
        for a in alerts
    ]


def _table(key_headers: list[str], keys: list[list[str]], rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "  (no usage)"
    headers = key_headers + [title for _, title, _ in COLUMNS]
    body = [key + [fmt.format(row[name]) for name, _, fmt in COLUMNS] for key, row in zip(keys, rows, strict=True)]
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *body, strict=True)]

    def line(cells: Sequence[str]) -> str:
        left = len(key_headers)
        return "  ".join(
            cell.ljust(width) if i < left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in body)])


def main(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.usage_cli", description=__doc__.splitlines()[0])
    parser.add_argument("--tenant", required=True, help="tenant id (the API key id, or the authorizer's tenant)")
    parser.add_argument("--from", dest="start", help="first day, YYYY-MM-DD (default: 6 days before --to)")
    parser.add_argument("--to", dest="end", help="last day, YYYY-MM-DD (default: today, UTC)")
    parser.add_argument("--table", help="usage table name")
    parser.add_argument("--json", action="store_true", help="print the raw summary as JSON")
    args = parser.parse_args(argv)
    try:
        first, last = report_range(args.start, args.end)
    except InvalidRequestError as err:
        print(f"error: {err.message}", file=sys.stderr)
        return 2
    try:
        env = target_environment(environ)
        table = find_table(args.table, env)
        summary = usage_summary(aws.dynamodb(), table, args.tenant, first, last)
    except (state.NoTarget, *aws_errors()) as exc:
        return state.exit_without_traceback(exc)
    print(json.dumps(summary, indent=2) if args.json else render(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
