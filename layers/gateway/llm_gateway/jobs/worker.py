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

How every job ends is ``endings.py``'s to say.

Effects happen once per job: the operation runs inside Powertools idempotency keyed by the job id (a
concurrent duplicate finds the work in progress and leaves it to the delivery doing it, a later one
gets the stored outcome), and every job transition is a conditional write. Payloads are never logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from llm_gateway.errors import GatewayError, InvalidRequestError, JobsUnavailableError
from llm_gateway.http.framing import log_unexpected
from llm_gateway.interfaces import RequestContext
from llm_gateway.jobs.endings import JobEndings, log_fields
from llm_gateway.jobs.idempotency import JobInProgress, NoAttemptLeft, persistence_layer, run_idempotent
from llm_gateway.jobs.messages import (
    MAX_CONTINUATIONS,
    Delivery,
    JobMessage,
    Outcome,
    PoisonMessage,
    RetryLater,
    delivery_backoff_s,
    message_job_id,
    parse_message,
)
from llm_gateway.jobs.model import Job, error_record
from llm_gateway.jobs.quota_wait import MAX_QUOTA_WAITS, quota_wait_s, wait_for_quota
from llm_gateway.jobs.store import JobConflictError
from llm_gateway.jobs.task_tokens import TaskNotifier
from llm_gateway.operations import registry as operations
from llm_gateway.routing.deadline import Deadline
from llm_gateway.runtime import run_sync
from llm_gateway.wiring import Services

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer

log = logging.getLogger("llm_gateway.jobs.worker")

MIN_ATTEMPT_S = 5.0  # less time than this left for a batch's first job: queue it afresh instead
BOOKKEEPING_S = 2.0  # kept back from an attempt's deadline for the writes that follow it


