"""One exception tree for the gateway.

Every error the core raises is a :class:`GatewayError`. Each carries a machine-readable ``code``,
the HTTP status a caller should see, and whether retrying the same call may succeed. Handlers map
these to HTTP answers (or let them propagate by class name to Step Functions) in one place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llm_gateway.quotas.model import RateLimitSnapshot


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""

    code: str = "gateway_error"
    http_status: int = 500
    retryable: bool = False

    def __init__(
        self, message: str, *, details: dict[str, Any] | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
        self.retry_after = retry_after  # seconds the caller should wait before retrying, when known
        self.attempts: list[Any] = []  # provider attempts made before the error, when there were any

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


# --- caller errors -------------------------------------------------------------------------------


class InvalidRequestError(GatewayError):
    code = "invalid_request"
    http_status = 400


class UnknownModelError(InvalidRequestError):
    code = "model_not_found"
    http_status = 404


class PayloadTooLargeError(InvalidRequestError):
    code = "payload_too_large"
    http_status = 413


class RouteNotFoundError(InvalidRequestError):
    """No route for this method and path (API Gateway answers the same for routes it does not know)."""

    code = "route_not_found"
    http_status = 404


class UnauthorizedError(GatewayError):
    code = "unauthorized"
    http_status = 401


class MissingApiKeyError(UnauthorizedError):
    """No gateway key on the request (neither ``Authorization: Bearer`` nor ``x-api-key``)."""

    code = "missing_api_key"


class InvalidApiKeyError(UnauthorizedError):
    """A key that is unknown, revoked, disabled or expired (the caller is not told which)."""

    code = "invalid_api_key"


class KeyNotFoundError(InvalidRequestError):
    """No gateway key with this id (key management)."""

    code = "key_not_found"
    http_status = 404


class ModelNotAllowedError(GatewayError):
    """The key's policy does not allow the model or tier asked for."""

    code = "model_not_allowed"
    http_status = 403


class KeyRateLimitedError(GatewayError):
    """The key is over its requests-per-minute or tokens-per-minute limit; ``retry_after`` says when
    its window resets. Same code as a provider's rate limit, so clients handle both alike."""

    code = "rate_limited"
    http_status = 429
    retryable = True


class KeyStoreUnavailableError(GatewayError):
    """The keys table could not be read or updated: keys fail closed, the caller may retry."""

    code = "keys_unavailable"
    http_status = 503
    retryable = True


class NoEligibleModelError(InvalidRequestError):
    """No catalog model satisfies the request's size and capability needs."""

    code = "no_eligible_model"
    http_status = 400


# --- budgets and deployment ---------------------------------------------------------------------


class BudgetExceededError(GatewayError):
    """The tenant's budget for the current window cannot cover this request's worst-case cost."""

    code = "budget_exceeded"
    http_status = 429


class BudgetUnavailableError(GatewayError):
    """The budget store could not be reached, and budgets fail closed (GATEWAY_BUDGET_FAIL_OPEN=false)."""

    code = "budget_unavailable"
    http_status = 503
    retryable = True


class ServiceUnavailableError(GatewayError):
    """An AWS dependency (DynamoDB, S3, SQS, Secrets Manager) timed out, throttled or failed: retry later.
    The message names no resource; operators find the details in the logs."""

    code = "service_unavailable"
    http_status = 503
    retryable = True


class NotConfiguredError(GatewayError):
    """A feature this deployment has not set up (e.g. GET /v1/usage without a usage table)."""

    code = "not_configured"
    http_status = 501


class ProviderKeysUnavailableError(GatewayError):
    """The provider keys could not be read (Secrets Manager or SSM failed or timed out): retry shortly."""

    code = "provider_keys_unavailable"
    http_status = 503
    retryable = True


# --- async jobs ----------------------------------------------------------------------------------


class JobNotFoundError(InvalidRequestError):
    """No such job for this tenant (another tenant's job is reported the same way)."""

    code = "job_not_found"
    http_status = 404


class JobsUnavailableError(GatewayError):
    """The job could not be stored or queued; nothing was accepted, the caller may retry."""

    code = "jobs_unavailable"
    http_status = 503
    retryable = True


class InternalError(GatewayError):
    """A bug or an unexpected failure: the caller sees only this code (details go to the logs)."""

    code = "internal_error"
    http_status = 500


# --- provider errors -----------------------------------------------------------------------------


class ProviderError(GatewayError):
    """A provider call failed. ``retryable`` says whether the same call may succeed later."""

    code = "provider_error"
    http_status = 502

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        model: str = "",
        status_code: int | None = None,
        details: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, details=details, retry_after=retry_after)
        self.provider = provider
        self.model = model
        self.status_code = status_code
        # What the error answer's rate-limit headers said (quotas/model.py RateLimitSnapshot); None: nothing.
        self.rate_limits: RateLimitSnapshot | None = None


class RateLimitedError(ProviderError):
    code = "rate_limited"
    http_status = 429
    retryable = True


class QuotaExhaustedError(RateLimitedError):
    """Every deployment of a model is out of quota (its declared limits, what the provider's headers said,
    or its 429) until ``resets_at``: no further provider call is made for that model."""

    resets_at: float = 0.0  # epoch seconds: the earliest time one of the model's deployments has room


class ProviderUnavailableError(ProviderError):
    """5xx, 503 or 529 overloaded: the provider cannot serve right now."""

    code = "provider_unavailable"
    http_status = 503
    retryable = True


class ProviderTimeoutError(ProviderError):
    code = "provider_timeout"
    http_status = 504
    retryable = True


class ProviderConnectionError(ProviderError):
    code = "provider_connection_error"
    http_status = 502
    retryable = True


