"""The one HTTP edge every function uses.

A function builds one :class:`HttpEdge`, declares its routes with ``edge.post``/``edge.get`` (Powertools'
REST resolver, each route with ``enable_validation=True``: bodies are validated against the pydantic model
in the route's signature), and exports ``events.lambda_handler(edge, ...)``. The edge owns everything
that is the same on every route:

* the caller: the gateway key (``Authorization: Bearer`` or ``x-api-key``) verified before the body is
  read; the tenant and the key's tags come from it only, never the body (:mod:`llm_gateway.http.key_checks`);
* on the routes that call providers, the key's model policy and per-minute limits (``serve(limits=...)``),
  and the actual tokens settled after the response;
* body decoding and limits (``GATEWAY_MAX_BODY_BYTES`` on chat routes, the synchronous Lambda payload on
  the document routes), validation errors as a 400 naming ``details.param``;
* the deadline: API Gateway's 29 s counted from ``requestTimeEpoch`` on every HTTP route, except the
  routes wired for response streaming (``streamed_paths``, under the streaming runtime): the Lambda's
  own remaining time for a streamed answer, ``GATEWAY_UNSTREAMED_DEADLINE`` for one answered in one piece;
* streamed answers (:mod:`llm_gateway.http.streamed`): a route hands its ``StreamingResponse`` to
  ``respond_streaming`` and ``resolve`` returns it in place of the resolver's proxy dict;
* ``Prefer: respond-async`` / ``defer-on-failure`` (RFC 7240), the ``x-gateway-*`` and ``x-request-id``
  headers;
* errors in one documented shape (see :mod:`llm_gateway.http.answers`), unknown routes a 404
  ``route_not_found``; direct and event invocations are in :mod:`llm_gateway.http.events`.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.metrics import MetricUnit

from llm_gateway import after_response
from llm_gateway.errors import DeadlineExceededError, GatewayError
from llm_gateway.http import answers, framing, key_checks, observe, prefer
from llm_gateway.http.answers import DEFERRED_METRICS
from llm_gateway.interfaces import RequestContext
from llm_gateway.streaming.response import StreamingResponse
from llm_gateway.wiring import services

if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError

    from llm_gateway.guardrails.request import GuardrailRequest
    from llm_gateway.keys import Admission, VerifiedKey

T = TypeVar("T")
Answer = tuple[dict[str, Any], dict[str, str]]  # (body, headers) of a 200

OPENAPI_PATH = "/v1/openapi.json"
STREAM_MARKER = "x-gateway-stream-pending"  # on the resolver's answer only, never sent


class HttpEdge:
    """One function's HTTP edge: ``app`` for its routes, ``logger`` and ``metrics`` for its lines."""

    def __init__(
        self,
        *,
        openai_paths: Iterable[str] | Callable[[str], bool] = (),
        anthropic_paths: Callable[[str], bool] = lambda _: False,
        document_paths: Iterable[str] = (),
        failure_metric: str | None = None,
        streamed_paths: Iterable[str] = (),
    ) -> None:
        self.logger = Logger()
        self.failure_metric = failure_metric  # counted for each 5xx and 422 answer
        self.metrics = Metrics()
        # Routes answering errors in OpenAI's shape: paths, or a predicate over the path (/v1/models/{id}).
        self.openai_style = openai_paths if callable(openai_paths) else frozenset(openai_paths).__contains__
        self.anthropic_style = anthropic_paths  # the same, in Anthropic's shape (/v1/messages)
        self.document_paths = frozenset(document_paths)
        # Routes API Gateway sends through its response-streaming integration (template.yaml).
        self.streamed_paths = frozenset(streamed_paths)
        self._pending = threading.local()  # a route's StreamingResponse, until ``resolve`` returns it
        # Validation is enabled route by route (``post``/``get``): Powertools then imports and builds its
        # validation machinery on the first request rather than at cold start.
        self.app = APIGatewayRestResolver()
        self.app.exception_handler(GatewayError)(self._gateway_error)
        self.app.exception_handler(Exception)(self._unexpected_error)
        self.app.not_found(self._route_not_found)
        self._ready = False
        answers.share_log_handler(self.logger)

    def post(self, path: str, **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """``app.post`` with Powertools' validation of the route's body against its pydantic model."""
        return self.app.post(path, enable_validation=True, **options)

    def get(self, path: str, **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """``app.get`` with Powertools' validation of the route's path and query parameters."""
        return self.app.get(path, enable_validation=True, **options)

    def resolve(self, event: dict[str, Any], context: Any) -> dict[str, Any] | StreamingResponse:
        if not self._ready:  # the first request: validation with the gateway's body reader
            from llm_gateway.http import validation

            middleware = validation.GatewayBodyValidation(
                self.body_limit, self.document_paths, before=lambda _: self.key()
            )
            self.app._request_validation_middleware = middleware
            self.app.exception_handler(validation.RequestValidationError)(self._validation_error)
            self._ready = True
        self._pending.response = None
        try:
            answer = self.app.resolve(event, context)
            pending: tuple[str, StreamingResponse] | None = self._pending.response
            self._pending.response = None
        finally:
            if (leftover := self._pending.response) is not None:  # the resolver failed after the route
                self._pending.response = None
                leftover[1].body.close()
        if pending is None:
            return answer
        token, streaming = pending
        if token in (answer.get("multiValueHeaders") or {}).get(STREAM_MARKER, ()):
            return streaming
        streaming.body.close()  # the route's answer was replaced (an error after it): never sent
        return answer

    # ------------------------------------------------------------------ the request

    def body_limit(self, route: str) -> int:
        config = services().settings
        return config.document_max_body_bytes if route in self.document_paths else config.max_body_bytes

    @property
    def event(self) -> dict[str, Any]:
        return self.app.current_event.raw_event

    def key(self) -> VerifiedKey:
        """The request's verified gateway key (checked once per request, before its body is read)."""
        found: VerifiedKey | None = self.app.context.get(key_checks.KEY_CONTEXT)
        if found is None:
            found = key_checks.authenticate(self.event, services())
            self.app.append_context(**{key_checks.KEY_CONTEXT: found})  # type: ignore[no-untyped-call]
        return found

    def tenant(self) -> str:
        return self.key().tenant

    def admit(self, models: Sequence[str], estimated_tokens: int) -> Admission:
        """The key's model policy, then its per-minute limits (403 ``model_not_allowed``, 429 ``rate_limited``)."""
        return key_checks.admit(self.key(), models, estimated_tokens, services())

    def streams_here(self) -> bool:
        """Whether this request came through API Gateway's response-streaming integration: a route wired
        for it, in a function running under the streaming runtime."""
        from llm_gateway.http.streamed import streaming_runtime

        route = self.event.get("resource") or self.app.current_event.path
        return route in self.streamed_paths and streaming_runtime()

    def request_id(self) -> str:
        return str((self.event.get("requestContext") or {}).get("requestId") or "")

    def body(self) -> dict[str, Any]:
        """The JSON object as the caller sent it (already read and validated for the route)."""
        data: dict[str, Any] = self.app.context["gateway_json_body"]  # see validation.BODY_CONTEXT_KEY
        return data

    def context(self, operation: str, *, streaming: bool = False) -> RequestContext:
        """The request's context: its tenant and its deadline, less the safety margin. A streamed answer
        has the Lambda's own time (API Gateway streams for up to 15 minutes); a buffered route has API
        Gateway's 29 s from when it received the request; a request answered in one piece on a streamed
        route has ``GATEWAY_UNSTREAMED_DEADLINE`` (29 s, as on a buffered route, unless raised). Always
        bounded by the Lambda's own time."""
        budget_ms: int | None = None
        if not streaming:
            limit_s = services().settings.unstreamed_deadline_s if self.streams_here() else None
            budget_ms = framing.API_GATEWAY_TIMEOUT_MS if limit_s is None else int(limit_s * 1000)
        lambda_context = self.app.lambda_context
        remaining = lambda_context.get_remaining_time_in_millis() if lambda_context is not None else None
        epoch = (self.event.get("requestContext") or {}).get("requestTimeEpoch")
        key = self.key()
        ctx = answers.request_context(
            operation,
            tenant=key.tenant,
            request_id=self.request_id(),
            remaining_ms=framing.http_remaining_ms(remaining, request_epoch_ms=epoch, budget_ms=budget_ms),
            tags=key.context_tags(),
        )
        ctx.allows_model = key.policy.allows_model  # automatic fallbacks stay within the key's models
        ctx.guardrails = self.guardrails()
        return ctx

    def job_tags(self) -> dict[str, str]:
        """What a job submitted now carries to the worker: the key's tags and the guardrail policy
        resolved now (the worker has neither the key's policy nor the request's headers)."""
        return {**self.key().context_tags(), "guardrails": self.guardrails().policy.describe()}

    def guardrails(self) -> GuardrailRequest:
        """The request's guardrail policy: default, key, then ``x-gateway-guardrails`` / ``guardrails``."""
        from llm_gateway.http import guardrails

        route = self.event.get("resource") or self.app.current_event.path
        body = self.app.context.get("gateway_json_body")
        headers = self.app.current_event.headers
        return guardrails.resolve(headers, body, route, self.key().policy, services())

    # ------------------------------------------------------------------ the answer

    def json(self, status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> Response[str]:
        return Response(
            status_code=status,
            content_type="application/json",
            body=answers.encode(body),
            headers={**(headers or {}), "x-request-id": self.request_id()},
        )

    def respond_streaming(self, response: StreamingResponse) -> Response[str]:
        """Hand a streamed answer through the resolver: it keeps the response and returns a marker that
        ``resolve`` swaps for it (Powertools' routes must return a ``Response``)."""
        token = uuid.uuid4().hex
        self._pending.response = (token, response)
        return Response(status_code=response.status_code, body="", headers={STREAM_MARKER: token})

    def serve(
        self,
        operation: str,
        job_input: Callable[[], dict[str, Any]],
        run: Callable[[RequestContext], T],
        answer: Callable[[T], Answer],
        *,
        limits: tuple[Sequence[str], int],
        spent: Callable[[T], int],
        deadline_to_job: bool = False,
    ) -> Response[str]:
        """Run ``operation`` for this request, or queue it as a job: always with ``Prefer: respond-async``;
        with ``Prefer: defer-on-failure`` when retries and fallbacks ran out on a retryable error; and,
        with ``deadline_to_job``, when the work cannot finish before API Gateway gives up.

        ``limits`` (the names asked for, the estimated tokens) are admitted against the key first;
        ``spent`` gives the tokens a result used, settled after the response (0 on failure). A request
        that becomes a job keeps its reservation: the job spends it later."""
        current = services()
        admission = self.admit(*limits)
        if prefer.wants_async(self.event, current):
            return self.accept_job(operation, job_input(), prefer.RESPOND_ASYNC, None)
        tokens, handed_over = 0, False
        try:
            result = run(self.context(operation))
            tokens = spent(result)
        except DeadlineExceededError as err:
            if deadline_to_job and current.jobs_configured:  # no opt-in needed: the alternative is an error
                handed_over = True
                return self.accept_job(operation, job_input(), None, err)
            if not prefer.should_defer(self.event, err, current):
                raise
            handed_over = True
            return self.accept_job(operation, job_input(), prefer.DEFER_ON_FAILURE, err)
        except GatewayError as err:
            if not prefer.should_defer(self.event, err, current):
                raise
            handed_over = True
            return self.accept_job(operation, job_input(), prefer.DEFER_ON_FAILURE, err)
        finally:
            if not handed_over:
                key_checks.settle_later(admission, tokens, current)
        body, headers = answer(result)
        return self.json(200, body, headers)

    def accept_job(
        self, operation: str, payload: dict[str, Any], preference: str | None, cause: GatewayError | None
    ) -> Response[str]:
        job = prefer.submit(
            services(),
            operation,
            payload,
            tenant=self.tenant(),
            key_tags=self.job_tags(),
            request_id=self.request_id(),
            deferred=preference == prefer.DEFER_ON_FAILURE,  # providers just failed: wait a backoff step
            defer=after_response.current(),
        )
        if cause is not None:
            self.logger.info(f"{operation} deferred", tenant=job.tenant, job_id=job.job_id, code=cause.code)
            metric = DEFERRED_METRICS.get(operation, "DeferredRequests")
            self.metrics.add_metric(name=metric, unit=MetricUnit.Count, value=1)
        return self.json(*prefer.accepted(self.event, job, preference=preference, cause=cause))

    # ------------------------------------------------------------------ errors

    def _gateway_error(self, err: GatewayError) -> Response[str]:
        if err.http_status >= 500 or err.http_status == 422:
            self.logger.warning("request failed", code=err.code, error=err.message, attempts=len(err.attempts))
            if self.failure_metric:
                self.metrics.add_metric(name=self.failure_metric, unit=MetricUnit.Count, value=1)
        self._count_failure(err)
        path = self.app.current_event.path
        body = answers.error_body(err, openai_style=self.openai_style(path), anthropic_style=self.anthropic_style(path))
        return self.json(err.http_status, body, answers.error_headers(err))

    def _count_failure(self, err: GatewayError) -> None:
        """The operator metrics of a provider route's error answer (other routes' errors are not requests
        the dashboard counts)."""
        operation = observe.OPERATION_ROUTES.get(self.event.get("resource") or self.app.current_event.path)
        if operation is not None:
            key: VerifiedKey | None = self.app.context.get(key_checks.KEY_CONTEXT)
            tenant, key_id = (key.tenant, key.key_id) if key is not None else ("", "")
            observe.failure(operation, err, tenant=tenant, key_id=key_id, request_id=self.request_id())

    def _validation_error(self, exc: RequestValidationError) -> Response[str]:
        from llm_gateway.http.validation import invalid_request

        return self._gateway_error(invalid_request(exc))

    def _unexpected_error(self, exc: Exception) -> Response[str]:
        framing.log_unexpected(self.logger, exc, log_prompts=services().settings.log_prompts)
        return self._gateway_error(answers.internal_error())

    def _route_not_found(self, _: Exception) -> Response[str]:
        return self._gateway_error(answers.route_not_found(self.app.current_event.http_method, self.event.get("path")))
