"""Running a job's operation at most once per job id, under Powertools idempotency."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from llm_gateway import aws

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer


class JobInProgress(Exception):
    """Another delivery holds the job's idempotency lock: it is running the job right now."""


class NoAttemptLeft(Exception):
    """Raised instead of running an operation when a delivery may only collect a stored outcome."""


def run_idempotent(
    fn: Callable[[dict[str, Any]], dict[str, Any]],
    data: dict[str, Any],
    persistence: BasePersistenceLayer,
    key_path: str,
    key_prefix: str,
    ttl_s: int,
    lambda_context: Any,
) -> dict[str, Any]:
    """``fn(data)`` under Powertools idempotency, keyed by ``key_path`` in ``data`` (all of it when empty).

    A config per call: it carries this invocation's Lambda context, so an in-progress lock left by a
    crashed invocation expires when that invocation would have timed out.
    """
    from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
    from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError

    config = IdempotencyConfig(
        event_key_jmespath=key_path, raise_on_no_idempotency_key=True, expires_after_seconds=ttl_s
    )
    if lambda_context is not None and hasattr(lambda_context, "get_remaining_time_in_millis"):
        config.register_lambda_context(lambda_context)
    argument = next(iter(inspect.signature(fn).parameters))
    wrapped = idempotent_function(
        fn, data_keyword_argument=argument, persistence_store=persistence, config=config, key_prefix=key_prefix
    )
    try:
        result: dict[str, Any] = wrapped(**{argument: data})
    except IdempotencyAlreadyInProgressError:
        raise JobInProgress from None
    return result


def persistence_layer(table: str) -> BasePersistenceLayer:
    """Jobs' idempotency records (Powertools configures a persistence layer once, for one key path)."""
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

    return DynamoDBPersistenceLayer(
        table_name=table, key_attr="id", expiry_attr="expires_at", boto3_client=aws.dynamodb(aws.DURABLE)
    )
