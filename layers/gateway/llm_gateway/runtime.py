"""Run the async core from synchronous Lambda handlers.

Each thread keeps one event loop for its lifetime, so the shared ``httpx.AsyncClient`` (bound to a
loop) and its warm connections survive across invocations of a warm Lambda instance.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Coroutine
from typing import Any, TypeVar

import httpx

T = TypeVar("T")

_local = threading.local()
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = weakref.WeakKeyDictionary()
_clients_lock = threading.Lock()


def _loop() -> asyncio.AbstractEventLoop:
    loop: asyncio.AbstractEventLoop | None = getattr(_local, "loop", None)
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        _local.loop = loop
    return loop


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on this thread's persistent loop."""
    return _loop().run_until_complete(coro)


def http_client() -> httpx.AsyncClient:
    """The shared HTTP client for the running loop. Timeouts are always given per request."""
    loop = asyncio.get_running_loop()
    with _clients_lock:
        client = _clients.get(loop)
        if client is None or client.is_closed:
            client = httpx.AsyncClient(
                timeout=None,  # no default: every call passes its own, bounded by the deadline
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=32, keepalive_expiry=60),
                transport=httpx.AsyncHTTPTransport(retries=0),  # one layer retries: the retry policy
                follow_redirects=False,
            )
            _clients[loop] = client
        return client


def close_thread_resources() -> None:
    """Close this thread's loop and its HTTP client (local harness threads; Lambda never needs it)."""
    loop: asyncio.AbstractEventLoop | None = getattr(_local, "loop", None)
    if loop is None or loop.is_closed():
        return
    with _clients_lock:
        client = _clients.pop(loop, None)
    if client is not None:
        loop.run_until_complete(client.aclose())
    loop.run_until_complete(loop.shutdown_default_executor())
    loop.close()
    _local.loop = None
