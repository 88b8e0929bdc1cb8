"""One streamed provider call: the HTTP request, the timeouts, frames in, provider events out.

What every adapter shares lives here; an adapter supplies a ``StreamDecoder`` that turns the provider's
frames (Server-Sent Events by default; Bedrock's binary eventstream messages) into
``TextDelta``/``ToolCallDelta`` events and one ``StreamEnd``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from llm_gateway.errors import (
    MalformedResponseError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
)
from llm_gateway.guardrails.logs import loggable_text
from llm_gateway.providers.sse import SSEParser
from llm_gateway.streaming.events import ProviderEvent, StreamEnd

if TYPE_CHECKING:
    from llm_gateway.models import ProviderRequest
    from llm_gateway.providers.base import Provider

log = logging.getLogger("llm_gateway.providers")
_DRAIN_S = 0.05  # bounds the wait for the body's end after the provider's end marker
_SHAPE_ERRORS = (KeyError, IndexError, TypeError, ValueError, AttributeError)


class FrameParser(Protocol):
    """Splits the body's bytes, arriving in pieces cut anywhere, into the wire's frames."""

    def feed(self, chunk: bytes) -> list[Any]:
        """The frames completed by ``chunk``; a ``ValueError`` for bytes that cannot be framed."""
        ...

    @property
    def pending(self) -> bool:
        """Bytes of an unfinished frame are held."""
        ...


class StreamDecoder:
    """The per-stream state of one adapter: fed every frame in order, it yields what the caller sees.

    ``decode_frame`` yields at most one ``StreamEnd``, on the provider's end marker, and sets ``ended``;
    ``at_eof`` is asked when the connection closes before that (a provider whose end marker is the
    close itself answers its ``StreamEnd`` there; the others return None: the stream was cut). The
    frames are Server-Sent Events unless ``content_type`` and ``frames`` say otherwise; an SSE
    adapter implements ``decode(event, data)``.
    """

    ended = False
    content_type = "text/event-stream"
    end_marker = "its end"  # named when the connection closes before it

    def frames(self) -> FrameParser:
        return SSEParser()

    def on_response(self, response: httpx.Response) -> None:
        """The successful response, before its first frame (headers such as a request id)."""

    def decode_frame(self, frame: Any) -> Iterable[ProviderEvent]:
        return self.decode(frame.event, frame.data)

    def decode(self, event: str, data: str) -> Iterable[ProviderEvent]:
        raise NotImplementedError

    def at_eof(self) -> StreamEnd | None:
        return None


def load_json(data: str) -> Any:
    """An event's data as JSON (a ``ValueError`` for the caller to report as malformed)."""
    return json.loads(data)


