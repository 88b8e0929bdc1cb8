"""The retry worker: one retry-queue message in, one job (or usage record) moved forward.

Messages (``kind`` decides, ``job`` when absent):

* ``{"kind": "job", "job_id", "tenant", "operation"}``: a job submitted through ``jobs.submit``;
* ``{"kind": "job", "tenant", "operation", "input", "task_token"?}``: a job submitted straight to the
  queue (e.g. a Step Functions ``sqs:sendMessage.waitForTaskToken`` task); its id is derived from the
  task token (else the message id), so duplicates of the submission are one job;
* ``{"kind": "usage", ...}``: a usage record whose write failed, replayed by ``usage.replay_usage_message``
  (idempotent on its own: the record's put is conditional on its id).

Outcomes: return normally and the message is deleted; raise :class:`RetryLater` and the handler makes
the message visible again after ``delay_s`` (SQS visibility: the backoff) and reports it as a batch item
failure.

How every job ends (a result, a clear error, or its message on the dead-letter queue, and the job's
status says which):

* A delivery up to ``JOB_MAX_RECEIVES`` runs an attempt. When the last of them would hand its message
  back, for whatever reason (a retryable error, a lost race, Step Functions unreachable...), the job is
  marked failed with the reason, its task is told (SendTaskFailure), and the worker moves the message to
  the dead-letter queue itself (:meth:`Worker._give_up`, the one place that does it).
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

Effects happen once per job: the operation runs inside Powertools idempotency keyed by the job id (a
concurrent duplicate finds the work in progress and leaves it to the delivery doing it, a later one
gets the stored outcome), and every job transition is a conditional write. Payloads are never logged.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import math
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from llm_gateway import aws
from llm_gateway.config import Settings, settings
from llm_gateway.errors import GatewayError, InvalidRequestError, JobsUnavailableError
from llm_gateway.http.framing import log_unexpected
from llm_gateway.interfaces import RequestContext
from llm_gateway.jobs.store import Job, JobConflictError, JobStore, default_store, derived_job_id, error_record
from llm_gateway.jobs.task_tokens import TaskNotifier
from llm_gateway.operations import registry as operations
from llm_gateway.routing.deadline import Deadline
from llm_gateway.runtime import run_sync

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer

log = logging.getLogger("llm_gateway.jobs.worker")

MIN_ATTEMPT_S = 5.0  # less time than this left for a batch's first job: queue it afresh instead
BOOKKEEPING_S = 2.0  # kept back from an attempt's deadline for the writes that follow it
MAX_VISIBILITY_S = 43_200  # SQS's limit on a visibility timeout
MAX_TASK_TOKEN_CHARS = 2_048
# A long job (a big summary) that ran out of time but moved forward (its finished parts are cached)
# goes on in a fresh message: progress spends no delivery. Bounded, so nothing loops for ever.
MAX_CONTINUATIONS = 20

Outcome = Literal["succeeded", "failed", "duplicate", "poison", "usage", "requeued", "continued", "dead_lettered"]
POISON_ATTRIBUTE = "gateway-poison"  # on messages the worker set aside in the dead-letter queue
DEAD_LETTER_ATTRIBUTE = "gateway-gave-up"  # on messages whose deliveries ran out (a redrive may help)
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


class _InProgress(Exception):
    """Another delivery holds the job's idempotency lock: it is running the job right now."""


class _NoAttemptLeft(Exception):
    """Raised instead of running an operation when a delivery may only collect a stored outcome."""


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


def backoff_s(
    receive_count: int, *, base_s: float, cap_s: float, retry_after_s: float | None, rng: random.Random
) -> int:
    """Exponential backoff with equal jitter (a recovering herd spreads out), never under Retry-After."""
    step = min(cap_s, base_s * 2 ** min(max(receive_count - 1, 0), 20))
    delay = step / 2 + rng.uniform(0, step / 2)
    if retry_after_s:
        delay = max(delay, min(retry_after_s, cap_s))
    return int(min(math.ceil(delay), MAX_VISIBILITY_S))


