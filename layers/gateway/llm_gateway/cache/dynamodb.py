"""Cache backend on the cache table (``pk`` only, TTL attribute ``expires_at``).

Item: ``{pk: <key>, v: <entry bytes>, expires_at: <epoch seconds>}``. DynamoDB deletes expired items
lazily (up to days later) and moto never does, so a read checks ``expires_at`` itself. A hit is one
eventually consistent GetItem (0.5 RCU per 4 KB); a store is one PutItem.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .. import aws

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

DYNAMODB_ITEM_LIMIT = 400 * 1024
ITEM_OVERHEAD_BYTES = 200  # key, attribute names, the expiry number


class DynamoDBCacheBackend:
    name = "dynamodb"
    max_value_bytes = DYNAMODB_ITEM_LIMIT - ITEM_OVERHEAD_BYTES

    def __init__(
        self,
        table: str,
        *,
        client: Callable[[], DynamoDBClient] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.table = table
        # Fail fast: one attempt, short timeouts. The cache is an optimisation, never worth waiting for.
        self._client = client or (lambda: aws.dynamodb(aws.FAST))
        self._clock = clock

    async def get(self, key: str) -> bytes | None:
        response = await aws.in_thread(
            self._client().get_item,
            TableName=self.table,
            Key={"pk": {"S": key}},
            ProjectionExpression="v, expires_at",
        )
        item = response.get("Item")
        if not item or "v" not in item:
            return None
        expires_at = item.get("expires_at", {}).get("N")
        if expires_at is not None and float(expires_at) <= self._clock():
            return None
        return bytes(item["v"]["B"])

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        await aws.in_thread(
            self._client().put_item,
            TableName=self.table,
            Item={
                "pk": {"S": key},
                "v": {"B": value},
                "expires_at": {"N": str(int(self._clock()) + int(ttl_seconds))},
            },
        )
