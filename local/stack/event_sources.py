"""Event sources: S3 notifications and SQS queues delivered to the functions by pollers."""

from __future__ import annotations

import base64
import functools
import json
import secrets
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote_plus, unquote_plus

from local.cfn import S3EventSource, SqsEventSource
from local.context import REGION
from local.stack.handlers import close_thread_resources
from local.stack.settings import POLL_WAIT_S, S3_POLLERS, SQS_POLLERS, log


class EventSourcesMixin:
    """Delivers S3 notifications and SQS messages to the functions whose events declare them."""

    def _start_event_sources(self) -> None:
        by_bucket: dict[str, list[S3EventSource]] = {}
        for source in self.template.s3_events():
            by_bucket.setdefault(source.bucket_id, []).append(source)
        for bucket_id, sources in by_bucket.items():
            queue_url = self._wire_bucket_notifications(bucket_id, sources)
            for i in range(S3_POLLERS):
                self._spawn_poller(f"s3-{bucket_id}-{i}", queue_url, 10, functools.partial(self._on_s3, sources))
        for sqs_source in self.template.sqs_events():
            if sqs_source.enabled:
                url = self._queue_url(sqs_source.queue)
                on_batch = self._sqs_batch_handler(sqs_source, self._queue_arn(sqs_source.queue, url))
                for i in range(min(SQS_POLLERS, sqs_source.max_concurrency or SQS_POLLERS)):
                    self._spawn_poller(f"sqs-{sqs_source.function_id}-{i}", url, sqs_source.batch_size, on_batch)

    def _wire_bucket_notifications(self, bucket_id: str, sources: list[S3EventSource]) -> str:
        """S3 cannot call an in-process handler: notify an internal queue that a poller drains."""
        url, arn = self._make_queue(f"{self.stack_name}-s3-events-{bucket_id}", {})
        configs = []
        for source in sources:
            config: dict[str, Any] = {"Id": _config_id(source), "QueueArn": arn, "Events": list(source.events)}
            rules = [{"Name": n, "Value": v} for n, v in (("prefix", source.prefix), ("suffix", source.suffix)) if v]
            if rules:
                config["Filter"] = {"Key": {"FilterRules": rules}}
            configs.append(config)
        self._aws("s3").put_bucket_notification_configuration(
            Bucket=self.physical[bucket_id], NotificationConfiguration={"QueueConfigurations": configs}
        )
        return url

    def _on_s3(self, sources: list[S3EventSource], messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for message in messages:
            body = json.loads(message["Body"])
            for record in body.get("Records", []):  # the first message is an s3:TestEvent: no Records
                self._dispatch_s3_record(sources, _complete_s3_record(record))
        return messages  # async invocation: the event is consumed whatever the handler did

    def _dispatch_s3_record(self, sources: list[S3EventSource], record: dict[str, Any]) -> None:
        key = unquote_plus(record["s3"]["object"]["key"])  # keys arrive URL-encoded, as in AWS
        for source in sources:
            if record["s3"].get("configurationId") == _config_id(source) and source.matches(record["eventName"], key):
                try:
                    self.invoke(source.function_id, {"Records": [record]})
                except Exception:
                    log.error(
                        "%s failed on s3://%s/%s (dropped)\n%s",
                        source.function_id,
                        record["s3"]["bucket"]["name"],
                        key,
                        traceback.format_exc(),
                    )

    def _sqs_batch_handler(
        self, source: SqsEventSource, queue_arn: str
    ) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
        def on_batch(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
            event = {"Records": [_sqs_record(m, queue_arn) for m in messages]}
            try:
                result = self.invoke(source.function_id, event)
            except Exception:
                log.error(
                    "%s failed on an SQS batch of %d\n%s", source.function_id, len(messages), traceback.format_exc()
                )
                return []
            if not source.report_batch_item_failures:
                return messages
            failed = _batch_item_failures(result, {m["MessageId"] for m in messages})
            return [m for m in messages if m["MessageId"] not in failed]

        return on_batch

    def _spawn_poller(
        self, name: str, url: str, batch_size: int, on_batch: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
    ) -> None:
        thread = threading.Thread(
            target=self._poll, args=(url, batch_size, on_batch), name=f"poller-{name}", daemon=True
        )
        self._pollers.append(thread)
        thread.start()

    def _poll(
        self, url: str, batch_size: int, on_batch: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
    ) -> None:
        try:
            self._poll_until_stopped(url, batch_size, on_batch)
        finally:
            close_thread_resources()

    def _poll_until_stopped(
        self, url: str, batch_size: int, on_batch: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
    ) -> None:
        sqs = self.client("sqs")
        while not self._stop.is_set():
            try:
                messages = sqs.receive_message(
                    QueueUrl=url,
                    MaxNumberOfMessages=max(1, min(batch_size, 10)),
                    WaitTimeSeconds=POLL_WAIT_S,
                    AttributeNames=["All"],
                    MessageAttributeNames=["All"],
                ).get("Messages", [])
                if not messages:
                    continue
                done = on_batch(messages)
                _delete_messages(sqs, url, done)
                self._delay_retries(sqs, url, [m for m in messages if m not in done])
            except Exception:
                if self._stop.is_set():
                    return
                log.error("poller for %s failed\n%s", url, traceback.format_exc())
                self._stop.wait(1)

    def _delay_retries(self, sqs: Any, url: str, failed: list[dict[str, Any]]) -> None:
        if self.failed_message_visibility is None:
            return
        for message in failed:
            sqs.change_message_visibility(
                QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=self.failed_message_visibility
            )

    def _queue_url(self, queue: str) -> str:
        if queue in self.physical:
            return self.physical[queue]
        name = queue.rsplit(":", 1)[-1]  # a literal ARN
        return str(self._aws("sqs").get_queue_url(QueueName=name)["QueueUrl"])

    def _queue_arn(self, queue: str, url: str) -> str:
        if (queue, "Arn") in self._attrs:
            return self._attrs[(queue, "Arn")]
        attrs = self._aws("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        return str(attrs["Attributes"]["QueueArn"])


def _config_id(source: S3EventSource) -> str:
    return f"{source.function_id}-{source.event_name}"


def _complete_s3_record(record: dict[str, Any]) -> dict[str, Any]:
    """moto's records lack some fields that real S3 events carry; fill them in."""
    record.setdefault("userIdentity", {"principalId": "EXAMPLE"})
    record.setdefault("requestParameters", {"sourceIPAddress": "127.0.0.1"})
    record.setdefault(
        "responseElements", {"x-amz-request-id": uuid.uuid4().hex[:16].upper(), "x-amz-id-2": secrets.token_urlsafe(48)}
    )
    s3 = record["s3"]
    # moto encodes "/" too; S3 leaves it alone (spaces become "+", other specials %XX).
    s3["object"]["key"] = quote_plus(unquote_plus(s3["object"]["key"]), safe="/")
    s3["bucket"].setdefault("ownerIdentity", {"principalId": "EXAMPLE"})
    s3["object"].setdefault("sequencer", f"{time.time_ns():X}")
    return record


def _sqs_record(message: dict[str, Any], queue_arn: str) -> dict[str, Any]:
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": {
            name: _lambda_message_attribute(value) for name, value in (message.get("MessageAttributes") or {}).items()
        },
        "md5OfBody": message.get("MD5OfBody"),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": REGION,
    }
    if "MD5OfMessageAttributes" in message:
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    return record


def _lambda_message_attribute(value: dict[str, Any]) -> dict[str, Any]:
    """SQS API attribute (StringValue, BinaryValue bytes) -> Lambda event attribute (camelCase, base64)."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    out: dict[str, Any] = {
        "stringListValues": value.get("StringListValues", []),
        "binaryListValues": [b64(v) for v in value.get("BinaryListValues", [])],
        "dataType": value["DataType"],
    }
    if "StringValue" in value:
        out["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        out["binaryValue"] = b64(value["BinaryValue"])
    return out


def _batch_item_failures(result: Any, message_ids: set[str]) -> set[str]:
    """Ids the handler reported as failed; an invalid report fails the whole batch, as in Lambda."""
    if result is None:
        return set()
    if not isinstance(result, dict):
        return set(message_ids)
    failures = result.get("batchItemFailures") or []
    ids = {str(f.get("itemIdentifier") or "") for f in failures if isinstance(f, dict)}
    if len(ids) != len(failures) or not ids <= message_ids:
        return set(message_ids)
    return ids


def _delete_messages(sqs: Any, url: str, messages: list[dict[str, Any]]) -> None:
    for start in range(0, len(messages), 10):
        chunk = messages[start : start + 10]
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)]
        sqs.delete_message_batch(QueueUrl=url, Entries=entries)
