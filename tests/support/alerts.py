"""Reading what the local stack's alerts topic published: an SQS queue subscribed to it in moto."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from local.stack import LocalStack
from tests.support.accounting import unique


class Published:
    """Notifications the topic delivered to our queue (SNS envelopes: ``Subject`` and ``Message``)."""

    def __init__(self, sqs: Any, queue_url: str) -> None:
        self._sqs = sqs
        self._url = queue_url
        self._seen: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def drain(self) -> list[dict[str, Any]]:
        with self._lock:
            while True:
                batch = self._sqs.receive_message(QueueUrl=self._url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
                messages = batch.get("Messages", [])
                if not messages:
                    return list(self._seen)
                for message in messages:
                    envelope = json.loads(message["Body"])
                    self._seen.append({"subject": envelope.get("Subject"), "body": json.loads(envelope["Message"])})
                    self._sqs.delete_message(QueueUrl=self._url, ReceiptHandle=message["ReceiptHandle"])

    def for_tenant(self, tenant: str, *, settle_s: float = 0.0) -> list[dict[str, Any]]:
        """Alerts about ``tenant`` (its own budget or its keys'), oldest first."""
        if settle_s:
            time.sleep(settle_s)  # anything still in flight would land by then
        return [m for m in self.drain() if m["body"].get("tenant") == tenant]


@contextmanager
def subscribed_queue(stack: LocalStack) -> Iterator[Published]:
    topic = stack.physical["AlertsTopic"]
    sqs, sns = stack.client("sqs"), stack.client("sns")
    url = sqs.create_queue(QueueName=unique("alerts"))["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    subscription = sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)["SubscriptionArn"]
    try:
        yield Published(sqs, url)
    finally:
        sns.unsubscribe(SubscriptionArn=subscription)
        sqs.delete_queue(QueueUrl=url)
