"""Manage gateway keys: ``python -m local.keys_cli {create,list,show,revoke,rotate}`` (``make keys``).

Works on the keys table with your own AWS credentials (IAM decides who may), through the same code as
the admin API (llm_gateway/keys/admin.py). The table is found from ``--stack-name`` (the stack's
``KeysTableName`` output; key budgets go to ``UsageTableName``); else, with an AWS target in the
environment (``AWS_PROFILE``, ``AWS_REGION``, ``AWS_ENDPOINT_URL``...), from ``--table`` or
``$KEYS_TABLE``; else from the running ``make run`` (``.local/stack.json``, see local/state.py).

A new key's secret is printed once, on stdout, and kept nowhere: copy it then.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from llm_gateway.errors import GatewayError
from llm_gateway.keys.admin import KeyAdmin, KeySpec, key_view
from llm_gateway.keys.store import KeyStore
from local import state
from local.usage_cli import aws_errors


def tables(args: argparse.Namespace, environ: dict[str, str]) -> tuple[str, str | None]:
    """(keys table, usage table or None). Raises state.NoTarget when there is no way to find them."""
    if args.stack_name:
        import boto3

        stack = boto3.client("cloudformation").describe_stacks(StackName=args.stack_name)["Stacks"][0]
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        if "KeysTableName" not in outputs:
            raise state.NoTarget(f"stack {args.stack_name} has no KeysTableName output (deploy this version first)")
        return outputs["KeysTableName"], outputs.get("UsageTableName")
    if state.aws_target_given(environ):
        table = args.table or environ.get("KEYS_TABLE")
        if not table:
            raise state.NoTarget("give --stack-name, --table or KEYS_TABLE for this AWS target")
        return table, environ.get("USAGE_TABLE")
    local = state.use_local_stack_if_no_target(environ)  # NoTarget when nothing runs
    if local is None:  # cannot happen: no AWS target was given
        raise state.NoTarget(state.NOT_RUNNING)
    os.environ.update(local.aws_environment())
    if "KeysTable" not in local.tables:
        raise state.NoTarget("the running local stack has no KeysTable (restart `make run` on this version)")
    if args.table:
        return args.table, local.tables.get("UsageTable")
    return local.tables["KeysTable"], local.tables.get("UsageTable")


def admin_for(keys_table: str, usage_table: str | None) -> KeyAdmin:
    budgets = None
    if usage_table:
        from llm_gateway.accounting.budgets import DynamoDBBudgetGuard

        budgets = DynamoDBBudgetGuard(usage_table)
    return KeyAdmin(KeyStore(keys_table), budgets=budgets)


def spec_from(args: argparse.Namespace) -> KeySpec:
    body: dict[str, Any] = {"tenant": args.tenant, "name": args.name or ""}
    if args.models:
        body["allowed_models"] = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.rpm is not None:
        body["requests_per_minute"] = args.rpm
    if args.tpm is not None:
        body["tokens_per_minute"] = args.tpm
    if args.budget is not None:
        body["budget"] = {"limit_usd": args.budget, "window": args.budget_window}
    if args.expires_in is not None:
        body["expires_in_seconds"] = args.expires_in
    if args.expires_at:
        body["expires_at"] = args.expires_at
    if args.meta:
        body["metadata"] = dict(item.split("=", 1) for item in args.meta)
    if args.guardrails:
        body["guardrails"] = args.guardrails
    if args.guardrails_override:
        body["guardrails_override"] = args.guardrails_override
    from llm_gateway.http.framing import validate

    return validate(KeySpec, body)


def run(args: argparse.Namespace, admin: KeyAdmin) -> Any:
    if args.command == "create":
        secret, record = admin.create(spec_from(args))
        return {**key_view(record), "key": secret}
    if args.command == "list":
        return {"object": "list", "data": [key_view(r) for r in admin.list_keys(args.tenant)]}
    if args.command == "show":
        return key_view(admin.show(args.key_id))
    if args.command == "revoke":
        return key_view(admin.revoke(args.key_id))
    secret, record = admin.rotate(args.key_id, grace_seconds=args.grace)
    return {**key_view(record), "key": secret}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m local.keys_cli", description=__doc__.splitlines()[0])
    top.add_argument("--stack-name", help="a deployed stack: its KeysTableName / UsageTableName outputs")
    top.add_argument("--table", help="the keys table (default $KEYS_TABLE, else the running make run's)")
    commands = top.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="a new key; its secret is printed once")
    create.add_argument("--tenant", required=True)
    create.add_argument("--name", default="")
    create.add_argument("--models", help="allowed models or tiers, comma-separated globs (gpt-4o*,tier:fast)")
    create.add_argument("--rpm", type=int, help="requests per minute")
    create.add_argument("--tpm", type=int, help="tokens per minute")
    create.add_argument("--budget", type=float, help="the key's own budget in USD per window")
    create.add_argument("--budget-window", choices=("day", "month"), default="day")
    create.add_argument("--expires-in", type=int, help="seconds from now")
    create.add_argument("--expires-at", help="ISO 8601 with a zone, e.g. 2027-01-01T00:00:00Z")
    create.add_argument("--meta", action="append", help="metadata key=value (repeatable)")
    create.add_argument("--guardrails", help="the key's guardrail settings, e.g. 'pii=redact,injection=block'")
    create.add_argument("--guardrails-override", choices=("any", "tighten", "none"), help="what requests may change")
    listing = commands.add_parser("list", help="keys (never their secrets)")
    listing.add_argument("--tenant")
    for name, text in (("show", "one key"), ("revoke", "revoke every secret of a key")):
        commands.add_parser(name, help=text).add_argument("key_id")
    rotate = commands.add_parser("rotate", help="a new secret for the key (same id and policy)")
    rotate.add_argument("key_id")
    rotate.add_argument("--grace", type=int, default=0, help="seconds the old secret keeps working")
    return top


def main(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> int:
    args = parser().parse_args(argv)
    env = dict(os.environ if environ is None else environ)
    try:
        admin = admin_for(*tables(args, env))
        answer = run(args, admin)
    except GatewayError as err:
        print(f"error: {err.code}: {err.message}", file=sys.stderr)
        return 2
    except (state.NoTarget, *aws_errors()) as exc:
        return state.exit_without_traceback(exc)
    if "key" in answer:
        print("The key is shown once; it cannot be retrieved later.", file=sys.stderr)
    print(json.dumps(answer, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
