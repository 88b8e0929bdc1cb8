"""The provider interface.

``Provider.complete`` owns the policy every adapter shares: one HTTP call with an explicit timeout,
transport failures and status codes mapped onto the gateway's exception tree, malformed bodies caught.
An adapter implements three small hooks: build the wire request, parse a success body, classify an error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from llm_gateway.errors import (
    MalformedResponseError,
    ProviderAuthError,
    ProviderBadRequestError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitedError,
)
from llm_gateway.guardrails.logs import loggable_text
from llm_gateway.models import JsonSchemaFormat, Message, ProviderRequest, ProviderResponse
from llm_gateway.quotas.headers import rate_limits, retry_after_seconds
from llm_gateway.quotas.model import RateLimitSnapshot
from llm_gateway.streaming.events import ProviderEvent

if TYPE_CHECKING:
    from llm_gateway.providers.stream_call import StreamDecoder

log = logging.getLogger("llm_gateway.providers")
_SAFE_TYPE = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # an error type such as rate_limit_error, not free text

# retry_after_seconds lives in quotas/headers.py now; still importable from here.
__all__ = ["Provider", "WireRequest", "json_instruction", "retry_after_seconds", "with_json_instruction"]


@dataclass(frozen=True)
class WireRequest:
    url: str
    headers: dict[str, str]
    body: dict[str, Any]
    content: bytes | None = None  # the body exactly as sent, when it had to be serialized first (to sign it)


class Provider(ABC):
    """One upstream API. Instances are cheap; the HTTP client is shared and passed in."""

    name: str = ""
    native_n: bool = False  # answers n > 1 choices in one call; otherwise the gateway makes n parallel calls
    # How its answers state the quota (quotas/headers.py): openai, azure, anthropic, gemini; "" none.
    rate_limit_dialect: str = ""

    def __init__(
        self, *, base_url: str, api_key: str | None, connect_timeout_s: float = 3.0, log_prompts: bool = False
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.connect_timeout_s = connect_timeout_s
        self.log_prompts = log_prompts  # the provider's own error text goes to logs only when asked

    async def complete(
        self, request: ProviderRequest, *, client: httpx.AsyncClient, timeout_s: float
    ) -> ProviderResponse:
        response = await self.send(self.build_request(request), request.model, client=client, timeout_s=timeout_s)
        data = self.json_body(response, request.model)
        try:
            result = self.parse_response(data, request)
            result.rate_limits = self.rate_limits(response)
            return result
        except ProviderError:
            raise
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise self.unexpected_shape(exc, request.model, response.status_code) from exc

    async def send(
        self, wire: WireRequest, model: str, *, client: httpx.AsyncClient, timeout_s: float
    ) -> httpx.Response:
        """One POST with an explicit timeout; a failure (transport or status >= 400) as a ProviderError.
        Shared by every call an adapter makes (completions, embeddings)."""
        timeout = httpx.Timeout(timeout_s, connect=min(self.connect_timeout_s, timeout_s))
        try:
            # httpx's read timeout restarts with every chunk received: a slow-drip answer could outlast
            # it many times over. The whole call, body included, is bounded here.
            async with asyncio.timeout(timeout_s):
                if wire.content is not None:
                    response = await client.post(wire.url, headers=wire.headers, content=wire.content, timeout=timeout)
                else:
                    response = await client.post(wire.url, headers=wire.headers, json=wire.body, timeout=timeout)
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise ProviderTimeoutError(
                f"{self.name} did not answer within {timeout_s:.1f}s", provider=self.name, model=model
            ) from exc
        except (httpx.TransportError, httpx.StreamError) as exc:  # connect errors, dropped sockets
            raise ProviderConnectionError(
                f"{self.name} connection failed: {type(exc).__name__}", provider=self.name, model=model
            ) from exc
        if response.status_code >= 400:
            raise self._error(response, model)
        return response

    def json_body(self, response: httpx.Response, model: str) -> Any:
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise MalformedResponseError(
                f"{self.name} answered with a body that is not JSON",
                provider=self.name,
                model=model,
                status_code=response.status_code,
            ) from exc

    def unexpected_shape(self, exc: Exception, model: str, status: int) -> MalformedResponseError:
        return MalformedResponseError(
            f"{self.name} answered with an unexpected shape: {type(exc).__name__}: {exc}",
            provider=self.name,
            model=model,
            status_code=status,
        )

    def stream(
        self,
        request: ProviderRequest,
        *,
        client: httpx.AsyncClient,
        timeout_s: float,
        first_byte_timeout_s: float,
        idle_timeout_s: float,
    ) -> AsyncIterator[ProviderEvent]:
        """The answer as it is generated: ``TextDelta``/``ToolCallDelta`` events, then one ``StreamEnd``.

        Failures before the first event raise exactly what ``complete`` raises for the same failure (so
        retries and fallback treat them alike). ``first_byte_timeout_s`` bounds the wait for the first
        event, ``idle_timeout_s`` the wait between two events, ``timeout_s`` the whole stream: each a
        ``ProviderTimeoutError``. A dropped connection or a stream that ends without the provider's end
        marker is a ``ProviderConnectionError``, an event that cannot be parsed a ``MalformedResponseError``,
        an error event inside the stream the error it names. Closing the iterator early (``aclose``)
        closes the provider connection, which stops generation.
        """
        from llm_gateway.providers.stream_call import stream_events

        return stream_events(
            self,
            request,
            client=client,
            timeout_s=timeout_s,
            first_byte_timeout_s=first_byte_timeout_s,
            idle_timeout_s=idle_timeout_s,
        )

    # --- hooks ----------------------------------------------------------------------------------

    @abstractmethod
    def build_request(self, request: ProviderRequest) -> WireRequest: ...

    @abstractmethod
    def parse_response(self, data: Any, request: ProviderRequest) -> ProviderResponse: ...

    def build_stream_request(self, request: ProviderRequest) -> WireRequest:
        """The wire request of a streamed call; adapters that stream override it."""
        raise NotImplementedError(f"{self.name} does not stream")

    def stream_decoder(self, request: ProviderRequest) -> StreamDecoder:
        """A fresh decoder holding one stream's state; adapters that stream override it."""
        raise NotImplementedError(f"{self.name} does not stream")

    def classify_error(self, status: int, message: str, error_type: str, body: Any) -> type[ProviderError] | None:
        """Provider-specific refinements; return None to fall back to the status-code mapping."""
        return None

    def error_message(self, body: Any) -> tuple[str, str]:
        """(message, type) from an error body; adapters override for their shapes."""
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            err = body["error"]
            return str(err.get("message", "")), str(err.get("type") or err.get("code") or err.get("status") or "")
        return "", ""

    def error_type_from_headers(self, headers: httpx.Headers) -> str:
        """The error type when the body does not carry one (Bedrock's ``x-amzn-errortype``)."""
        return ""

    def rate_limits(self, response: httpx.Response, body: Any = None) -> RateLimitSnapshot | None:
        """What the answer's headers (and, for a Gemini 429, its body) say about the quota; None: nothing."""
        return rate_limits(self.rate_limit_dialect, response.headers, status=response.status_code, body=body)

    # --- shared machinery -----------------------------------------------------------------------

    def _error(self, response: httpx.Response, model: str) -> ProviderError:
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        message, error_type = self.error_message(body)
        error_type = error_type or self.error_type_from_headers(response.headers)
        status = response.status_code
        cls = self.classify_error(status, message, error_type, body) or _by_status(status)
        # The provider's own text can quote the prompt or name the account ("organization org-..."): the
        # caller gets the status and the provider's error type; the text goes to the logs, and only
        # when prompt logging is on.
        kind = error_type if _SAFE_TYPE.fullmatch(error_type) else ""
        text = f"{self.name} answered {status} {response.reason_phrase}".rstrip() + (f" ({kind})" if kind else "")
        log.warning(
            "provider error",
            extra={
                "provider": self.name,
                "model": model,
                "status": status,
                "error_type": error_type[:100],
                **({"provider_message": loggable_text(message[:1000])} if self.log_prompts else {}),
            },
        )
        kwargs: dict[str, Any] = {"provider": self.name, "model": model, "status_code": status}
        now = time.time()
        snapshot = rate_limits(self.rate_limit_dialect, response.headers, status=status, body=body, now=now)
        if cls in (RateLimitedError, ProviderUnavailableError):
            waits = snapshot.retry_after_at if snapshot is not None else None
            kwargs["retry_after"] = round(waits - now, 3) if waits is not None else None
        error = cls(text[:500], **kwargs)
        error.rate_limits = snapshot
        return error


def _by_status(status: int) -> type[ProviderError]:
    if status == 429:
        return RateLimitedError
    if status in (401, 403):
        return ProviderAuthError
    if status == 408:
        return ProviderTimeoutError
    if status == 409 or status >= 500:
        return ProviderUnavailableError
    return ProviderBadRequestError


def json_instruction(request: ProviderRequest) -> str | None:
    """The system instruction used when a JSON answer is wanted but the native mode is not used."""
    fmt = request.response_format
    if fmt is None or request.native_structured:
        return None
    if isinstance(fmt, JsonSchemaFormat):
        schema = json.dumps(fmt.json_schema, separators=(",", ":"))
        return (
            "Answer with a single JSON object that is valid against this JSON Schema, and nothing else "
            f"(no prose, no code fences):\n{schema}"
        )
    return "Answer with a single JSON object and nothing else (no prose, no code fences)."


def with_json_instruction(request: ProviderRequest) -> list[Message]:
    """Messages with the JSON instruction prepended as a system message, when one is needed."""
    instruction = json_instruction(request)
    if instruction is None:
        return request.messages
    return [Message(role="system", content=instruction), *request.messages]
