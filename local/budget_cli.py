"""Set or show a tenant's budget: ``python -m local.budget_cli --tenant T [--limit USD --window day|month]``.

``make budget TENANT=... LIMIT=... WINDOW=...``; the target is found as for ``make usage`` (the running
``make run`` when no AWS target is set). Writes the ``BUDGET#<tenant>`` / ``CONFIG`` item of the
usage table (see llm_gateway/accounting/budgets.py); running functions pick a change up within a minute. Without
``--limit`` it shows the budget and the current window's committed and spent amounts.
"""

from __future__ import annotations

import argparse
import json
import sys

from llm_gateway.accounting.budgets import WINDOWS, DynamoDBBudgetGuard
from local import state
from local.usage_cli import aws_errors, find_table, target_environment


def main(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.budget_cli", description=__doc__.splitlines()[0])
    parser.add_argument("--tenant", required=True, help="tenant id (the API key id, or the authorizer's tenant)")
    parser.add_argument("--limit", type=float, help="budget in USD per window; omit to show the current budget")
    parser.add_argument("--window", choices=WINDOWS, default="day")
    parser.add_argument("--table", help="usage table name")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 0:
        parser.error("--limit must be >= 0")
    try:
        guard = DynamoDBBudgetGuard(find_table(args.table, target_environment(environ)))
        if args.limit is not None:
            guard.set_policy(args.tenant, args.limit, args.window)
        status = guard.status(args.tenant)
    except (state.NoTarget, *aws_errors()) as exc:
        return state.exit_without_traceback(exc)
    print(json.dumps(status, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
