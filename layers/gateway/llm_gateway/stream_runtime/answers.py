"""API Gateway's streaming integration format: a JSON prelude (status, headers, cookies), eight NUL bytes,
then the payload. A buffered proxy answer becomes prelude + its decoded body, so a route wired for
streaming answers non-streamed requests exactly as the buffered integration would."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

DELIMITER = b"\x00" * 8
MAX_PRELUDE_BYTES = 16 * 1024  # API Gateway reads the prelude within the first 16 KB of the stream
# Connection-level headers describe the runtime's hop, not the client's; API Gateway frames its own.
_HOP_BY_HOP = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})


class InvalidAnswer(ValueError):
    """The handler's return value cannot be written as an HTTP answer (API Gateway would answer 502)."""


def prelude(
    status_code: int,
    headers: dict[str, Any] | None,
    multi_value_headers: dict[str, Any] | None = None,
    cookies: list[str] | None = None,
) -> bytes:
    meta: dict[str, Any] = {
        "statusCode": status_code,
        "headers": {str(k): str(v) for k, v in (headers or {}).items() if str(k).lower() not in _HOP_BY_HOP},
    }
    if multi_value_headers:
        meta["multiValueHeaders"] = {
            str(k): [str(v) for v in values]
            for k, values in multi_value_headers.items()
            if str(k).lower() not in _HOP_BY_HOP
        }
    meta["cookies"] = list(cookies or [])
    encoded = json.dumps(meta, separators=(",", ":")).encode()
    if len(encoded) + len(DELIMITER) > MAX_PRELUDE_BYTES:
        raise InvalidAnswer(f"status and headers take {len(encoded)} bytes; API Gateway reads at most 16 KB")
    return encoded + DELIMITER


def buffered(result: dict[str, Any]) -> bytes:
    """A Lambda proxy answer (statusCode, headers, multiValueHeaders, body, isBase64Encoded) in one piece."""
    try:
        status = int(result.get("statusCode", 200))
    except (TypeError, ValueError) as exc:
        raise InvalidAnswer(f"statusCode {result.get('statusCode')!r} is not a number") from exc
    body = result.get("body")
    if body is not None and not isinstance(body, str):
        raise InvalidAnswer("body must be a string")
    if body and result.get("isBase64Encoded"):
        try:
            payload = base64.b64decode(body, validate=True)
        except binascii.Error as exc:
            raise InvalidAnswer("isBase64Encoded body is not base64") from exc
    else:
        payload = (body or "").encode()
    headers = result.get("headers")
    multi = result.get("multiValueHeaders")
    if (headers is not None and not isinstance(headers, dict)) or (multi is not None and not isinstance(multi, dict)):
        raise InvalidAnswer("headers and multiValueHeaders must be objects")
    return prelude(status, headers, multi) + payload
