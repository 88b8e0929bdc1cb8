"""The HTTP opt-ins for async work, shared by every operation's handler (RFC 7240 ``Prefer``).

* ``Prefer: respond-async``: always answer ``202`` with a job (``Location: /v1/jobs/{id}``).
* ``Prefer: defer-on-failure``: answer synchronously, but when retries and fallbacks are exhausted on a
  retryable error, queue the request as a job and answer ``202`` instead of the 429/503/504.

A deployment without jobs (no JOBS_TABLE) ignores both, as RFC 7240 allows for any preference.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from llm_gateway.after_response import Deferral
from llm_gateway.errors import GatewayError
from llm_gateway.jobs.store import MAX_SQS_DELAY_S

if TYPE_CHECKING:
    from llm_gateway.jobs.model import Job
    from llm_gateway.wiring import Services

RESPOND_ASYNC = "respond-async"
DEFER_ON_FAILURE = "defer-on-failure"


def preferences(event: Mapping[str, Any]) -> set[str]:
    """Preference tokens of an API Gateway proxy event, lower-cased, parameters dropped."""
    values: list[str] = []
    for name, items in (event.get("multiValueHeaders") or {}).items():
        if name.lower() == "prefer" and isinstance(items, list):
            values += [str(v) for v in items]
    if not values:
        values = [str(v) for k, v in (event.get("headers") or {}).items() if k.lower() == "prefer"]
    tokens: set[str] = set()
    for value in values:
        for part in value.split(","):
            token = part.split(";", 1)[0].split("=", 1)[0].strip().lower()
            if token:
                tokens.add(token)
    return tokens


def wants_async(event: Mapping[str, Any], services: Services) -> bool:
    return RESPOND_ASYNC in preferences(event) and services.jobs_configured


def should_defer(event: Mapping[str, Any], err: BaseException, services: Services) -> bool:
    """True when the caller opted in and the failure is one that waiting may fix."""
    return (
        isinstance(err, GatewayError)
        and err.retryable
        and DEFER_ON_FAILURE in preferences(event)
        and services.jobs_configured
    )


def submit(
    services: Services,
    operation: str,
    payload: dict[str, Any],
    *,
    tenant: str,
    request_id: str,
    deferred: bool,
    defer: Deferral,
    key_tags: Mapping[str, str] | None = None,
) -> Job:
    """Queue the request as a job; a deferred one waits one backoff step first (providers just failed)."""
    # Imported here: the operations are not free at cold start, and only async requests need them.
    from llm_gateway.operations import registry

    delay = min(services.settings.job_backoff_base_s, MAX_SQS_DELAY_S) if deferred else 0
    return registry.accept_job(
        services,
        operation,
        payload,
        tenant=tenant,
        request_id=request_id,
        source="deferred" if deferred else "async",
        delay_s=delay,
        defer=defer,
        key_tags=key_tags,
    )


def accepted(
    event: Mapping[str, Any], job: Job, *, preference: str | None = None, cause: GatewayError | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, body, headers) of the 202 answer for an accepted job."""
    body: dict[str, Any] = {"id": job.job_id, "object": "job", "status": job.status, "operation": job.operation}
    if cause is not None:
        body["deferred_because"] = cause.to_dict()
    headers = {"Location": location(event, job.job_id)}
    if preference:
        headers["Preference-Applied"] = preference
    return 202, body, headers


def location(event: Mapping[str, Any], job_id: str) -> str:
    """``/v1/jobs/{id}``, behind the stage name when called on the execute-api host (which has it in
    the path); custom domains and the local bridge have no stage segment."""
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    stage = (event.get("requestContext") or {}).get("stage")
    prefix = f"/{stage}" if stage and headers.get("host", "").endswith(".amazonaws.com") else ""
    return f"{prefix}/v1/jobs/{job_id}"
