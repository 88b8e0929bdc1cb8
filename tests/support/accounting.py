"""Helpers for the cache / usage / budget / breaker integration tests (over the session's LocalStack)."""

from __future__ import annotations

import contextlib
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from llm_gateway import aws
from llm_gateway.config import Settings
from llm_gateway.gateway import Gateway
from llm_gateway.interfaces import RequestContext
from llm_gateway.models import CompletionRequest, CompletionResult
from llm_gateway.routing.deadline import Deadline
from llm_gateway.routing.retry import RetryPolicy
from llm_gateway.runtime import run_sync
from llm_gateway.wiring import build_gateway
from local.stack import LocalStack

MESSAGES = [{"role": "user", "content": "Name a prime number."}]


def unique(prefix: str = "tenant") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def settings_from_env(**overrides: Any) -> Settings:
    """The functions' settings as the local stack set them (tables, queue, simulator URLs), adjusted."""
    return Settings.from_env().model_copy(update=overrides)


def gateway_from_env(attempts: int = 1, **overrides: Any) -> Gateway:
    retry = RetryPolicy(max_attempts=attempts, base_delay_s=0.01, max_delay_s=0.02)
    return build_gateway(settings_from_env(**overrides), retry=retry)


def complete(gateway: Gateway, tenant: str, request_id: str | None = None, **body: Any) -> CompletionResult:
    body.setdefault("messages", MESSAGES)
    ctx = RequestContext(tenant=tenant, request_id=request_id or unique("req"), deadline=Deadline(20))
    return run_sync(gateway.complete(CompletionRequest.model_validate(body), ctx))


@contextlib.contextmanager
def dynamodb_calls(profile: aws.CallProfile) -> Iterator[Counter[str]]:
    """Count the DynamoDB operations made through the gateway's shared client for ``profile``."""
    calls: Counter[str] = Counter()

    def count(model: Any, params: Any, **_: Any) -> None:
        calls[model.name] += 1

    events = aws.dynamodb(profile).meta.events
    events.register("before-call.dynamodb", count, unique_id="test-count-calls")
    try:
        yield calls
    finally:
        events.unregister("before-call.dynamodb", unique_id="test-count-calls")


def private_table_like(stack: LocalStack, logical_id: str) -> str:
    """A fresh table with the template's key schema, so shared state (circuits) cannot leak into other tests."""
    props = stack.template.properties(logical_id)
    name = unique(logical_id)
    stack.client("dynamodb").create_table(
        TableName=name,
        KeySchema=props["KeySchema"],
        AttributeDefinitions=props["AttributeDefinitions"],
        BillingMode="PAY_PER_REQUEST",
    )
    return name


@contextlib.contextmanager
def api_key_for(stack: LocalStack, tenant: str) -> Iterator[str]:
    """A fresh gateway key for ``tenant`` in the local keys table (the functions' edge verifies it)."""
    key = unique("key")
    stack.add_api_key(key, tenant)
    try:
        yield key
    finally:
        stack.api_keys.pop(key, None)


def ledger_items(stack: LocalStack, tenant: str) -> list[dict[str, Any]]:
    """Today's usage ledger records of ``tenant`` (one per attempt or cache hit), as DynamoDB items."""
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    items: list[dict[str, Any]] = stack.client("dynamodb").query(
        TableName=stack.physical["UsageTable"],
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"USAGE#{tenant}#{day}"}},
    )["Items"]
    return items
