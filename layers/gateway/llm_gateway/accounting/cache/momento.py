"""Momento backends: the response cache and the circuit breaker's shared state.

Imported only when ``GATEWAY_CACHE_BACKEND=momento`` (or ``GATEWAY_BREAKER_BACKEND=momento``), so a
deployment that does not use Momento never loads grpc (~0.2 s of cold start). The SDK's synchronous
client is used from a worker thread: its gRPC channel is thread-safe and not tied to an event loop.
"""

from __future__ import annotations

import threading
import uuid
import warnings
from collections.abc import Callable
from datetime import timedelta

from momento import CacheClient, Configurations, CredentialProvider
from momento.responses import CacheDelete, CacheGet, CacheIncrement, CacheSet, CacheSetIfNotExists

from llm_gateway import aws
from llm_gateway.errors import ServiceUnavailableError
from llm_gateway.routing.breaker import CircuitState

MOMENTO_ITEM_LIMIT = 5 * 1024 * 1024  # Momento's default maximum item size
CLIENT_TIMEOUT = timedelta(seconds=1.5)


class MomentoError(ServiceUnavailableError):
    """Momento answered with an error (the cache and breaker treat it as the store being down)."""


_clients: dict[tuple[str, str, str | None], CacheClient] = {}
_lock = threading.Lock()


def momento_client(
    *, api_key: str | None, endpoint: str | None = None, local_endpoint: str | None = None, default_ttl_s: int = 3600
) -> CacheClient:
    """One client per process and target. ``local_endpoint`` ("host:port") needs no key (Momento Local)."""
    target = (local_endpoint or "", endpoint or "", api_key)
    with _lock:
        client = _clients.get(target)
        if client is None:
            # The constructor connects lazily, on first use, not during cold start. (CacheClient.create
            # with eager_connection_timeout=0 fails in SDK 1.29: it never builds the client.)
            client = CacheClient(
                Configurations.Lambda.latest().with_client_timeout(CLIENT_TIMEOUT),
                _credentials(api_key=api_key, endpoint=endpoint, local_endpoint=local_endpoint),
                timedelta(seconds=default_ttl_s),
            )
            _clients[target] = client
        return client


def reset_clients() -> None:
    with _lock:
        for client in _clients.values():
            client.__exit__(None, None, None)  # closes its gRPC channels
        _clients.clear()


def _credentials(*, api_key: str | None, endpoint: str | None, local_endpoint: str | None) -> CredentialProvider:
    if local_endpoint:
        host, _, port = local_endpoint.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"MOMENTO_LOCAL_ENDPOINT must be host:port, got {local_endpoint!r}")
        return CredentialProvider.for_momento_local(host, int(port))
    if not api_key:
        raise ValueError("the Momento backend needs MOMENTO_API_KEY (or a 'momento' key in the provider secret)")
    if endpoint:
        return CredentialProvider.from_api_key_v2(api_key, endpoint)
    with warnings.catch_warnings():  # a v1 key carries its endpoint; the SDK marks this path deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        return CredentialProvider.from_string(api_key)


class MomentoCacheBackend:
    name = "momento"
    max_value_bytes = MOMENTO_ITEM_LIMIT

    def __init__(self, client: Callable[[], CacheClient], cache_name: str) -> None:
        self._client = client  # a factory: the client (and its key) is created on first use
        self.cache_name = cache_name

    async def get(self, key: str) -> bytes | None:
        response = await aws.in_thread(lambda: self._client().get(self.cache_name, key))
        if isinstance(response, CacheGet.Hit):
            return response.value_bytes
        if isinstance(response, CacheGet.Miss):
            return None
        raise MomentoError(str(response))

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        ttl = timedelta(seconds=ttl_seconds)
        response = await aws.in_thread(lambda: self._client().set(self.cache_name, key, value, ttl))
        if not isinstance(response, CacheSet.Success):
            raise MomentoError(str(response))


