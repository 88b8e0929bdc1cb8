"""Fault injection into the gateway's own boto3 clients (over the moto server): chosen operations of a
service time out, lose their connection, or are throttled / fail with a 5xx, as the real services do.

A ``before-send`` hook runs where botocore would send the HTTP request, so botocore's own retries,
timeouts and error parsing all happen as they would against AWS; the other operations reach moto.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

from llm_gateway import aws

# fault -> (HTTP status, AWS error code) for the answered kinds; the others raise in the transport.
ANSWERED = {
    "throttle": (400, "ProvisionedThroughputExceededException"),
    "throttling": (400, "ThrottlingException"),
    "request_limit": (400, "RequestLimitExceeded"),
    "internal": (500, "InternalServerError"),
    "unavailable": (503, "ServiceUnavailable"),
    "slowdown": (503, "SlowDown"),
}
RAISED = ("read_timeout", "connect_timeout", "endpoint")
FAULTS = (*RAISED, *ANSWERED)


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


def _answer(service: str, url: str, status: int, code: str) -> Any:
    from botocore.awsrequest import AWSResponse

    if service == "s3":
        body = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
        headers = {"content-type": "application/xml"}
    else:
        body = json.dumps({"__type": f"com.amazonaws.{service}#{code}", "message": "injected"}).encode()
        headers = {"content-type": "application/x-amz-json-1.0", "x-amzn-query-error": f"{code};Sender"}
    return AWSResponse(url, status, headers, _Raw(body))


class Injected:
    """What was injected: calls failed, per operation."""

    def __init__(self) -> None:
        self.failed: Counter[str] = Counter()
        self.enabled = True
        self._lock = threading.Lock()

    def count(self, operation: str) -> None:
        with self._lock:
            self.failed[operation] += 1


@contextlib.contextmanager
def aws_fault(service: str, operations: set[str], fault: str) -> Iterator[Injected]:
    """``operations`` of ``service`` (``"dynamodb"``, ``"s3"``, ``"sqs"``) fail with ``fault`` on every
    client the gateway has or creates (all call profiles) until the block ends or ``enabled`` is False."""
    from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError

    assert fault in FAULTS, fault
    injected = Injected()

    def hook(request: Any, event_name: str = "", **_: Any) -> Any:
        operation = event_name.rsplit(".", 1)[-1]
        if not injected.enabled or operation not in operations:
            return None
        injected.count(operation)
        if fault == "read_timeout":
            raise ReadTimeoutError(endpoint_url=request.url)
        if fault == "connect_timeout":
            raise ConnectTimeoutError(endpoint_url=request.url)
        if fault == "endpoint":
            raise EndpointConnectionError(endpoint_url=request.url)
        status, code = ANSWERED[fault]
        return _answer(service, request.url, status, code)

    hook_id = f"test-fault-{service}-{id(injected)}"
    original = aws._new_client

    def new_client(name: str, profile: aws.CallProfile) -> Any:
        client = original(name, profile)
        if name == service:
            client.meta.events.register(f"before-send.{service}", hook, unique_id=hook_id)
        return client

    aws._new_client = new_client  # type: ignore[assignment]
    aws.reset_clients()
    try:
        yield injected
    finally:
        aws._new_client = original  # type: ignore[assignment]
        aws.reset_clients()