class Worker:
    def __init__(
        self,
        *,
        store: JobStore,
        config: Settings,
        job_persistence: BasePersistenceLayer | None = None,
        notifier: TaskNotifier | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.config = config
        self.job_persistence = job_persistence
        self.notifier = notifier or TaskNotifier()
        self.rng = rng or random.Random()
        self.clock = clock

    def handle(self, delivery: Delivery, lambda_context: Any = None, *, first_in_batch: bool = True) -> Outcome:
        """Move one message's work forward. ``first_in_batch``: no earlier record of this invocation ran
        (a later one starts a job only if the whole ``JOB_MAX_RUNTIME`` still fits)."""
        try:
            message = parse_message(delivery.body)
            try:
                return self._dispatch(message, delivery, lambda_context, first_in_batch=first_in_batch)
            except RetryLater as later:
                if delivery.receive_count < self.config.job_max_receives:
                    raise
                return self._give_up(None if isinstance(message, dict) else message, delivery, later)
        except PoisonMessage as poison:
            self._fail_poisoned_task(delivery, poison)
            self._dead_letter(delivery, str(poison), poison=True)
            return "poison"

    def _dispatch(
        self, message: JobMessage | dict[str, Any], delivery: Delivery, lambda_context: Any, *, first_in_batch: bool
    ) -> Outcome:
        try:
            if isinstance(message, dict):
                return self._replay_usage(message, delivery)
            if delivery.receive_count > self.config.job_max_receives:
                return self._after_last_delivery(message, delivery, lambda_context)
            return self._run_job(message, delivery, lambda_context, first_in_batch=first_in_batch)
        except (PoisonMessage, RetryLater):
            raise
        except Exception as exc:
            # AWS trouble (or a bug) outside an attempt: back off like any retryable error, so that the
            # last delivery still ends the job with a reason.
            log_unexpected(log, exc, "message handling failed", message_id=delivery.message_id)
            trouble = JobsUnavailableError(f"internal error ({type(exc).__name__})")
            raise RetryLater(str(trouble), delay_s=self._backoff(delivery, None), error=error_record(trouble)) from None

    # ---- jobs

    def _run_job(
        self, message: JobMessage, delivery: Delivery, lambda_context: Any, *, first_in_batch: bool
    ) -> Outcome:
        job = self._job_for(message, delivery)
        if job.terminal and not job.reopenable:
            self._notify(job, delivery)
            return "duplicate"
        remaining = _remaining_s(lambda_context)
        if not self._time_for_a_job(remaining, first_in_batch=first_in_batch):
            return self._requeue(job)
        budget = min(self.config.job_max_runtime_s, (remaining if remaining is not None else 900.0) - BOOKKEEPING_S)
        try:
            stored = self._execute(job, budget, lambda_context)
        except _InProgress:
            return self._in_progress_elsewhere(job, delivery, lambda_context)
        except RetryLater:
            raise
        except GatewayError as err:
            return self._on_error(job, err, delivery, continuation=message.continuation)
        except JobConflictError:
            return self._on_conflict(job, delivery)
        except Exception as exc:
            # AWS trouble or a bug: retry with backoff, and end on the dead-letter queue if it persists.
            log_unexpected(log, exc, "job attempt crashed", job_id=job.job_id)  # its text may quote the input
            return self._on_error(job, JobsUnavailableError(f"internal error ({type(exc).__name__})"), delivery)
        return self._finish(job, stored, delivery)

    def _finish(self, job: Job, stored: dict[str, Any], delivery: Delivery) -> Outcome:
        try:
            done = self.store.mark_succeeded(job, stored)
        except JobConflictError:
            return self._on_conflict(job, delivery)
        except Exception as exc:
            # The outcome is kept by idempotency: the next delivery records it without running it again.
            log.warning("job result not recorded", extra={"job_id": job.job_id, "error": type(exc).__name__})
            unrecorded = JobsUnavailableError(f"the job's result could not be recorded ({type(exc).__name__})")
            raise RetryLater(
                str(unrecorded), delay_s=self._backoff(delivery, None), error=error_record(unrecorded)
            ) from None
        log.info("job succeeded", extra=_log_fields(done))
        self._notify(done, delivery)
        return "succeeded"

    def _time_for_a_job(self, remaining: float | None, *, first_in_batch: bool) -> bool:
        if remaining is None:
            return True
        needed = MIN_ATTEMPT_S if first_in_batch else self.config.job_max_runtime_s
        return remaining - BOOKKEEPING_S >= needed

    def _requeue(self, job: Job) -> Outcome:
        """Too little time left to start the job: queue its message afresh (this delivery counts for
        nothing, the job is untouched) and let this one be deleted."""
        try:
            self.store.enqueue(job)
        except Exception as exc:
            log.warning("could not queue the job afresh", extra={"job_id": job.job_id, "error": type(exc).__name__})
            raise RetryLater("too little time left in this invocation", delay_s=0) from None
        log.info("job queued afresh: too little time left in this invocation", extra=_log_fields(job))
        return "requeued"

    def _in_progress_elsewhere(self, job: Job, delivery: Delivery, lambda_context: Any) -> Outcome:
        """Another delivery is running the job and owns its outcome (its own message comes back if it
        dies): this one is redundant. Without a Lambda context the lock has no expiry to rely on, so the
        message is handed back instead."""
        if _remaining_s(lambda_context) is not None:
            log.info("job already in progress elsewhere; duplicate delivery dropped", extra={"job_id": job.job_id})
            return "duplicate"
        raise RetryLater("another delivery of this job is in progress", delay_s=self._backoff(delivery, None))

    def _job_for(self, message: JobMessage, delivery: Delivery) -> Job:
        if message.job_id is not None:
            job = self.store.get(message.job_id)
            if job is None:
                raise PoisonMessage("no such job (never created, or expired)")
        else:
            job = self._submitted_by_message(message, delivery)
        if job.tenant != message.tenant:
            raise PoisonMessage("the message's tenant does not own this job")
        return job

    def _submitted_by_message(self, message: JobMessage, delivery: Delivery) -> Job:
        assert message.operation is not None and message.input is not None
        job_id = self._message_job_id(message, delivery)
        existing = self.store.get(job_id)
        if existing is not None:
            return existing
        new = self.store.new_job(
            operation=message.operation,
            tenant=message.tenant,
            source="stepfunctions" if message.task_token else "sqs",
            request_id=delivery.message_id,
            task_token=message.task_token,
            job_id=job_id,
        )
        try:
            return self.store.create(new, message.input)
        except JobConflictError:
            raise RetryLater("the job is being created by another delivery", delay_s=1) from None
        except GatewayError as err:  # e.g. an input too large to keep: the waiting task is told, as poison
            raise PoisonMessage(f"the job could not be created: {err.message}", code=err.code, job_id=job_id) from None

    @staticmethod
    def _message_job_id(message: JobMessage, delivery: Delivery) -> str:
        return message.job_id or derived_job_id(message.task_token or delivery.message_id)

    def _execute(self, job: Job, budget_s: float, lambda_context: Any) -> dict[str, Any]:
        """Claim the job, run its operation, keep its result: at most once per job id at a time, and
        never again once it has succeeded (the stored outcome is returned instead)."""
        kept: dict[str, Any] = {}

        def attempt(job_key: dict[str, str]) -> dict[str, Any]:
            claimed = self.store.claim(job)
            ctx = RequestContext(
                tenant=claimed.tenant,
                request_id=f"{claimed.job_id}#{claimed.attempts}",
                deadline=Deadline(max(budget_s, 0.0)),
                operation=claimed.operation,
                log_prompts=self.config.log_prompts,
                tags={"job_id": claimed.job_id, "job_source": claimed.source},
            )
            log.info("job attempt", extra=_log_fields(claimed))
            output = run_sync(operations.run(claimed.operation, self.store.load_payload(claimed), ctx))
            kept.update(self.store.store_result(claimed, output))
            return dict(kept)

        if self.job_persistence is None:
            return attempt({"job_id": job.job_id})
        try:
            return _run_idempotent(
                attempt, {"job_id": job.job_id}, self.job_persistence, "job_id", "job", self._ttl(), lambda_context
            )
        except Exception as exc:
            from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyPersistenceLayerError

            # The outcome is safe in hand even if recording it as done failed: finish the job with it.
            if kept and isinstance(exc, IdempotencyPersistenceLayerError):
                log.warning("idempotency record not saved; finishing the job anyway", extra={"job_id": job.job_id})
                return kept
            raise

    def _stored_outcome(self, job: Job, lambda_context: Any) -> dict[str, Any] | None:
        """The outcome an earlier delivery's operation stored (then died before recording it in the job),
        without running the operation: None when there is none."""
        if self.job_persistence is None:
            return None

        def refuse(job_key: dict[str, str]) -> dict[str, Any]:
            raise _NoAttemptLeft

        try:
            return _run_idempotent(
                refuse, {"job_id": job.job_id}, self.job_persistence, "job_id", "job", self._ttl(), lambda_context
            )
        except _NoAttemptLeft:
            return None

    def _on_error(self, job: Job, err: GatewayError, delivery: Delivery, *, continuation: int = 0) -> Outcome:
        record = error_record(err)
        try:
            if err.retryable and _made_progress(err) and continuation < MAX_CONTINUATIONS:
                continued = self._continue(job, record, continuation + 1)
                if continued is not None:
                    return continued
            if not err.retryable:
                failed = self.store.mark_failed(job, record, exhausted=False)
                log.warning("job failed", extra=_log_fields(failed, code=err.code))
                self._notify(failed, delivery)
                return "failed"
            if delivery.receive_count >= self.config.job_max_receives:
                raise RetryLater(f"retryable error {err.code} on the last delivery", delay_s=0, error=record)
            delay = self._backoff(delivery, getattr(getattr(err, "last_error", err), "retry_after", None))
            retrying = self.store.mark_retrying(job, record, self.clock() + delay)
            log.info("job will be retried", extra=_log_fields(retrying, code=err.code, delay_s=delay))
            raise RetryLater(f"retryable error {err.code}", delay_s=delay)
        except JobConflictError:
            return self._on_conflict(job, delivery)

    def _continue(self, job: Job, record: dict[str, Any], continuation: int) -> Outcome | None:
        """Go on in a fresh message at once (this delivery is deleted, none is spent); None if it can't be
        queued, and the ordinary retry path takes over."""
        retrying = self.store.mark_retrying(job, record, self.clock())
        try:
            self.store.enqueue(retrying, continuation=continuation)
        except Exception as exc:
            log.warning(
                "could not queue the job's continuation", extra={"job_id": job.job_id, "error": type(exc).__name__}
            )
            return None
        log.info("job continues in a fresh message", extra=_log_fields(retrying, continuation=continuation))
        return "continued"

    def _on_conflict(self, job: Job, delivery: Delivery) -> Outcome:
        """A transition lost a race: fine if the job is finished (another delivery did it), else retry."""
        current = self.store.get(job.job_id)
        if current is not None and current.terminal:
            self._notify(current, delivery)
            return "duplicate"
        raise RetryLater("the job changed under this delivery", delay_s=1)

    # ---- the end of a job's deliveries

    def _after_last_delivery(self, message: JobMessage, delivery: Delivery, lambda_context: Any) -> Outcome:
        """One delivery past JOB_MAX_RECEIVES: the last allowed one ended without a word (timed out,
        crashed). Run nothing: record an outcome the operation already stored, else give up on the job."""
        job = self._job_for(message, delivery)
        if job.terminal and not job.reopenable:
            self._notify(job, delivery)
            return "duplicate"
        try:
            stored = self._stored_outcome(job, lambda_context)
        except _InProgress:
            return self._in_progress_elsewhere(job, delivery, lambda_context)
        if stored is not None:
            log.info("job outcome recovered after its last delivery", extra={"job_id": job.job_id})
            return self._finish(job, stored, delivery)
        unfinished = JobsUnavailableError(
            f"the last allowed delivery ({self.config.job_max_receives}) did not finish "
            "(the worker timed out or stopped)",
            details={"last_error": job.last_error} if job.last_error else None,
        )
        return self._give_up(message, delivery, RetryLater(str(unfinished), delay_s=0, error=error_record(unfinished)))

    def _give_up(self, message: JobMessage | None, delivery: Delivery, later: RetryLater) -> Outcome:
        """The last allowed delivery is handing its message back: the job ends failed with the reason (a
        redrive may reopen it), its task is told, and the message goes to the dead-letter queue. Should
        any of that fail, the message is handed back and the next delivery (or the queue) finishes it."""
        reason = f"gave up after {min(delivery.receive_count, self.config.job_max_receives)} deliveries"
        if message is not None:
            try:
                self._fail_exhausted(message, delivery, later, reason)
            except RetryLater:
                raise
            except Exception as exc:
                log.warning(
                    "could not fail the job", extra={"message_id": delivery.message_id, "error": type(exc).__name__}
                )
                raise RetryLater("could not record the job's failure", delay_s=0) from None
        self._dead_letter(delivery, f"{reason}: {later}")
        return "dead_lettered"

    def _fail_exhausted(self, message: JobMessage, delivery: Delivery, later: RetryLater, reason: str) -> None:
        job = self.store.get(self._message_job_id(message, delivery))
        if job is None or job.tenant != message.tenant:
            return
        if not job.terminal:
            if later.error is not None:
                record = {**later.error, "message": f"{reason}; last error: {later.error.get('message', '')}"}
            else:
                record = error_record(JobsUnavailableError(f"{reason}: {later}"))
            try:
                job = self.store.mark_failed(job, record, exhausted=True)
                log.warning("job retries exhausted", extra=_log_fields(job, code=record.get("code")))
                self._tell_operation(job, record)
            except JobConflictError:  # it moved on meanwhile (another delivery finished it)
                job = self.store.get(job.job_id) or job
        try:
            self._notify(job, delivery)
        except RetryLater:  # the message is on its way to the DLQ anyway; a redrive tells the task again
            log.warning("task not told of the job's end", extra={"job_id": job.job_id})

    def _tell_operation(self, job: Job, record: dict[str, Any]) -> None:
        """Best effort: the operation may leave a trace of its own (an upload's error object)."""
        try:
            operations.gave_up(job, self.store.load_payload(job), record)
        except Exception as exc:
            log.warning(
                "operation not told of the job's end", extra={"job_id": job.job_id, "error": type(exc).__name__}
            )

    def _dead_letter(self, delivery: Delivery, reason: str, *, poison: bool = False) -> None:
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

    def _fail_poisoned_task(self, delivery: Delivery, poison: PoisonMessage) -> None:
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

    def _notify(self, job: Job, delivery: Delivery) -> None:
        """Complete the job's Step Functions task, once (re-sent if a crash lost the first try)."""
        if not job.task_token or job.notified_at is not None or not job.terminal:
            return
        try:
            if job.status == "succeeded":
                self.notifier.succeed(job.task_token, self._task_output(job))
            else:
                error = job.error or {}
                code = str(error.get("code") or "job_failed")
                self.notifier.fail(job.task_token, code=code, cause={"job_id": job.job_id, **error})
        except Exception as exc:
            log.warning("could not complete the task", extra={"job_id": job.job_id, "error": type(exc).__name__})
            raise RetryLater("Step Functions could not be told", delay_s=self._backoff(delivery, None)) from None
        with contextlib.suppress(JobConflictError):  # another delivery recorded it
            self.store.mark_notified(job)

    def _task_output(self, job: Job) -> dict[str, Any]:
        output: dict[str, Any] = {"job_id": job.job_id, "status": job.status}
        if job.result_ref:
            output["result_ref"] = {"bucket": self.store.bucket, "key": job.result_ref}
            output["result_size"] = job.result_size
        else:
            output["result"] = self.store.load_result(job)
        return output

    # ---- usage records

    def _replay_usage(self, body: dict[str, Any], delivery: Delivery) -> Outcome:
        from llm_gateway.accounting.usage import replay_usage_message

        try:
            written = replay_usage_message(body)
        except InvalidRequestError as err:
            raise PoisonMessage(f"unusable usage message: {err.message}") from None
        except Exception as exc:
            log.warning("usage replay failed", extra={"message_id": delivery.message_id, "error": type(exc).__name__})
            raise RetryLater("usage replay failed", delay_s=self._backoff(delivery, None)) from None
        log.info("usage record replayed", extra={"message_id": delivery.message_id, "written": written})
        return "usage"

    # ---- helpers

    def _backoff(self, delivery: Delivery, retry_after: float | None) -> int:
        return backoff_s(
            delivery.receive_count,
            base_s=self.config.job_backoff_base_s,
            cap_s=self.config.job_backoff_max_s,
            retry_after_s=retry_after,
            rng=self.rng,
        )

    def _ttl(self) -> int:
        return self.config.job_ttl_s


def _run_idempotent(
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
        raise _InProgress from None
    return result


def _made_progress(err: GatewayError) -> bool:
    """A deadline error from an operation that finished (and cached) part of its work in this attempt."""
    details = err.details if isinstance(err.details, dict) else {}
    return err.code == "deadline_exceeded" and int(details.get("paid_calls") or 0) > 0


def hand_back(queue_arn: str, receipt_handle: str, delay_s: int) -> None:
    """Make a received message visible again after ``delay_s`` (its backoff). If that fails it still comes
    back, after the queue's own visibility timeout."""
    try:
        aws.sqs().change_message_visibility(
            QueueUrl=queue_url_for(queue_arn),
            ReceiptHandle=receipt_handle,
            VisibilityTimeout=max(0, min(int(delay_s), MAX_VISIBILITY_S)),
        )
    except Exception as exc:
        log.warning("could not set the message's backoff", extra={"error": aws.error_code(exc) or type(exc).__name__})


def queue_url_for(queue_arn: str) -> str:
    """The URL of the queue an SQS event came from (the configured retry queue, else looked up once)."""
    _, _, _, _, account, name = queue_arn.split(":", 5)
    configured = settings().retry_queue_url
    if configured and configured.rstrip("/").rsplit("/", 1)[-1] == name:
        return configured
    if (account, name) not in _queue_urls:
        url = aws.sqs().get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
        _queue_urls[(account, name)] = url
    return _queue_urls[(account, name)]


_queue_urls: dict[tuple[str, str], str] = {}


def _remaining_s(lambda_context: Any) -> float | None:
    if lambda_context is None or not hasattr(lambda_context, "get_remaining_time_in_millis"):
        return None
    return float(lambda_context.get_remaining_time_in_millis()) / 1000.0


def _log_fields(job: Job, **more: Any) -> dict[str, Any]:
    return {
        "job_id": job.job_id,
        "tenant": job.tenant,
        "operation": job.operation,
        "status": job.status,
        "attempts": job.attempts,
        **more,
    }


# --------------------------------------------------------------------------- composition


_workers: dict[int, tuple[Settings, Worker]] = {}


def default_worker(config: Settings | None = None) -> Worker:
    """The worker for these settings, built once (the settings object changes when tests reset them)."""
    config = config or settings()
    cached = _workers.get(id(config))
    if cached is not None and cached[0] is config:
        return cached[1]
    table = config.idempotency_table
    worker = Worker(store=default_store(config), config=config, job_persistence=_persistence(table) if table else None)
    _workers.clear()
    _workers[id(config)] = (config, worker)
    return worker


def _persistence(table: str) -> BasePersistenceLayer:
    """Jobs' idempotency records (Powertools configures a persistence layer once, for one key path)."""
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

    return DynamoDBPersistenceLayer(
        table_name=table, key_attr="id", expiry_attr="expires_at", boto3_client=aws.dynamodb(aws.DURABLE)
    )
