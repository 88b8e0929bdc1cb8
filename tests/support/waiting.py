"""Polling helpers for the integration tests that wait on asynchronous work (queues, jobs)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

QUEUE_DEPTH_ATTRIBUTES = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
]


def wait_for(check: Callable[[], T], *, timeout: float = 30, what: str = "condition") -> T:
    """``check()``'s first truthy value, polled every 0.1 s; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what}")
        time.sleep(0.1)


def queue_depth(sqs: Any, url: str) -> int:
    """Messages in the queue: visible, in flight and delayed."""
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=QUEUE_DEPTH_ATTRIBUTES)["Attributes"]
    return sum(int(attrs.get(name, 0)) for name in QUEUE_DEPTH_ATTRIBUTES)