class MalformedResponseError(ProviderError):
    code = "malformed_response"
    http_status = 502
    retryable = True


class ProviderBadRequestError(ProviderError):
    code = "provider_bad_request"
    http_status = 400


class ProviderAuthError(ProviderError):
    """The gateway's own key for this provider was refused: an operator problem, not the caller's."""

    code = "provider_auth_error"
    http_status = 502


class ContextTooLongError(ProviderError):
    code = "context_length_exceeded"
    http_status = 400


class ContentFilteredError(ProviderError):
    code = "content_filtered"
    http_status = 400


# --- documents and structured extraction ------------------------------------------------------------


class SchemaError(InvalidRequestError):
    """A JSON Schema that cannot be used: not valid JSON Schema, too deep, too large, or unsupported."""

    code = "invalid_schema"
    http_status = 400


class SchemaNotFoundError(SchemaError):
    code = "schema_not_found"
    http_status = 404


class DocumentNotFoundError(InvalidRequestError):
    code = "document_not_found"
    http_status = 404


class UnsupportedDocumentError(InvalidRequestError):
    """A document whose format cannot be read as text (e.g. a binary file, a PDF without a text layer)."""

    code = "unsupported_document"
    http_status = 415


class ExtractionFailedError(GatewayError):
    """The model's answers never validated against the schema within the reask limits.

    ``details["errors"]`` holds the last validation errors; ``attempts`` every provider call made.
    """

    code = "extraction_failed"
    http_status = 422


# --- guardrails (llm_gateway/guardrails) ---------------------------------------------------------


class GuardrailBlockedError(InvalidRequestError):
    """A guardrail in ``block`` mode found something in the request's input; no provider was called.

    ``details``: ``check`` (``pii``, ``injection``, ``denylist``, ``bedrock``), ``kind`` (what it
    found, e.g. ``email``), ``stage`` (``input``), never the matched text.
    """

    code = "guardrail_blocked"
    http_status = 400


class OutputBlockedError(GuardrailBlockedError):
    """A guardrail in ``block`` mode found something in the model's answer: the answer is withheld
    (``details.stage`` is ``output``). On a stream, the stream's last event."""

    http_status = 422


class GuardrailOverrideRefusedError(GatewayError):
    """The request asked for guardrail settings its key's policy does not let it choose (a key may
    allow no override, or only tightening)."""

    code = "guardrails_override_refused"
    http_status = 403


class GuardrailUnavailableError(GatewayError):
    """A remote guardrail (Amazon Bedrock Guardrails) could not give a verdict and the policy fails
    closed."""

    code = "guardrail_unavailable"
    http_status = 503
    retryable = True


# --- long-running work ---------------------------------------------------------------------------


class StreamInterruptedError(GatewayError):
    """A streamed answer broke after its first chunk reached the caller (the provider dropped the
    connection, sent a malformed event, or went quiet past the idle timeout). Sent as the stream's
    last event, never followed by ``[DONE]``; the attempt is in the ledger as ``truncated``."""

    code = "stream_interrupted"
    http_status = 502
    retryable = True


class DeadlineExceededError(GatewayError):
    """The work cannot finish in the time left in this invocation (checked before starting a phase).

    The hand-off signal for long documents: an entry point that can run the same operation
    asynchronously (the job queue) should defer it; otherwise the caller gets a 504 that is safe to
    retry (finished calls were cached). ``details``: ``phase``, ``estimated_s``, ``remaining_s``.
    """

    code = "deadline_exceeded"
    http_status = 504
    retryable = True


# --- outcome of a whole routed call --------------------------------------------------------------


class AllProvidersFailedError(GatewayError):
    """Every candidate was tried and failed on errors that waiting may fix. Carries the attempts.

    Build it with :meth:`for_last`, which picks the class that names the outcome (a subclass when every
    failure ended in a rate limit or a timeout; the provider's own error when the last one was final).
    """

    code = "providers_unavailable"
    http_status = 503
    retryable = True

    def __init__(self, message: str, *, attempts: list[Any], last_error: ProviderError) -> None:
        super().__init__(
            message,
            details={"attempts": len(attempts), "last_error": last_error.code},
            retry_after=last_error.retry_after,
        )
        self.attempts = list(attempts)
        self.last_error = last_error

    @classmethod
    def for_last(cls, message: str, *, attempts: list[Any], last_error: ProviderError) -> GatewayError:
        if not last_error.retryable:  # a final answer (bad request, auth, content filter): say that one
            last_error.attempts = list(attempts)
            return last_error
        if isinstance(last_error, RateLimitedError):
            return AllProvidersRateLimitedError(message, attempts=attempts, last_error=last_error)
        if isinstance(last_error, ProviderTimeoutError):
            return AllProvidersTimedOutError(message, attempts=attempts, last_error=last_error)
        return AllProvidersFailedError(message, attempts=attempts, last_error=last_error)

    @classmethod
    def after(cls, candidates: int, *, attempts: list[Any], last_error: ProviderError | None) -> GatewayError:
        """The error once every one of ``candidates`` models failed (or none could be called in time)."""
        if last_error is None:
            last_error = ProviderTimeoutError("no time left in this invocation to call a provider")
        return cls.for_last(
            f"all {candidates} candidate model(s) failed; last error: {last_error.message}",
            attempts=attempts,
            last_error=last_error,
        )


class AllProvidersRateLimitedError(AllProvidersFailedError):
    code = "rate_limited"
    http_status = 429


class AllProvidersTimedOutError(AllProvidersFailedError):
    code = "provider_timeout"
    http_status = 504