class Worker:
    def __init__(
        self,
        services: Services,
        *,
        job_persistence: BasePersistenceLayer | None = None,
        notifier: TaskNotifier | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.services = services
        self.store = services.job_store()
        self.config = services.settings
        self.job_persistence = job_persistence
        self.notifier = notifier or TaskNotifier()
        self.clock = clock
        self.endings = JobEndings(services=services, notifier=self.notifier)

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
                return self.endings.give_up(None if isinstance(message, dict) else message, delivery, later)
        except PoisonMessage as poison:
            self.endings.fail_poisoned_task(delivery, poison)
            self.endings.dead_letter(delivery, str(poison), poison=True)
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
            log_unexpected(
                log, exc, "message handling failed", log_prompts=self.config.log_prompts, message_id=delivery.message_id
            )
            trouble = JobsUnavailableError(f"internal error ({type(exc).__name__})")
            raise RetryLater(str(trouble), delay_s=self._backoff(delivery, None), error=error_record(trouble)) from None

    # ---- jobs

    def _run_job(
        self, message: JobMessage, delivery: Delivery, lambda_context: Any, *, first_in_batch: bool
    ) -> Outcome:
        job = self._job_for(message, delivery)
        if job.terminal and not job.reopenable:
            self.endings.notify(job, delivery)
            return "duplicate"
        remaining = _remaining_s(lambda_context)
        if not self._time_for_a_job(remaining, first_in_batch=first_in_batch):
            return self._requeue(job)
        budget = min(self.config.job_max_runtime_s, (remaining if remaining is not None else 900.0) - BOOKKEEPING_S)
        try:
            stored = self._execute(job, budget, lambda_context)
        except JobInProgress:
            return self._in_progress_elsewhere(job, delivery, lambda_context)
        except RetryLater:
            raise
        except GatewayError as err:
            return self._on_error(
                job, err, delivery, continuation=message.continuation, quota_waits=message.quota_waits
            )
        except JobConflictError:
            return self._on_conflict(job, delivery)
        except Exception as exc:
            # AWS trouble or a bug: retry with backoff, and end on the dead-letter queue if it persists.
            log_unexpected(  # its text may quote the input
                log, exc, "job attempt crashed", log_prompts=self.config.log_prompts, job_id=job.job_id
            )
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
        log.info("job succeeded", extra=log_fields(done))
        self.endings.notify(done, delivery)
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
        log.info("job queued afresh: too little time left in this invocation", extra=log_fields(job))
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
        job_id = message_job_id(message, delivery)
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
                tags={"job_id": claimed.job_id, "job_source": claimed.source, **claimed.key_tags()},
            )
            log.info("job attempt", extra=log_fields(claimed))
            output = run_sync(operations.run(claimed.operation, self.store.load_payload(claimed), ctx, self.services))
            _count_job(claimed.operation, ctx, output)
            kept.update(self.store.store_result(claimed, output))
            return dict(kept)

        if self.job_persistence is None:
            return attempt({"job_id": job.job_id})
        try:
            return run_idempotent(
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
            raise NoAttemptLeft

        try:
            return run_idempotent(
                refuse, {"job_id": job.job_id}, self.job_persistence, "job_id", "job", self._ttl(), lambda_context
            )
        except NoAttemptLeft:
            return None

    def _on_error(
        self, job: Job, err: GatewayError, delivery: Delivery, *, continuation: int = 0, quota_waits: int = 0
    ) -> Outcome:
        record = error_record(err)
        try:
            wait = quota_wait_s(err, self.clock()) if quota_waits < MAX_QUOTA_WAITS else None
            queued = wait is not None and wait_for_quota(
                self.store, job, record, wait, now=self.clock(), continuation=continuation, quota_waits=quota_waits + 1
            )
            if queued:
                return "requeued"
            if err.retryable and _made_progress(err) and continuation < MAX_CONTINUATIONS:
                continued = self._continue(job, record, continuation + 1)
                if continued is not None:
                    return continued
            if not err.retryable:
                failed = self.store.mark_failed(job, record, exhausted=False)
                log.warning("job failed", extra=log_fields(failed, code=err.code))
                self.endings.notify(failed, delivery)
                return "failed"
            if delivery.receive_count >= self.config.job_max_receives:
                raise RetryLater(f"retryable error {err.code} on the last delivery", delay_s=0, error=record)
            delay = self._backoff(delivery, err.retry_after)
            retrying = self.store.mark_retrying(job, record, self.clock() + delay)
            log.info("job will be retried", extra=log_fields(retrying, code=err.code, delay_s=delay))
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
        log.info("job continues in a fresh message", extra=log_fields(retrying, continuation=continuation))
        return "continued"

    def _on_conflict(self, job: Job, delivery: Delivery) -> Outcome:
        """A transition lost a race: fine if the job is finished (another delivery did it), else retry."""
        current = self.store.get(job.job_id)
        if current is not None and current.terminal:
            self.endings.notify(current, delivery)
            return "duplicate"
        raise RetryLater("the job changed under this delivery", delay_s=1)

    # ---- the end of a job's deliveries

    def _after_last_delivery(self, message: JobMessage, delivery: Delivery, lambda_context: Any) -> Outcome:
        """One delivery past JOB_MAX_RECEIVES: the last allowed one ended without a word (timed out,
        crashed). Run nothing: record an outcome the operation already stored, else give up on the job."""
        job = self._job_for(message, delivery)
        if job.terminal and not job.reopenable:
            self.endings.notify(job, delivery)
            return "duplicate"
        try:
            stored = self._stored_outcome(job, lambda_context)
        except JobInProgress:
            return self._in_progress_elsewhere(job, delivery, lambda_context)
        if stored is not None:
            log.info("job outcome recovered after its last delivery", extra={"job_id": job.job_id})
            return self._finish(job, stored, delivery)
        unfinished = JobsUnavailableError(
            f"the last allowed delivery ({self.config.job_max_receives}) did not finish "
            "(the worker timed out or stopped)",
            details={"last_error": job.last_error} if job.last_error else None,
        )
        return self.endings.give_up(
            message, delivery, RetryLater(str(unfinished), delay_s=0, error=error_record(unfinished))
        )

    # ---- usage records

    def _replay_usage(self, body: dict[str, Any], delivery: Delivery) -> Outcome:
        from llm_gateway.accounting.usage import replay_usage_message

        try:
            written = replay_usage_message(body, table=self.config.usage_table)
        except InvalidRequestError as err:
            raise PoisonMessage(f"unusable usage message: {err.message}") from None
        except Exception as exc:
            log.warning("usage replay failed", extra={"message_id": delivery.message_id, "error": type(exc).__name__})
            raise RetryLater("usage replay failed", delay_s=self._backoff(delivery, None)) from None
        log.info("usage record replayed", extra={"message_id": delivery.message_id, "written": written})
        return "usage"

    # ---- helpers

    def _backoff(self, delivery: Delivery, retry_after: float | None) -> int:
        return delivery_backoff_s(delivery, retry_after, config=self.config)

    def _ttl(self) -> int:
        return self.config.job_ttl_s


def _made_progress(err: GatewayError) -> bool:
    """A deadline error from an operation that finished (and cached) part of its work in this attempt."""
    details = err.details if isinstance(err.details, dict) else {}
    return err.code == "deadline_exceeded" and int(details.get("paid_calls") or 0) > 0


def _remaining_s(lambda_context: Any) -> float | None:
    if lambda_context is None or not hasattr(lambda_context, "get_remaining_time_in_millis"):
        return None
    return float(lambda_context.get_remaining_time_in_millis()) / 1000.0


# --------------------------------------------------------------------------- composition


def worker_for(services: Services) -> Worker:
    """A worker over these services (the retry worker's handler keeps one per process)."""
    table = services.settings.idempotency_table
    return Worker(services, job_persistence=persistence_layer(table) if table else None)


def _count_job(operation: str, ctx: RequestContext, output: dict[str, Any]) -> None:
    """A finished job in the operator metrics, as a request would be (its cost counts toward the spend)."""
    from llm_gateway.http import observe

    observe.count(operation, ctx, ctx.tenant, output)
