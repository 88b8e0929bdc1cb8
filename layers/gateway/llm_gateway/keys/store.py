"""The keys table (``KEYS_TABLE``; partition key ``pk``, DynamoDB client-level API).

Items:

* ``KEY#<sha256 of the secret>``: one per secret. ``key_hash`` (the same hash, compared in constant
  time after the read), ``key_id``, ``generation``, ``tenant``, ``name``, ``created_at``,
  ``key_expires_at``, ``disabled``, ``revoked_at``, ``allowed`` (patterns), ``rpm``, ``tpm``,
  ``budget_usd`` + ``budget_window``, ``metadata``, ``guardrails`` + ``guardrails_override``. The secret
  itself is never stored. The index ``KeyIdIndex`` (partition key ``key_id``) finds a key's records for
  the admin operations; it holds key records only (rate counters have no ``key_id``).
* ``RATE#<key_id>#<window start>``: the rate-limit counters of one fixed minute (see limits.py), with
  ``expires_at`` for DynamoDB's TTL. Keys use ``key_expires_at`` so that TTL never deletes a key record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from llm_gateway import aws
from llm_gateway.keys.policy import KeyBudget, KeyPolicy, KeyRecord

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

KEY_ID_INDEX = "KeyIdIndex"


def key_pk(key_hash: str) -> dict[str, Any]:
    return {"pk": {"S": f"KEY#{key_hash}"}}


class KeyStore:
    def __init__(self, table: str, *, client: Callable[[], DynamoDBClient] | None = None) -> None:
        self.table = table
        # The read on a cache miss waits in front of the request: fail fast, retry once.
        self._client = client or (lambda: aws.dynamodb(aws.KEYS))

    def client(self) -> DynamoDBClient:
        return self._client()

    def by_hash(self, key_hash: str) -> KeyRecord | None:
        item = self._client().get_item(TableName=self.table, Key=key_pk(key_hash)).get("Item")
        return record_from_item(item) if item else None

    def put_new(self, record: KeyRecord) -> None:
        """Store a new record; refuses to overwrite (a hash collision is not going to happen, a bug might)."""
        self._client().put_item(
            TableName=self.table, Item=item_from_record(record), ConditionExpression="attribute_not_exists(pk)"
        )

    def records_of(self, key_id: str) -> list[KeyRecord]:
        """Every record (every generation) of a key, oldest first."""
        found: list[KeyRecord] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": KEY_ID_INDEX,
            "KeyConditionExpression": "key_id = :id",
            "ExpressionAttributeValues": {":id": {"S": key_id}},
        }
        while True:
            page = self._client().query(**kwargs)
            found += [record_from_item(item) for item in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                return sorted(found, key=lambda r: r.generation)
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def all_records(self, tenant: str | None = None) -> Iterator[KeyRecord]:
        """Every key record (a Scan: for administration only, never on a request's path)."""
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "FilterExpression": "begins_with(pk, :prefix)" + (" AND tenant = :tenant" if tenant else ""),
            "ExpressionAttributeValues": {":prefix": {"S": "KEY#"}, **({":tenant": {"S": tenant}} if tenant else {})},
        }
        while True:
            page = self._client().scan(**kwargs)
            for item in page.get("Items", []):
                yield record_from_item(item)
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def set_end(self, record: KeyRecord, *, revoked_at: float | None = None, expires_at: float | None = None) -> None:
        """Revoke a record (``revoked_at``) or bring its expiry forward (``expires_at``), if it exists."""
        sets, values = [], {}
        if revoked_at is not None:
            sets.append("revoked_at = :revoked")
            values[":revoked"] = _n(revoked_at)
        if expires_at is not None:
            sets.append("key_expires_at = :expires")
            values[":expires"] = _n(expires_at)
        if not sets:
            return
        self._client().update_item(
            TableName=self.table,
            Key=key_pk(record.key_hash),
            UpdateExpression="SET " + ", ".join(sets),
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues=values,
        )


def item_from_record(record: KeyRecord) -> dict[str, Any]:
    policy = record.policy
    item: dict[str, Any] = {
        **key_pk(record.key_hash),
        "key_hash": {"S": record.key_hash},
        "key_id": {"S": record.key_id},
        "generation": {"N": str(record.generation)},
        "tenant": {"S": policy.tenant},
        "name": {"S": policy.name},
        "created_at": _n(policy.created_at),
        "disabled": {"BOOL": policy.disabled},
    }
    if policy.expires_at is not None:
        item["key_expires_at"] = _n(policy.expires_at)
    if policy.revoked_at is not None:
        item["revoked_at"] = _n(policy.revoked_at)
    if policy.allowed:
        item["allowed"] = {"L": [{"S": pattern} for pattern in policy.allowed]}
    if policy.requests_per_minute is not None:
        item["rpm"] = {"N": str(policy.requests_per_minute)}
    if policy.tokens_per_minute is not None:
        item["tpm"] = {"N": str(policy.tokens_per_minute)}
    if policy.budget is not None:
        item["budget_usd"] = {"N": str(policy.budget.limit_usd)}
        item["budget_window"] = {"S": policy.budget.window}
    if policy.guardrails:
        item["guardrails"] = {"S": policy.guardrails}
    if policy.guardrails_override:
        item["guardrails_override"] = {"S": policy.guardrails_override}
    if policy.metadata:
        item["metadata"] = {"M": {k: {"S": v} for k, v in policy.metadata.items()}}
    return item


def record_from_item(item: dict[str, Any]) -> KeyRecord:
    def number(name: str) -> float | None:
        return float(item[name]["N"]) if name in item else None

    def integer(name: str) -> int | None:
        return int(item[name]["N"]) if name in item else None

    budget = (
        KeyBudget(Decimal(item["budget_usd"]["N"]), item.get("budget_window", {}).get("S", "day"))
        if "budget_usd" in item
        else None
    )
    policy = KeyPolicy(
        tenant=item["tenant"]["S"],
        name=item.get("name", {}).get("S", ""),
        created_at=number("created_at") or 0.0,
        expires_at=number("key_expires_at"),
        disabled=bool(item.get("disabled", {}).get("BOOL", False)),
        revoked_at=number("revoked_at"),
        allowed=tuple(entry["S"] for entry in item.get("allowed", {}).get("L", [])),
        requests_per_minute=integer("rpm"),
        tokens_per_minute=integer("tpm"),
        budget=budget,
        metadata={k: v["S"] for k, v in item.get("metadata", {}).get("M", {}).items()},
        guardrails=item.get("guardrails", {}).get("S"),
        guardrails_override=item.get("guardrails_override", {}).get("S"),
    )
    return KeyRecord(
        key_hash=item["key_hash"]["S"],
        key_id=item["key_id"]["S"],
        policy=policy,
        generation=int(item.get("generation", {}).get("N", "1")),
    )


def _n(value: float) -> dict[str, str]:
    return {"N": format(Decimal(repr(round(value, 3))), "f")}
