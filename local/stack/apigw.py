"""API Gateway REST (v1) translation: Lambda proxy events in, proxy responses out."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any
from urllib.parse import parse_qsl

from local.context import ACCOUNT_ID
from local.routes import RouteMatch

# --------------------------------------------------------------------------- API Gateway translation


class MalformedProxyResponse(ValueError):
    """The handler's return value is not a Lambda proxy response (API Gateway answers 502)."""


def api_gateway_event(
    *,
    match: RouteMatch,
    method: str,
    path: str,
    query: str,
    headers: list[tuple[str, str]],
    body: bytes,
    source_ip: str,
    stage: str,
    api_key: str | None,
    tenant: str | None,
) -> dict[str, Any]:
    """A REST API (v1) Lambda proxy event, as API Gateway sends it."""
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for name, value in headers:
        single[name] = value
        multi.setdefault(name, []).append(value)
    pairs = parse_qsl(query, keep_blank_values=True)
    query_multi: dict[str, list[str]] = {}
    for name, value in pairs:
        query_multi.setdefault(name, []).append(value)
    text, is_b64 = _event_body(body)
    now = time.time()
    request_id = str(uuid.uuid4())
    user_agent = next((v for k, v in headers if k.lower() == "user-agent"), None)
    return {
        "resource": match.route.path,
        "path": path,
        "httpMethod": method,
        "headers": single or None,
        "multiValueHeaders": multi or None,
        "queryStringParameters": {k: v[-1] for k, v in query_multi.items()} or None,
        "multiValueQueryStringParameters": query_multi or None,
        "pathParameters": match.path_parameters or None,
        "stageVariables": None,
        "requestContext": {
            "resourceId": "local",
            "resourcePath": match.route.path,
            "httpMethod": method,
            "extendedRequestId": request_id[:16],
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "path": f"/{stage}{path}",
            "accountId": ACCOUNT_ID,
            "protocol": "HTTP/1.1",
            "stage": stage,
            "domainPrefix": "localhost",
            "requestTimeEpoch": int(now * 1000),
            "requestId": request_id,
            "identity": {
                "cognitoIdentityPoolId": None,
                "accountId": None,
                "cognitoIdentityId": None,
                "caller": None,
                "apiKey": api_key,
                "apiKeyId": tenant,  # the gateway derives the tenant from the API key's id
                "sourceIp": source_ip,
                "principalOrgId": None,
                "accessKey": None,
                "cognitoAuthenticationType": None,
                "cognitoAuthenticationProvider": None,
                "userArn": None,
                "userAgent": user_agent,
                "user": None,
            },
            "domainName": "localhost",
            "apiId": match.route.api_id.lower()[:10],
        },
        "body": text,
        "isBase64Encoded": is_b64,
    }


def _event_body(body: bytes) -> tuple[str | None, bool]:
    if not body:
        return None, False
    try:
        return body.decode("utf-8"), False
    except UnicodeDecodeError:
        return base64.b64encode(body).decode("ascii"), True


def http_response(result: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """Translate a Lambda proxy response into (status, headers, body) like API Gateway does."""
    if not isinstance(result, dict):
        raise MalformedProxyResponse(f"expected a dict, got {type(result).__name__}")
    try:
        status = int(result.get("statusCode", 200))
    except (TypeError, ValueError) as exc:
        raise MalformedProxyResponse(f"bad statusCode {result.get('statusCode')!r}") from exc
    body = result.get("body")
    if body is not None and not isinstance(body, str):
        raise MalformedProxyResponse("body must be a string")
    raw = base64.b64decode(body) if body and result.get("isBase64Encoded") else (body or "").encode()
    multi = result.get("multiValueHeaders") or {}
    names_in_multi = {name.lower() for name in multi}
    out = [(str(k), str(v)) for k, v in (result.get("headers") or {}).items() if k.lower() not in names_in_multi]
    out += [(str(k), str(v)) for k, values in multi.items() for v in values]
    hop_by_hop = {"content-length", "connection", "transfer-encoding", "keep-alive"}
    out = [(k, v) for k, v in out if k.lower() not in hop_by_hop]
    if not any(k.lower() == "content-type" for k, _ in out):
        out.append(("Content-Type", "application/json"))  # API Gateway's default
    return status, out, raw


# The errors the bridge answers itself, in the API's documented shape (template.yaml's GatewayResponses
# give API Gateway the same bodies): (status, code, message, API Gateway's x-amzn-ErrorType).
MISSING_API_KEY = (401, "missing_api_key", "this API needs an API key in the x-api-key header", "ForbiddenException")
INVALID_API_KEY = (401, "invalid_api_key", "the x-api-key header names no known API key", "ForbiddenException")
ROUTE_NOT_FOUND = (404, "route_not_found", "no route for this method and path", "MissingAuthenticationTokenException")
PAYLOAD_TOO_LARGE = (413, "payload_too_large", "the request body is over API Gateway's 10 MB", "RequestTooLarge")
RATE_LIMITED = (429, "rate_limited", "too many requests for this API key; slow down", "TooManyRequestsException")
GATEWAY_TIMEOUT = (504, "gateway_timeout", "the function did not answer within {timeout:g} s", "IntegrationTimeout")
INTEGRATION_FAILED = (
    502,
    "internal_error",
    "the function failed or gave no valid answer",
    "InternalServerErrorException",
)
MALFORMED_REQUEST = (400, "invalid_request", "the HTTP request is malformed: {detail}", "BadRequestException")

GatewayError = tuple[int, str, str, str]


def gateway_error(error: GatewayError, **details: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """``{"error": {"code", "message"}}`` with API Gateway's error-type and request-id headers."""
    status, code, message, error_type = error
    body = json.dumps({"error": {"code": code, "message": message.format(**details)}}).encode()
    headers = [("Content-Type", "application/json"), ("x-amzn-ErrorType", error_type)]
    return status, [*headers, ("x-amzn-RequestId", str(uuid.uuid4()))], body
