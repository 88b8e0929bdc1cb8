"""The Momento backends through the real ``momento`` SDK, against a local server speaking its gRPC protocol."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from llm_gateway.accounting.cache.momento import MomentoBreakerStore, momento_client
from llm_gateway.routing.breaker import SharedCircuitBreaker
from llm_gateway.runtime import run_sync
from local.stack import REPO_ROOT
from tests.support.accounting import complete, gateway_from_env, unique
from tests.support.momento_server import MomentoLocalServer

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_real_aws")]

DETERMINISTIC = {"model": "gpt-4o-mini", "fallback": [], "temperature": 0}


@pytest.fixture(scope="module")
def momento_server():
    with MomentoLocalServer() as server:
        yield server


@pytest.fixture
def server(momento_server):
    momento_server.calls.clear()
    momento_server.outage, momento_server.delay_s = False, 0.0
    yield momento_server
    momento_server.outage, momento_server.delay_s = False, 0.0


@pytest.fixture
def gateway(local_stack, server):
    return gateway_from_env(
        cache_backend="momento", momento_local_endpoint=server.endpoint, breaker_backend="off", cache_timeout_s=2.0
    )


def test_a_hit_makes_no_provider_call_and_exactly_one_get(gateway, server, simulator):
    tenant = unique()
    first = complete(gateway, tenant, **DETERMINISTIC)
    assert not first.cached and server.calls["Set"] == 1
    server.calls.clear()
    second = complete(gateway, tenant, **DETERMINISTIC)
    assert second.cached and second.content == first.content
    assert len(simulator.calls()) == 1
    assert dict(server.calls) == {"Get": 1}


def test_tenants_are_isolated(gateway, simulator):
    complete(gateway, unique(), **DETERMINISTIC)
    assert not complete(gateway, unique(), **DETERMINISTIC).cached
    assert len(simulator.calls()) == 2


def test_momento_down_or_slow_is_skipped(gateway, server, simulator):
    server.outage = True
    assert complete(gateway, unique(), **DETERMINISTIC).content
    assert gateway.cache.counters.get("CacheError") == 2
    server.outage, server.delay_s = False, 0.5
    gateway.cache.timeout_s = 0.1
    assert complete(gateway, unique(), **DETERMINISTIC).content
    assert gateway.cache.counters.get("CacheTimeout") == 2
    assert len(simulator.calls()) == 2


def test_breaker_state_in_momento_is_shared_across_instances(server):
    def instance():
        store = MomentoBreakerStore(lambda: momento_client(api_key=None, local_endpoint=server.endpoint), "llm-gateway")
        # A long failure window: three failures a few ms apart must not straddle a window boundary.
        return SharedCircuitBreaker(store, failure_threshold=3, window_s=3600, cooldown_s=1, view_ttl_s=0)

    a, b = instance(), instance()
    model = unique("model")
    for _ in range(3):
        run_sync(a.record("openai", model, ok=False))
    assert a.counters.get("BreakerOpened") == 1
    assert not run_sync(b.allow("openai", model))
    time.sleep(1.1)  # the "open" key's TTL is the cool-down
    assert [run_sync(b.allow("openai", model)), run_sync(a.allow("openai", model))] == [True, False]
    run_sync(b.record("openai", model, ok=True))
    assert run_sync(a.allow("openai", model))
    assert server.calls["SetIfNotExists"] >= 2 and server.calls["Increment"] == 3


class InterleavedClient:
    """The real SDK client, except that right after its next read of a circuit's ``open`` key, ``then``
    runs: another instance acting between this one's check and its write."""

    def __init__(self, client):
        self._client = client
        self.then = None

    def __getattr__(self, name):
        return getattr(self._client, name)

    def get(self, cache_name, key):
        response = self._client.get(cache_name, key)
        if key.endswith(":open") and self.then is not None:
            then, self.then = self.then, None
            then()
        return response


def test_a_re_trip_while_another_instance_closes_is_never_lost(server):
    def client():
        return momento_client(api_key=None, local_endpoint=server.endpoint)

    interleaved = InterleavedClient(client())
    closer = MomentoBreakerStore(lambda: interleaved, "llm-gateway")
    other = MomentoBreakerStore(client, "llm-gateway")
    circuit = f"openai#{unique('model')}"
    now = time.time()
    assert run_sync(other.trip(circuit, now, now + 0.05, 600))
    time.sleep(0.2)
    assert run_sync(closer.read(circuit)).phase(time.time()) == "half_open"

    def re_trip():  # the probe's circuit fails again elsewhere: opened anew, for 1 s
        at = time.time()
        assert other._trip(circuit, at, at + 1.0, 600)

    interleaved.then = re_trip
    run_sync(closer.close(circuit, time.time(), 0, 600))  # read "not open", then the re-trip, then the close
    assert interleaved.then is None  # the interleaving did happen
    assert run_sync(other.read(circuit)).phase(time.time()) == "open"
    time.sleep(1.2)
    assert run_sync(other.read(circuit)).phase(time.time()) == "half_open"  # not "closed": it must be probed
    run_sync(closer.close(circuit, time.time(), 0, 600))  # an uncontested close does close it
    assert run_sync(other.read(circuit)).phase(time.time()) == "closed"


def test_momento_is_imported_only_when_selected():
    script = textwrap.dedent(
        """
        import sys
        from llm_gateway.config import Settings
        from llm_gateway.wiring import build_gateway
        build_gateway(Settings(cache_table="c", usage_table="u", openai_api_key="k"))
        print("momento" in sys.modules, "grpc" in sys.modules)
        build_gateway(Settings(cache_backend="momento", momento_local_endpoint="127.0.0.1:1", openai_api_key="k"))
        print("momento" in sys.modules)
        """
    )
    env = {**os.environ, "PYTHONPATH": f"{REPO_ROOT / 'layers' / 'gateway'}"}
    command = [sys.executable, "-c", script]
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=True)
    assert out.stdout.split() == ["False", "False", "True"]
