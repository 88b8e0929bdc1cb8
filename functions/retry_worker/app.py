"""Retry worker: drains the retry queue (async jobs, deferred requests, usage writes to replay).

Thin on purpose: ``llm_gateway.jobs.worker`` decides what each message means. Powertools batch processing
reports failed messages one by one (``ReportBatchItemFailures``), so a job that must wait never makes
the batch's finished jobs run again. A message handed back is made visible again after its backoff
(ChangeMessageVisibility). After JOB_MAX_RECEIVES deliveries the worker fails the job and moves the
message to the dead-letter queue itself; the queue's redrive policy (maxReceiveCount = JOB_MAX_RECEIVES
+ 1) catches a message whose last delivery died with the invocation (see ``llm_gateway.jobs.worker``).

BatchSize is 1 in template.yaml: each job gets the whole invocation (JOB_MAX_RUNTIME, 165 of its 180 s).
With larger batches, a record after the first starts only if JOB_MAX_RUNTIME still fits; otherwise its
job is queued afresh, untouched.
"""

from __future__ import annotations

import functools
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from llm_gateway.http.answers import share_log_handler
from llm_gateway.jobs.messages import Delivery, RetryLater, hand_back
from llm_gateway.jobs.worker import Worker, worker_for
from llm_gateway.observability.tracing import trace_handler
from llm_gateway.wiring import Services, services

logger = Logger()
metrics = Metrics()
share_log_handler(logger)  # the layer's log lines carry the request id and Lambda context too

OUTCOME_METRICS = {
    "succeeded": "JobsSucceeded",
    "failed": "JobsFailed",
    "duplicate": "DuplicateDeliveries",
    "poison": "PoisonMessages",
    "usage": "UsageRecordsReplayed",
    "requeued": "JobsRequeued",
    "continued": "JobsContinued",
    "dead_lettered": "MessagesDeadLettered",
}


_workers: dict[int, tuple[Services, Worker]] = {}


def _worker() -> Worker:
    """One worker per process, rebuilt when the services are (tests reset them between stacks)."""
    current = services()
    kept = _workers.get(0)
    if kept is None or kept[0] is not current:
        kept = (current, worker_for(current))
        _workers[0] = kept
    return kept[1]


def record_handler(
    record: SQSRecord, lambda_context: LambdaContext | None = None, *, first_message_id: str | None = None
) -> str:
    delivery = Delivery(
        message_id=record.message_id,
        body=record.body,
        receipt_handle=record.receipt_handle,
        receive_count=int(record.attributes.approximate_receive_count or 1),
    )
    try:
        first = first_message_id is None or first_message_id == record.message_id
        outcome = _worker().handle(delivery, lambda_context, first_in_batch=first)
    except RetryLater as later:
        logger.info("message handed back", message_id=record.message_id, reason=str(later), delay_s=later.delay_s)
        if later.delay_s is not None:
            hand_back(
                record.event_source_arn,
                record.receipt_handle,
                later.delay_s,
                retry_queue_url=services().settings.retry_queue_url,
            )
        metrics.add_metric(name="MessagesHandedBack", unit=MetricUnit.Count, value=1)
        raise
    metrics.add_metric(name=OUTCOME_METRICS[outcome], unit=MetricUnit.Count, value=1)
    return outcome


@trace_handler  # X-Ray when the Tracing parameter is on
@logger.inject_lambda_context(log_event=False, clear_state=True)  # never the event: it holds job inputs
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # Entire-batch failures are reported item by item too: each message keeps its own backoff.
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    records = event.get("Records") or [{}]
    handler = functools.partial(record_handler, first_message_id=records[0].get("messageId"))
    return dict(process_partial_response(event=event, record_handler=handler, processor=processor, context=context))
