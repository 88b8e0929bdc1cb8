"""Cache backend on the cache table (``pk`` only, TTL attribute ``expires_at``), with S3 for large entries.

Item: ``{pk: <key>, v: <entry bytes>, expires_at: <epoch seconds>}``. DynamoDB deletes expired items
lazily (up to days later) and moto never does, so a read checks ``expires_at`` itself. A hit is one
eventually consistent GetItem (0.5 RCU per 4 KB); a store is one PutItem.

An entry too large for an item (answers are compressed first, so only incompressible ones) goes to
the documents bucket under ``cache/`` when one is configured, and the item holds the object key
instead: ``{pk, s3: <object key>, expires_at}``. The object is written first, so an item never points
at nothing; the item's ``expires_at`` still decides expiry, and a lifecycle rule on ``cache/`` removes
objects after the longest TTL. A hit on such an entry costs a GetItem and a GetObject.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from llm_gateway import aws

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client

DYNAMODB_ITEM_LIMIT = 400 * 1024
ITEM_OVERHEAD_BYTES = 200  # key, attribute names, the expiry number
S3_PREFIX = "cache/"
MAX_OVERFLOW_BYTES = 32 * 1024 * 1024  # far above any answer; bounds what one store may upload


class DynamoDBCacheBackend:
    name = "dynamodb"

    def __init__(
        self,
        table: str,
        *,
        overflow_bucket: str | None = None,
        client: Callable[[], DynamoDBClient] | None = None,
        s3_client: Callable[[], S3Client] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.table = table
        self.overflow_bucket = overflow_bucket or None
        # Fail fast: one attempt, short timeouts. The cache is an optimisation, never worth waiting for.
        self._client = client or (lambda: aws.dynamodb(aws.FAST))
        self._s3 = s3_client or (lambda: aws.s3(aws.FAST))
        self._clock = clock
        self.max_value_bytes = MAX_OVERFLOW_BYTES if self.overflow_bucket else DYNAMODB_ITEM_LIMIT - ITEM_OVERHEAD_BYTES

    async def get(self, key: str) -> bytes | None:
        response = await aws.in_thread(
            self._client().get_item,
            TableName=self.table,
            Key={"pk": {"S": key}},
            ProjectionExpression="v, s3, expires_at",
        )
        item = response.get("Item")
        if not item:
            return None
        expires_at = item.get("expires_at", {}).get("N")
        if expires_at is not None and float(expires_at) <= self._clock():
            return None
        if "v" in item:
            return bytes(item["v"]["B"])
        if "s3" in item and self.overflow_bucket:
            return await aws.in_thread(self._read_object, item["s3"]["S"])
        return None

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        expires_at = {"N": str(int(self._clock()) + int(ttl_seconds))}
        if len(value) <= DYNAMODB_ITEM_LIMIT - ITEM_OVERHEAD_BYTES:
            item = {"pk": {"S": key}, "v": {"B": value}, "expires_at": expires_at}
        elif self.overflow_bucket:
            object_key = S3_PREFIX + key.replace(":", "/")  # the key is an opaque hash: nothing to leak
            await aws.in_thread(self._s3().put_object, Bucket=self.overflow_bucket, Key=object_key, Body=value)
            item = {"pk": {"S": key}, "s3": {"S": object_key}, "expires_at": expires_at}
        else:
            raise ValueError(f"a {len(value)}-byte entry does not fit a DynamoDB item and no bucket is configured")
        await aws.in_thread(self._client().put_item, TableName=self.table, Item=item)

    def _read_object(self, object_key: str) -> bytes | None:
        try:
            body = self._s3().get_object(Bucket=self.overflow_bucket or "", Key=object_key)["Body"]
        except Exception as exc:
            if aws.error_code(exc) in ("NoSuchKey", "404"):
                return None  # removed by the lifecycle rule: a miss
            raise
        try:
            return bytes(body.read())
        finally:
            body.close()