class MomentoBreakerStore:
    """Breaker state as Momento keys under ``breaker:<provider>#<model>:``.

    ``open`` exists exactly while the circuit is open (its TTL is the cool-down; SetIfNotExists makes
    one instance the opener), ``probe`` is the half-open claim (SetIfNotExists, TTL = probe timeout),
    ``fail:<window>`` counts failures (Increment), ``last`` is the last failure time.

    "Opened, not yet closed" is versioned, because Momento has no compare-and-delete: each trip writes
    ``tripped = <time>|<nonce>``, a new version; closing writes that version into ``closed``. The circuit
    is tripped while the two differ. A closer that read version A cannot hide a re-trip that happened
    after its check (version B): it can only mark A closed. (A check-then-delete of ``tripped`` could
    delete B's marker and make a re-opened circuit read as closed once ``open`` expires.)
    """

    def __init__(self, client: Callable[[], CacheClient], cache_name: str) -> None:
        self._client = client
        self.cache_name = cache_name

    @property
    def client(self) -> CacheClient:
        return self._client()

    async def count_failure(self, circuit: str, now: float, window: int, ttl_s: int) -> tuple[int, CircuitState]:
        return await aws.in_thread(self._count_failure, circuit, now, window, ttl_s)

    async def read(self, circuit: str) -> CircuitState:
        return await aws.in_thread(self._read, circuit)

    async def trip(self, circuit: str, now: float, open_until: float, ttl_s: int) -> bool:
        return await aws.in_thread(self._trip, circuit, now, open_until, ttl_s)

    async def claim_probe(self, circuit: str, now: float, probe_until: float) -> bool:
        return await aws.in_thread(self._claim_probe, circuit, now, probe_until)

    async def close(self, circuit: str, now: float, window: int, ttl_s: int) -> None:
        await aws.in_thread(self._close, circuit, window, ttl_s)

    # --- blocking implementations (run in a worker thread)

    def _count_failure(self, circuit: str, now: float, window: int, ttl_s: int) -> tuple[int, CircuitState]:
        ttl = timedelta(seconds=ttl_s)
        counted = self.client.increment(self.cache_name, _key(circuit, f"fail:{window}"), 1, ttl)
        if not isinstance(counted, CacheIncrement.Success):
            raise MomentoError(str(counted))
        self._check(self.client.set(self.cache_name, _key(circuit, "last"), repr(now), ttl))
        return counted.value, self._read(circuit)

    def _read(self, circuit: str) -> CircuitState:
        open_until = self._number(_key(circuit, "open"))
        version = self._trip_version(circuit)
        tripped_at = _trip_time(version) if version else 0.0
        # Between the opener's SetIfNotExists and its ``tripped`` write the circuit is open all the same.
        return CircuitState(
            open_until=open_until,
            tripped_at=tripped_at or open_until,
            last_failure_at=self._number(_key(circuit, "last")),
        )

    def _trip_version(self, circuit: str) -> str | None:
        """The current trip's version, None when the circuit has not tripped since it last closed."""
        tripped = self._text(_key(circuit, "tripped"))
        if tripped is None or tripped == self._text(_key(circuit, "closed")):
            return None
        return tripped

    def _trip(self, circuit: str, now: float, open_until: float, ttl_s: int) -> bool:
        opened = self.client.set_if_not_exists(
            self.cache_name, _key(circuit, "open"), repr(open_until), timedelta(seconds=max(open_until - now, 0.001))
        )
        if isinstance(opened, CacheSetIfNotExists.NotStored):
            return False
        if not isinstance(opened, CacheSetIfNotExists.Stored):
            raise MomentoError(str(opened))
        version = f"{now!r}|{uuid.uuid4().hex[:12]}"
        self._check(self.client.set(self.cache_name, _key(circuit, "tripped"), version, timedelta(seconds=ttl_s)))
        self._check(self.client.delete(self.cache_name, _key(circuit, "probe")))
        return True

    def _claim_probe(self, circuit: str, now: float, probe_until: float) -> bool:
        state = self._read(circuit)
        if state.phase(now) != "half_open":
            return False
        claimed = self.client.set_if_not_exists(
            self.cache_name, _key(circuit, "probe"), repr(probe_until), timedelta(seconds=max(probe_until - now, 1))
        )
        if isinstance(claimed, CacheSetIfNotExists.Error):
            raise MomentoError(str(claimed))
        return isinstance(claimed, CacheSetIfNotExists.Stored)

    def _close(self, circuit: str, window: int, ttl_s: int) -> None:
        version = self._trip_version(circuit)  # read before the check: a later trip is a new version
        if version is None or self._number(_key(circuit, "open")):
            return  # closed already, or re-opened meanwhile
        # Marks only the version read above as closed; ``tripped`` itself is never deleted.
        self._check(self.client.set(self.cache_name, _key(circuit, "closed"), version, timedelta(seconds=ttl_s)))
        for suffix in ("probe", f"fail:{window}"):
            self._check(self.client.delete(self.cache_name, _key(circuit, suffix)))

    def _number(self, key: str) -> float:
        text = self._text(key)
        return float(text) if text is not None else 0.0

    def _text(self, key: str) -> str | None:
        response = self.client.get(self.cache_name, key)
        if isinstance(response, CacheGet.Hit):
            return response.value_string
        if isinstance(response, CacheGet.Miss):
            return None
        raise MomentoError(str(response))

    @staticmethod
    def _check(response: object) -> None:
        if not isinstance(response, CacheSet.Success | CacheDelete.Success):
            raise MomentoError(str(response))


def _key(circuit: str, suffix: str) -> str:
    return f"breaker:{circuit}:{suffix}"


def _trip_time(version: str) -> float:
    try:
        return float(version.partition("|")[0])
    except ValueError:
        return 1.0  # an unreadable version still means "tripped"
