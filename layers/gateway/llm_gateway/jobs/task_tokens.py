"""Completing a Step Functions ``.waitForTaskToken`` task when its job finishes.

SendTaskSuccess carries the job's outcome (``{"job_id", "status", "result"}``, or ``result_ref`` when the
result lives in S3); SendTaskFailure carries the error by name (``RateLimitedError``, the same names the
completion function raises on direct invocation) so a state's Retry/Catch can match it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from llm_gateway import aws

log = logging.getLogger("llm_gateway.jobs.task_tokens")

MAX_OUTPUT_BYTES = 262_144  # Step Functions' limit on a task's output
MAX_ERROR_CHARS = 256
MAX_CAUSE_CHARS = 32_768
# The token's task is gone (finished, timed out, or its execution stopped): nothing left to tell.
GONE = frozenset({"TaskTimedOut", "TaskDoesNotExist", "InvalidToken"})


def error_name(code: str) -> str:
    """``rate_limited`` -> ``RateLimitedError`` (as ``api.named_error`` names exceptions: no ``...ErrorError``)."""
    return "".join(part.capitalize() for part in code.removesuffix("_error").split("_")) + "Error"


class TaskNotifier:
    """Calls SendTaskSuccess / SendTaskFailure. Returns False when the task no longer exists; raises on
    errors that may pass (throttling, network), so that the message is retried."""

    def succeed(self, token: str, output: dict[str, Any]) -> bool:
        text = json.dumps(output, separators=(",", ":"), ensure_ascii=False)
        if len(text.encode("utf-8")) > MAX_OUTPUT_BYTES:
            raise ValueError("task output over 256 KB; store the result in S3 and send a reference")
        return self._call("send_task_success", taskToken=token, output=text)

    def fail(self, token: str, *, code: str, cause: dict[str, Any]) -> bool:
        text = json.dumps(cause, separators=(",", ":"), ensure_ascii=False)[:MAX_CAUSE_CHARS]
        return self._call("send_task_failure", taskToken=token, error=error_name(code)[:MAX_ERROR_CHARS], cause=text)

    def _call(self, action: str, **kwargs: Any) -> bool:
        try:
            getattr(aws.client("stepfunctions", aws.DURABLE), action)(**kwargs)
        except Exception as exc:
            code = aws.error_code(exc)
            if code in GONE:
                log.warning("task token no longer valid", extra={"action": action, "error": code})
                return False
            raise
        return True