async def stream_events(
    provider: Provider,
    request: ProviderRequest,
    *,
    client: httpx.AsyncClient,
    timeout_s: float,
    first_byte_timeout_s: float,
    idle_timeout_s: float,
) -> AsyncIterator[ProviderEvent]:
    name, model = provider.name, request.model
    wire = provider.build_stream_request(request)
    decoder = provider.stream_decoder(request)
    loop = asyncio.get_running_loop()
    started = loop.time()
    end_by = started + timeout_s
    first_by = min(started + first_byte_timeout_s, end_by)

    def timed_out(deadline: float, got_event: bool) -> ProviderTimeoutError:
        if deadline >= end_by:
            text = f"{name} did not finish the stream within {timeout_s:.1f}s"
        elif got_event:
            text = f"{name} sent no event for {idle_timeout_s:.1f}s (idle timeout)"
        else:
            text = f"{name} sent no first event within {first_byte_timeout_s:.1f}s (first-byte timeout)"
        return ProviderTimeoutError(text, provider=name, model=model)

    def broken(exc: Exception) -> ProviderConnectionError:
        return ProviderConnectionError(
            f"{name} stream connection failed: {type(exc).__name__}", provider=name, model=model
        )

    http_timeout = httpx.Timeout(timeout_s, connect=min(provider.connect_timeout_s, timeout_s))
    if wire.content is not None:
        outgoing = client.build_request(
            "POST", wire.url, headers=wire.headers, content=wire.content, timeout=http_timeout
        )
    else:
        outgoing = client.build_request("POST", wire.url, headers=wire.headers, json=wire.body, timeout=http_timeout)
    response: httpx.Response | None = None
    snapshot = None  # the response headers' word on the quota, once they arrived
    try:
        try:
            async with asyncio.timeout_at(first_by):
                response = await client.send(outgoing, stream=True)
                if response.status_code >= 400:
                    await response.aread()
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise timed_out(first_by, False) from exc
        except (httpx.TransportError, httpx.StreamError) as exc:
            raise broken(exc) from exc
        if response.status_code >= 400:
            raise provider._error(response, model)
        content_type = response.headers.get("content-type", "")
        if not content_type.startswith(decoder.content_type):
            raise MalformedResponseError(
                f"{name} answered a stream request with {content_type or 'no content type'}",
                provider=name,
                model=model,
                status_code=response.status_code,
            )
        snapshot = provider.rate_limits(response)
        decoder.on_response(response)
        parser = decoder.frames()
        chunks = response.aiter_bytes()
        got_event = False
        next_by = first_by
        while not decoder.ended:
            try:
                async with asyncio.timeout_at(next_by):
                    chunk = await anext(chunks, None)
            except (httpx.TimeoutException, TimeoutError) as exc:
                raise timed_out(next_by, got_event) from exc
            except (httpx.TransportError, httpx.StreamError) as exc:
                raise broken(exc) from exc
            if chunk is None:
                end = decoder.at_eof()
                if end is None or parser.pending:
                    raise ProviderConnectionError(
                        f"{name} closed the stream before {decoder.end_marker}", provider=name, model=model
                    )
                yield dataclasses.replace(end, rate_limits=snapshot)
                return
            try:
                frames = parser.feed(chunk)
            except ValueError as exc:  # bytes that are not the wire's framing (bad UTF-8, a bad CRC)
                raise _malformed(name, model, exc) from exc
            for frame in frames:
                got_event = True
                for event in _decoded(decoder, frame, name, model):
                    if isinstance(event, StreamEnd):
                        # Done with the connection before the caller gets the end: a caller that stops
                        # iterating there leaves nothing open.
                        await _release(chunks, response)
                        event = dataclasses.replace(event, rate_limits=snapshot)
                    yield event
                if decoder.ended:
                    return
            if frames:
                # the idle clock starts when the caller asks for more, not while it handled the last event
                next_by = min(loop.time() + idle_timeout_s, end_by)
    except ProviderError as exc:
        # A stream that fails after its headers came still tells what they said about the quota.
        if exc.rate_limits is None:
            exc.rate_limits = snapshot
        raise
    finally:
        if response is not None:
            await response.aclose()


async def _release(chunks: AsyncIterator[bytes], response: httpx.Response) -> None:
    """Read what little follows the end marker (the body's own end, usually in the same packet), so the
    connection goes back to the pool for the next call; then close the response either way."""
    try:
        async with asyncio.timeout(_DRAIN_S):
            async for _ in chunks:
                pass
    except (TimeoutError, httpx.HTTPError):
        pass
    await response.aclose()


def _decoded(decoder: StreamDecoder, frame: Any, name: str, model: str) -> list[ProviderEvent]:
    try:
        return list(decoder.decode_frame(frame))
    except ProviderError:
        raise
    except _SHAPE_ERRORS as exc:
        raise _malformed(name, model, exc) from exc


def _malformed(name: str, model: str, exc: Exception) -> MalformedResponseError:
    return MalformedResponseError(
        f"{name} sent a stream event that cannot be read: {type(exc).__name__}", provider=name, model=model
    )


def in_stream_error(provider: Provider, body: Any, model: str, status: int) -> ProviderError:
    """An error the provider reported inside a 200 stream, as the class ``complete`` would raise for it."""
    from llm_gateway.providers.base import _SAFE_TYPE, _by_status

    message, error_type = provider.error_message(body)
    cls = provider.classify_error(status, message, error_type, body) or _by_status(status)
    kind = error_type if _SAFE_TYPE.fullmatch(error_type) else ""
    # As for an error status: the provider's own text goes to the logs only with prompt logging on.
    log.warning(
        "provider error event in stream",
        extra={
            "provider": provider.name,
            "model": model,
            "error_type": error_type[:100],
            **({"provider_message": loggable_text(message[:1000])} if provider.log_prompts else {}),
        },
    )
    text = f"{provider.name} reported an error in the stream" + (f" ({kind})" if kind else "")
    return cls(text, provider=provider.name, model=model, status_code=status)
