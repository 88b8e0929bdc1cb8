"""How a job's deliveries end: giving up, the dead-letter queue, poison, and telling the waiting task.

How every job ends (a result, a clear error, or its message on the dead-letter queue, and the job's
status says which):

* A delivery up to ``JOB_MAX_RECEIVES`` runs an attempt. When the last of them would hand its message
  back, for whatever reason (a retryable error, a lost race, Step Functions unreachable...), the job is
  marked failed with the reason, its task is told (SendTaskFailure), and the worker moves the message to
  the dead-letter queue itself (:meth:`JobEndings.give_up`, the one place that does it).
* The queue's maxReceiveCount is ``JOB_MAX_RECEIVES + 1``: if the last allowed delivery ended without a
  word (the Lambda timed out or crashed), the message comes back once more. That delivery runs nothing:
  it keeps an outcome the operation had already stored, else fails the job the same way. Only if that
  too fails does the queue's redrive policy move the message, and ``make redrive`` reopens the job.
* A redriven message reopens a job that failed because its deliveries ran out.
* A poison message (not JSON, unknown kind, no such job, another tenant's job) goes straight to the
  dead-letter queue, kept for inspection and never retried; a task token found in it is failed with
  ``InvalidRequestError`` so the waiting execution ends at once.
* A job started with too little time left in the invocation could only burn a delivery: its message is
  queued afresh instead (no delivery or attempt spent) and this one let go.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from llm_gateway import aws
from llm_gateway.errors import JobsUnavailableError
from llm_gateway.jobs.messages import (
    Delivery,
    JobMessage,
    Outcome,
    PoisonMessage,
    RetryLater,
    delivery_backoff_s,
    message_job_id,
    task_token_in,
)
from llm_gateway.jobs.model import Job, error_record
from llm_gateway.jobs.store import JobConflictError
from llm_gateway.jobs.task_tokens import TaskNotifier
from llm_gateway.operations import registry as operations
from llm_gateway.wiring import Services

log = logging.getLogger("llm_gateway.jobs.worker")

POISON_ATTRIBUTE = "gateway-poison"  # on messages the worker set aside in the dead-letter queue
DEAD_LETTER_ATTRIBUTE = "gateway-gave-up"  # on messages whose deliveries ran out (a redrive may help)


class JobEndings:
    """The end of a job's deliveries, for the worker: the job's failure, its task, its message."""

    def __init__(self, *, services: Services, notifier: TaskNotifier) -> None:
        self.services = services
        self.store = services.job_store()
        self.config = services.settings
        self.notifier = notifier

    def give_up(self, message: JobMessage | None, delivery: Delivery, later: RetryLater) -> Outcome:
        """The last allowed delivery is handing its message back: the job ends failed with the reason (a
        redrive may reopen it), its task is told, and the message goes to the dead-letter queue. Should
        any of that fail, the message is handed back and the next delivery (or the queue) finishes it."""
        reason = f"gave up after {min(delivery.receive_count, self.config.job_max_receives)} deliveries"
        if message is not None:
            try:
                self.fail_exhausted(message, delivery, later, reason)
            except RetryLater:
                raise
            except Exception as exc:
                log.warning(
                    "could not fail the job", extra={"message_id": delivery.message_id, "error": type(exc).__name__}
                )
                raise RetryLater("could not record the job's failure", delay_s=0) from None
        self.dead_letter(delivery, f"{reason}: {later}")
        return "dead_lettered"

    def fail_exhausted(self, message: JobMessage, delivery: Delivery, later: RetryLater, reason: str) -> None:
        job = self.store.get(message_job_id(message, delivery))
        if job is None or job.tenant != message.tenant:
            return
        if not job.terminal:
            if later.error is not None:
                record = {**later.error, "message": f"{reason}; last error: {later.error.get('message', '')}"}
            else:
                record = error_record(JobsUnavailableError(f"{reason}: {later}"))
            try:
                job = self.store.mark_failed(job, record, exhausted=True)
                log.warning("job retries exhausted", extra=log_fields(job, code=record.get("code")))
                self.tell_operation(job, record)
            except JobConflictError:  # it moved on meanwhile (another delivery finished it)
                job = self.store.get(job.job_id) or job
        try:
            self.notify(job, delivery)
        except RetryLater:  # the message is on its way to the DLQ anyway; a redrive tells the task again
            log.warning("task not told of the job's end", extra={"job_id": job.job_id})

    def tell_operation(self, job: Job, record: dict[str, Any]) -> None:
        """Best effort: the operation may leave a trace of its own (an upload's error object)."""
        try:
            operations.gave_up(job, self.store.load_payload(job), record, self.services)
        except Exception as exc:
            log.warning(
                "operation not told of the job's end", extra={"job_id": job.job_id, "error": type(exc).__name__}
            )

    def dead_letter(self, delivery: Delivery, reason: str, *, poison: bool = False) -> None:
        """Move the message to the dead-letter queue with its reason (a poison message is marked so that
        ``make redrive`` leaves it there). Without RETRY_DLQ_URL, poison is dropped with a logged reason and
        anything else is handed back for the queue's redrive policy to move."""
        dlq = self.config.retry_dlq_url
        log.warning(
            "message set aside" if dlq else "message dropped (no RETRY_DLQ_URL)" if poison else "message handed back",
            extra={"message_id": delivery.message_id, "reason": reason, "poison": poison},
        )
        if not dlq:
            if poison:
                return
            raise RetryLater(reason, delay_s=0)
        attribute = POISON_ATTRIBUTE if poison else DEAD_LETTER_ATTRIBUTE
        try:
            aws.sqs(aws.DURABLE).send_message(
                QueueUrl=dlq,
                MessageBody=delivery.body,
                MessageAttributes={attribute: {"DataType": "String", "StringValue": reason[:256]}},
            )
        except Exception:
            raise RetryLater("could not move the message to the dead-letter queue", delay_s=0) from None

    def fail_poisoned_task(self, delivery: Delivery, poison: PoisonMessage) -> None:
        """A poison message may still carry a task token: fail that task now (best effort) rather than
        leave its execution waiting for its timeout."""
        token = task_token_in(delivery.body)
        if token is None:
            return
        cause: dict[str, Any] = {"code": poison.code, "message": str(poison), "retryable": False}
        if poison.job_id:
            cause["job_id"] = poison.job_id
        try:
            self.notifier.fail(token, code=poison.code, cause=cause)
        except Exception as exc:
            log.warning(
                "could not fail the poison message's task", extra={"error": aws.error_code(exc) or type(exc).__name__}
            )

    def notify(self, job: Job, delivery: Delivery) -> None:
        """Complete the job's Step Functions task, once (re-sent if a crash lost the first try)."""
        if not job.task_token or job.notified_at is not None or not job.terminal:
            return
        try:
            if job.status == "succeeded":
                self.notifier.succeed(job.task_token, self.task_output(job))
            else:
                error = job.error or {}
                code = str(error.get("code") or "job_failed")
                self.notifier.fail(job.task_token, code=code, cause={"job_id": job.job_id, **error})
        except Exception as exc:
            log.warning("could not complete the task", extra={"job_id": job.job_id, "error": type(exc).__name__})
            raise RetryLater(
                "Step Functions could not be told",
                delay_s=delivery_backoff_s(delivery, None, config=self.config),
            ) from None
        with contextlib.suppress(JobConflictError):  # another delivery recorded it
            self.store.mark_notified(job)

    def task_output(self, job: Job) -> dict[str, Any]:
        output: dict[str, Any] = {"job_id": job.job_id, "status": job.status}
        if job.result_ref:
            output["result_ref"] = {"bucket": self.store.bucket, "key": job.result_ref}
            output["result_size"] = job.result_size
        else:
            output["result"] = self.store.load_result(job)
        return output


def log_fields(job: Job, **more: Any) -> dict[str, Any]:
    return {
        "job_id": job.job_id,
        "tenant": job.tenant,
        "operation": job.operation,
        "status": job.status,
        "attempts": job.attempts,
        **more,
    }
