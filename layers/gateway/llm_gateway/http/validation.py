"""Request bodies for Powertools' validation, read the way the gateway reads them.

Powertools' event handler validates a route's body against the pydantic model in the route's signature
(``enable_validation=True``). It would parse the body itself, by ``Content-Type``, with ``json.loads``;
the gateway reads every body as JSON whatever its ``Content-Type`` (as it always has), and through
:func:`framing.parse_json_body`: a size limit per route, base64 and UTF-8 checked, depth bounded, and
values JSON cannot carry (NaN, 1e999, overlong integers, lone surrogates) refused with a 400 naming
where they are. Validation errors become the gateway's own 400 (``details.param``), in linear time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from aws_lambda_powertools.event_handler.middlewares.openapi_validation import (
    OpenAPIRequestValidationMiddleware,
    _request_body_to_args,
    _request_params_to_args,
)
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError as RequestValidationError

from llm_gateway.errors import InvalidRequestError, PayloadTooLargeError
from llm_gateway.http import framing

BODY_CONTEXT_KEY = "gateway_json_body"  # in the resolver's per-request context (cleared after each request)


class _RouteArgs(dict[str, Any]):
    """Validated route arguments. Powertools logs them at DEBUG in an f-string, formatted whatever the log
    level: a short repr keeps the request's model (a prompt, a 6 MB document) from being rendered on every
    request, and out of any log."""

    def __repr__(self) -> str:
        return f"<{len(self)} validated route arguments>"

    __str__ = __repr__


class GatewayBodyValidation(OpenAPIRequestValidationMiddleware):
    """Powertools' request validation, with the gateway's body reader in place of its own."""

    def __init__(
        self,
        limit_for: Callable[[str], int],
        documents: frozenset[str],
        *,
        before: Callable[[Any], object] = lambda _: None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._limit_for = limit_for  # route (resource path) -> body limit in bytes
        self._documents = documents  # routes whose documents may come by S3 reference instead
        self._before = before  # the key check: an unauthenticated body is never read

    def handler(self, app: Any, next_middleware: Any) -> Any:
        self._before(app)
        route = app.context["_route"]
        dependant = route.dependant
        if dependant.query_params or dependant.header_params or dependant.cookie_params:
            return super().handler(app, cast(Any, lambda app: self._call_route(app, next_middleware)))
        # The gateway's routes take a body and path parameters only: validate just those (Powertools'
        # own handler also normalises every header, query and cookie value on every request).
        values, errors = _request_params_to_args(dependant.path_params, app.context["_route_args"])
        if dependant.body_params:
            body_values, body_errors = _request_body_to_args(
                required_params=dependant.body_params, received_body=self._get_body(app)
            )
            values.update(body_values)
            errors.extend(body_errors)
        if errors:
            raise RequestValidationError(errors)
        app.context["_route_args"] = values
        return self._call_route(app, next_middleware)

    @staticmethod
    def _call_route(app: Any, next_middleware: Any) -> Any:
        app.context["_route_args"] = _RouteArgs(app.context.get("_route_args") or {})
        return next_middleware(app)

    def _get_body(self, app: Any) -> dict[str, Any]:
        event = app.current_event
        route = event.raw_event.get("resource") or event.path
        text = framing.read_body(event.raw_event)
        try:
            data = framing.parse_json_body(text, max_bytes=self._limit_for(route))
        except PayloadTooLargeError as err:
            if route not in self._documents:
                raise
            raise PayloadTooLargeError(
                f"{err.message} (a synchronous Lambda invocation carries 6 MB); upload a larger document to the "
                'documents bucket under incoming/tenants/<tenant>/ and send {"s3": {"key": ...}} instead',
                details={**err.details, "param": "body"},
            ) from None
        if not isinstance(data, dict):
            raise InvalidRequestError("the request body must be a JSON object", details={"param": "body"})
        app.append_context(**{BODY_CONTEXT_KEY: data})  # the route reads it as parsed here, never twice
        return data


def invalid_request(exc: RequestValidationError) -> InvalidRequestError:
    """Powertools' validation errors as the gateway's 400: ``loc`` starts with where the value was
    (``body``, ``query``, ``path``), which the caller's ``param`` leaves out."""
    return framing.invalid_request(exc.errors(), skip=1)
