"""Framing shared by every entry point: body limits, validation errors, tenant identity, error bodies.

Plain functions over dicts, so the handlers stay thin and this stays testable without Lambda.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .deadline import Deadline
from .errors import GatewayError, InvalidRequestError, PayloadTooLargeError, UnauthorizedError
from .seams import RequestContext

M = TypeVar("M", bound=BaseModel)


def parse_json_body(body: str | None, *, max_bytes: int) -> Any:
    if body is None or not body.strip():
        raise InvalidRequestError("the request body is empty; send a JSON object", details={"param": "body"})
    size = len(body.encode("utf-8"))
    if size > max_bytes:
        raise PayloadTooLargeError(
            f"the request body is {size} bytes; the limit is {max_bytes}", details={"limit": max_bytes}
        )
    try:
        return json.loads(body)
    except RecursionError:  # json's decoder recurses per nesting level
        raise InvalidRequestError("the request body is nested too deeply", details={"param": "body"}) from None
    except json.JSONDecodeError as exc:
        raise InvalidRequestError(
            f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            details={"param": "body"},
        ) from None


def validate(model: type[M], data: Any) -> M:
    """Validate into ``model``; pydantic errors become one readable InvalidRequestError."""
    if not isinstance(data, dict):
        raise InvalidRequestError("the request body must be a JSON object", details={"param": "body"})
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [{"param": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]} for e in exc.errors()]
        first = problems[0]
        raise InvalidRequestError(
            f"{first['param']}: {first['message']}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
            details={"param": first["param"], "errors": problems[:20]},
        ) from None


def tenant_from_request_context(request_context: dict[str, Any] | None) -> str:
    """The caller's tenant: a Lambda authorizer's ``tenant`` claim, else the API key's id.

    Never read from the body or headers: those are the caller's to forge.
    """
    ctx = request_context or {}
    authorizer = ctx.get("authorizer") or {}
    if isinstance(authorizer, dict):
        for key in ("tenant", "tenantId", "tenant_id"):
            if authorizer.get(key):
                return str(authorizer[key])
    identity = ctx.get("identity") or {}
    if isinstance(identity, dict) and identity.get("apiKeyId"):
        return str(identity["apiKeyId"])
    raise UnauthorizedError("no tenant identity on this request (an API key is required)")


def error_body(err: GatewayError) -> dict[str, Any]:
    """The gateway's own error shape: ``{"error": {"code", "message", "details"?}}``."""
    return {"error": err.to_dict()}


def request_context_for(
    *,
    tenant: str,
    request_id: str,
    remaining_ms: int | None,
    margin_s: float,
    operation: str,
    log_prompts: bool,
) -> RequestContext:
    remaining_s = (remaining_ms / 1000.0) if remaining_ms is not None else 60.0
    return RequestContext(
        tenant=tenant,
        request_id=request_id,
        deadline=Deadline(max(remaining_s - margin_s, 0.0)),
        operation=operation,
        log_prompts=log_prompts,
    )


_NAMED: dict[str, type[Exception]] = {}


def named_error(err: GatewayError) -> Exception:
    """An exception whose class name is the error code in CamelCase (``rate_limited`` -> ``RateLimitedError``).

    Lambda reports the class name as ``errorType``, which is what a Step Functions ``Retry``/``Catch``
    matches on; the message is the JSON error body, which lands in the state's ``Cause``.
    """
    name = "".join(part.capitalize() for part in err.code.split("_")) + "Error"
    cls = _NAMED.get(name)
    if cls is None:
        cls = type(name, (Exception,), {"__module__": "llm_gateway"})
        _NAMED[name] = cls
    body = err.to_dict()
    body["retryable"] = err.retryable
    return cls(json.dumps(body))
