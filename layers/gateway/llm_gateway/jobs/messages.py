"""Retry-queue messages: their shapes, parsing, what a handler does with one (hand it back after a
backoff, or set it aside as poison), and the backoff itself."""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from llm_gateway import aws
from llm_gateway.config import Settings
from llm_gateway.errors import InvalidRequestError
from llm_gateway.jobs.model import derived_job_id
from llm_gateway.routing.retry import delay_for, equal_jitter

log = logging.getLogger("llm_gateway.jobs.worker")

MAX_VISIBILITY_S = 43_200  # SQS's limit on a visibility timeout
MAX_TASK_TOKEN_CHARS = 2_048
# A long job (a big summary) that ran out of time but moved forward (its finished parts are cached)
# goes on in a fresh message: progress spends no delivery. Bounded, so nothing loops for ever.
MAX_CONTINUATIONS = 20

Outcome = Literal["succeeded", "failed", "duplicate", "poison", "usage", "requeued", "continued", "dead_lettered"]
_TOKEN_IN_TEXT = re.compile(r'"task_token"\s*:\s*"([^"\\]{1,2048})"')


class RetryLater(Exception):
    """Hand the message back: visible again after ``delay_s`` (None: the queue's visibility timeout).
    ``error``: the error record to fail the job with if this was its last allowed delivery."""

    def __init__(self, reason: str, *, delay_s: int | None, error: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.delay_s = delay_s
        self.error = error


class PoisonMessage(Exception):
    """A message that can never succeed: set aside with its reason, never retried. ``code`` names the
    error a task token found in it is failed with."""

    def __init__(self, reason: str, *, code: str = InvalidRequestError.code, job_id: str | None = None) -> None:
        super().__init__(reason)
        self.code = code
        self.job_id = job_id


@dataclass(frozen=True)
class Delivery:
    message_id: str
    body: str
    receipt_handle: str
    receive_count: int


class JobMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    kind: Literal["job"] = "job"
    job_id: str | None = Field(default=None, pattern=r"^job_[0-9a-f]{32}$")
    tenant: str = Field(min_length=1, max_length=256)
    operation: str | None = Field(default=None, min_length=1, max_length=64)
    input: dict[str, Any] | None = None
    task_token: str | None = Field(default=None, min_length=1, max_length=MAX_TASK_TOKEN_CHARS)
    continuation: int = Field(default=0, ge=0, le=MAX_CONTINUATIONS)  # fresh messages of a job in progress
    quota_waits: int = Field(default=0, ge=0, le=1000)  # fresh messages waiting for provider quota (quota_wait.py)

    @model_validator(mode="after")
    def _names_a_job(self) -> JobMessage:
        if self.job_id is None and (self.operation is None or self.input is None):
            raise ValueError("a job message needs job_id, or operation and input to submit a new job")
        return self


def parse_message(body: str) -> JobMessage | dict[str, Any]:
    """A job message, or the raw body of a usage message; PoisonMessage for anything else."""
    try:
        data = json.loads(body)
    except (TypeError, ValueError):
        raise PoisonMessage("the message body is not JSON") from None
    if not isinstance(data, dict):
        raise PoisonMessage("the message body is not a JSON object")
    kind = data.get("kind", "job")
    if kind == "usage":
        return data
    if kind != "job":
        raise PoisonMessage(f"unknown message kind {str(kind)[:32]!r}")
    try:
        return JobMessage.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise PoisonMessage(f"invalid job message: {where}: {first['msg']}") from None


def task_token_in(body: str) -> str | None:
    """The Step Functions task token a message carries, even when the message is otherwise unusable."""
    try:
        data = json.loads(body)
    except (TypeError, ValueError):
        match = _TOKEN_IN_TEXT.search(body) if isinstance(body, str) else None
        return match.group(1) if match else None
    token = data.get("task_token") if isinstance(data, dict) else None
    return token if isinstance(token, str) and 0 < len(token) <= MAX_TASK_TOKEN_CHARS else None


def backoff_s(receive_count: int, *, base_s: float, cap_s: float, retry_after_s: float | None) -> int:
    """Exponential backoff with equal jitter (a recovering herd spreads out), never under Retry-After."""
    delay = delay_for(equal_jitter(base_s, cap_s), max(receive_count, 1))
    if retry_after_s:
        delay = max(delay, min(retry_after_s, cap_s))
    return int(min(math.ceil(delay), MAX_VISIBILITY_S))


def delivery_backoff_s(delivery: Delivery, retry_after: float | None, *, config: Settings) -> int:
    return backoff_s(
        delivery.receive_count,
        base_s=config.job_backoff_base_s,
        cap_s=config.job_backoff_max_s,
        retry_after_s=retry_after,
    )


def message_job_id(message: JobMessage, delivery: Delivery) -> str:
    return message.job_id or derived_job_id(message.task_token or delivery.message_id)


def hand_back(queue_arn: str, receipt_handle: str, delay_s: int, *, retry_queue_url: str | None) -> None:
    """Make a received message visible again after ``delay_s`` (its backoff). If that fails it still comes
    back, after the queue's own visibility timeout."""
    try:
        aws.sqs().change_message_visibility(
            QueueUrl=queue_url_for(queue_arn, retry_queue_url),
            ReceiptHandle=receipt_handle,
            VisibilityTimeout=max(0, min(int(delay_s), MAX_VISIBILITY_S)),
        )
    except Exception as exc:
        log.warning("could not set the message's backoff", extra={"error": aws.error_code(exc) or type(exc).__name__})


def queue_url_for(queue_arn: str, configured: str | None) -> str:
    """The URL of the queue an SQS event came from (the configured retry queue, else looked up once)."""
    _, _, _, _, account, name = queue_arn.split(":", 5)
    if configured and configured.rstrip("/").rsplit("/", 1)[-1] == name:
        return configured
    if (account, name) not in _queue_urls:
        url = aws.sqs().get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
        _queue_urls[(account, name)] = url
    return _queue_urls[(account, name)]


_queue_urls: dict[tuple[str, str], str] = {}
