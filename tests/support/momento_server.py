"""A small in-memory server that speaks Momento's gRPC cache protocol, for tests and benchmarks.

Built from the ``momento_wire_types`` servicers, so the real ``momento`` SDK talks to it through
``CredentialProvider.for_momento_local(host, port)``. Implements what the gateway uses: Get, Set,
Delete, Increment, SetIfNotExists (and CreateCache on the control plane), with TTLs. Other calls
answer UNIMPLEMENTED, which the SDK reports as a clean error. ``outage`` makes every call fail with
UNAVAILABLE, ``delay_s`` slows every call down; ``calls`` counts calls per method.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent import futures
from typing import Any

import grpc
from momento_wire_types.generated import cacheclient_pb2 as pb
from momento_wire_types.generated import cacheclient_pb2_grpc as pb_grpc
from momento_wire_types.generated import controlclient_pb2 as control_pb
from momento_wire_types.generated import controlclient_pb2_grpc as control_grpc


class _Store:
    def __init__(self) -> None:
        self.items: dict[tuple[str, bytes], tuple[bytes, float]] = {}
        self.lock = threading.Lock()

    def get(self, cache: str, key: bytes) -> bytes | None:
        found = self.items.get((cache, key))
        if found is None or found[1] <= time.monotonic():
            self.items.pop((cache, key), None)
            return None
        return found[0]

    def put(self, cache: str, key: bytes, value: bytes, ttl_ms: int) -> None:
        self.items[(cache, key)] = (value, time.monotonic() + max(ttl_ms, 1) / 1000.0)


class _Cache(pb_grpc.ScsServicer):
    """Method names are the gRPC service's own (CamelCase)."""

    def __init__(self, server: MomentoLocalServer) -> None:
        self.server = server
        self.store = server.store

    def _enter(self, method: str, context: Any) -> str:
        self.server.calls[method] += 1
        if self.server.delay_s:
            time.sleep(self.server.delay_s)
        if self.server.outage:
            context.abort(grpc.StatusCode.UNAVAILABLE, "simulated outage")
        return dict(context.invocation_metadata()).get("cache", "")

    def Get(self, request: Any, context: Any) -> Any:
        cache = self._enter("Get", context)
        with self.store.lock:
            value = self.store.get(cache, request.cache_key)
        if value is None:
            return pb._GetResponse(result=pb.Miss)
        return pb._GetResponse(result=pb.Hit, cache_body=value)

    def Set(self, request: Any, context: Any) -> Any:
        cache = self._enter("Set", context)
        with self.store.lock:
            self.store.put(cache, request.cache_key, request.cache_body, request.ttl_milliseconds)
        return pb._SetResponse(result=pb.Ok)

    def Delete(self, request: Any, context: Any) -> Any:
        cache = self._enter("Delete", context)
        with self.store.lock:
            self.store.items.pop((cache, request.cache_key), None)
        return pb._DeleteResponse()

    def Increment(self, request: Any, context: Any) -> Any:
        cache = self._enter("Increment", context)
        with self.store.lock:
            current = self.store.get(cache, request.cache_key)
            try:
                value = int(current or b"0") + request.amount
            except ValueError:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the value is not an integer")
            self.store.put(cache, request.cache_key, str(value).encode(), request.ttl_milliseconds)
        return pb._IncrementResponse(value=value)

    def SetIfNotExists(self, request: Any, context: Any) -> Any:
        cache = self._enter("SetIfNotExists", context)
        with self.store.lock:
            if self.store.get(cache, request.cache_key) is not None:
                return pb._SetIfNotExistsResponse(not_stored=pb._SetIfNotExistsResponse._NotStored())
            self.store.put(cache, request.cache_key, request.cache_body, request.ttl_milliseconds)
        return pb._SetIfNotExistsResponse(stored=pb._SetIfNotExistsResponse._Stored())


class _Control(control_grpc.ScsControlServicer):
    def __init__(self, server: MomentoLocalServer) -> None:
        self.server = server

    def CreateCache(self, request: Any, context: Any) -> Any:
        self.server.calls["CreateCache"] += 1
        return control_pb._CreateCacheResponse()


class MomentoLocalServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.store = _Store()
        self.calls: Counter[str] = Counter()
        self.outage = False
        self.delay_s = 0.0
        self._server: grpc.Server | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> MomentoLocalServer:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="momento-local"))
        pb_grpc.add_ScsServicer_to_server(_Cache(self), server)
        control_grpc.add_ScsControlServicer_to_server(_Control(self), server)
        self.port = server.add_insecure_port(f"{self.host}:{self.port}")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop(grace=None).wait(5)

    def __enter__(self) -> MomentoLocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
