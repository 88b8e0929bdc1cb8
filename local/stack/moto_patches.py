"""Patches to moto's DynamoDB so concurrent local invocations see DynamoDB's atomicity."""

from __future__ import annotations

import contextlib
import json
import threading
from typing import Any


def _make_moto_dynamodb_atomic() -> None:
    """One DynamoDB request at a time per table in moto, as DynamoDB applies each write and transaction
    atomically.

    moto's server answers on many threads with no lock of its own: concurrent writes to one item can
    lose an update, and a transaction can fail with "dictionary changed size during iteration". Lambda's
    concurrent invocations (our pollers, the bridge, after-response threads) would see errors that real
    DynamoDB never gives. Locks are per table (a transaction takes its tables' locks in name order), so
    a cache read never queues behind moto's slow copy of the usage table in a ledger transaction.
    Process-wide and idempotent: moto runs in this process.
    """
    from moto.dynamodb.responses import DynamoHandler

    if getattr(DynamoHandler.call_action, "_gateway_atomic", False):
        return
    original = DynamoHandler.call_action
    guard = threading.Lock()
    table_locks: dict[str, threading.RLock] = {}

    def locks_for(handler: Any) -> list[threading.RLock]:
        with guard:
            return [table_locks.setdefault(name, threading.RLock()) for name in _dynamodb_tables(handler)]

    def call_action(self: Any) -> Any:
        with contextlib.ExitStack() as held:
            for lock in locks_for(self):
                held.enter_context(lock)
            return original(self)

    call_action._gateway_atomic = True  # type: ignore[attr-defined]
    DynamoHandler.call_action = call_action  # type: ignore[method-assign]
    _make_moto_transactions_item_scoped()


def _make_moto_transactions_item_scoped() -> None:
    """moto backs up every table a transaction touches (a deep copy of the whole table) to roll back a
    cancelled one: each ledger write then costs time in proportion to the usage table, and a long local
    session (or test run) slows to a crawl. Back up the transaction's own items instead, and restore
    them when it is cancelled; the table's lock (above) keeps anyone from seeing the half-done state."""
    import copy

    from moto.dynamodb import models
    from moto.dynamodb.models.table import Table

    backend_class = models.DynamoDBBackend
    original = backend_class.transact_write_items

    class _TablesNotCopied:  # moto's `copy` as its transaction code sees it: tables are not copied
        @staticmethod
        def deepcopy(value: Any, memo: Any = None) -> Any:
            return value if isinstance(value, Table) else copy.deepcopy(value, memo)

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        saved = []
        for entry in transact_items:
            try:
                _, op = next(iter(entry.items()))
                table = self.get_table(op["TableName"])
                key = op.get("Key") or {
                    name: op["Item"][name] for name in (table.hash_key_attr, table.range_key_attr) if name
                }
                current = self.get_item(op["TableName"], key)
            except Exception:
                continue  # a malformed entry: moto refuses it below, before it changes anything
            saved.append((op["TableName"], key, None if current is None else current.to_json()["Attributes"]))
        try:
            return original(self, transact_items)  # type: ignore[no-any-return]
        except Exception:
            for table_name, key, attributes in reversed(saved):
                if attributes is None:
                    self.delete_item(table_name, key)
                else:
                    self.put_item(table_name, copy.deepcopy(attributes))
            raise

    models.copy = _TablesNotCopied  # type: ignore[attr-defined]
    backend_class.transact_write_items = transact_write_items  # type: ignore[method-assign]


def _dynamodb_tables(handler: Any) -> list[str]:
    """The tables a DynamoDB request touches, sorted (the lock order)."""
    params = getattr(handler, "params", None)
    if not isinstance(params, dict):
        try:
            params = json.loads(getattr(handler, "body", None) or "{}")
        except (TypeError, ValueError):
            return []
    if not isinstance(params, dict):
        return []
    names = {params["TableName"]} if isinstance(params.get("TableName"), str) else set()
    for item in params.get("TransactItems") or []:
        for operation in item.values() if isinstance(item, dict) else []:
            if isinstance(operation, dict) and isinstance(operation.get("TableName"), str):
                names.add(operation["TableName"])
    names.update(name for name in (params.get("RequestItems") or {}) if isinstance(name, str))
    return sorted(names)
