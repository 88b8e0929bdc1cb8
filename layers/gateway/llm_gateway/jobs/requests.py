"""What a caller sends to submit a job: over HTTP (``POST /v1/jobs``) or by direct invocation."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

DIRECT_TENANT = "stepfunctions"  # IAM callers that do not name a tenant


class JobRequest(BaseModel):
    """``POST /v1/jobs``: any operation (``completion``, ``extraction``, ``summarization``) and its input,
    which is validated now, as the operation's own route would validate it."""

    model_config = ConfigDict(extra="forbid")

    operation: str = Field(min_length=1, max_length=64)
    input: dict[str, Any]


class DirectJobRequest(JobRequest):
    """A direct invocation also names its tenant and, from Step Functions, the task token to complete
    (never accepted over HTTP: a tenant must not make this stack complete someone else's task)."""

    tenant: str = Field(default=DIRECT_TENANT, min_length=1, max_length=256)
    task_token: str | None = Field(default=None, min_length=1, max_length=2048)
