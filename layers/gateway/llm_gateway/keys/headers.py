"""The gateway key a request presents: ``Authorization: Bearer <key>`` or ``x-api-key: <key>``.

The ``openai`` SDKs send the first, the ``anthropic`` SDK the second; both are accepted on every route.
When both are present and differ, ``x-api-key`` wins: clients configured the old way send the gateway
key there and a placeholder (``api_key="unused"``) as the bearer token.
"""

from __future__ import annotations

from collections.abc import Mapping

from llm_gateway.errors import InvalidApiKeyError, MissingApiKeyError

MAX_KEY_CHARS = 256  # longer is not a key this gateway issued; refused before it is hashed or cached


def presented_key(headers: Mapping[str, str] | None) -> str:
    """The key on the request; MissingApiKeyError (401) when there is none, InvalidApiKeyError for one
    that cannot be a key (too long, not printable ASCII)."""
    x_api_key = ""
    bearer = ""
    for name, value in (headers or {}).items():
        lowered = name.lower()
        if lowered == "x-api-key":
            x_api_key = (value or "").strip()
        elif lowered == "authorization":
            scheme, _, token = (value or "").strip().partition(" ")
            if scheme.lower() == "bearer":
                bearer = token.strip()
    key = x_api_key or bearer
    if not key:
        raise MissingApiKeyError(
            "no API key: send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'",
        )
    if len(key) > MAX_KEY_CHARS or not (key.isascii() and key.isprintable()) or " " in key:
        raise InvalidApiKeyError("the API key is not valid")
    return key
