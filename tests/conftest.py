"""Shared fixtures.

AWS: every test runs with fake credentials and no profile, so nothing can reach a real account.
Local stack: ``local_stack`` is one session-wide ``LocalStack`` (moto + provider simulator + API bridge
on a free port, API keys ``key-a`` -> ``tenant-a`` and ``key-b`` -> ``tenant-b``); the simulator and any
handler overrides are reset after each test that uses it.
"""

from __future__ import annotations

import gc
import inspect
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from local.simulator import ProviderSimulator
from local.stack import LocalStack

TEST_API_KEYS = "key-a:tenant-a,key-b:tenant-b"
LOCAL_ENDPOINT_PREFIXES = ("http://127.0.0.1:", "http://localhost:")


# --------------------------------------------------------------------------- AWS safety


@pytest.fixture(scope="session", autouse=True)
def _fake_aws_credentials() -> Iterator[None]:
    """No real credentials or profile for the whole session (moto accepts any)."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            mp.delenv(name, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        # Bookkeeping (ledger, settlement, cache fills) before the response, so tests can read it back
        # at once; tests of the deferred modes install them explicitly.
        mp.setenv("GATEWAY_AFTER_RESPONSE", "inline")
        yield


@pytest.fixture
def no_real_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any boto3/botocore client created without a local endpoint (explicit or AWS_ENDPOINT_URL)."""
    import botocore.session

    original = botocore.session.Session.create_client
    signature = inspect.signature(original)

    def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(self, *args, **kwargs)
        endpoint = bound.arguments.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL") or ""
        if not endpoint.startswith(LOCAL_ENDPOINT_PREFIXES):
            raise AssertionError(f"boto3 client for {bound.arguments.get('service_name')} would reach real AWS")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(botocore.session.Session, "create_client", guarded)


# --------------------------------------------------------------------------- provider simulator


@pytest.fixture(scope="session")
def _simulator_session() -> Iterator[ProviderSimulator]:
    simulator = ProviderSimulator(host="127.0.0.1", port=0)
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture
def simulator(_simulator_session: ProviderSimulator) -> Iterator[ProviderSimulator]:
    """The session's provider simulator; faults, scripts, calls and latency are reset after the test."""
    yield _simulator_session
    _simulator_session.reset()


# --------------------------------------------------------------------------- local stack


@pytest.fixture(scope="session")
def _local_stack_session(_simulator_session: ProviderSimulator) -> Iterator[LocalStack]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOCAL_API_KEYS", TEST_API_KEYS)  # read once, at construction
        # Circuit breaker state is shared through the usage table: a test that injects provider faults
        # would open circuits and change later tests' routing. Breaker tests build their own instances.
        stack = LocalStack(
            port=0,
            simulate=True,
            simulator=_simulator_session,
            # Quota state likewise (a 429 fault marks a deployment exhausted); quota tests build their own stack.
            env_overrides={"GATEWAY_BREAKER_BACKEND": "off", "GATEWAY_QUOTA_BACKEND": "off"},
        )
    with stack:
        assert os.environ["AWS_ENDPOINT_URL"] == stack.moto_url
        # The stack's long-lived objects (moto's backends, botocore's service models) out of the garbage
        # collector's full passes: they are never garbage, and they made every allocation-heavy test that
        # ran after the stack started (e.g. the linear-time validation bounds) twice as slow.
        gc.freeze()
        yield stack


@pytest.fixture
def local_stack(_local_stack_session: LocalStack, simulator: ProviderSimulator) -> Iterator[LocalStack]:
    """The session's LocalStack; handler overrides are dropped and the simulator reset after the test."""
    yield _local_stack_session
    _local_stack_session.handler_overrides.clear()


@pytest.fixture(scope="session")
def aws_clients(_local_stack_session: LocalStack) -> Callable[[str], Any]:
    """``aws_clients("dynamodb")``: a cached boto3 client for the local moto server."""
    cache: dict[str, Any] = {}

    def get(service: str) -> Any:
        assert os.environ.get("AWS_ENDPOINT_URL") == _local_stack_session.moto_url, "boto3 is not pointed at moto"
        if service not in cache:
            cache[service] = _local_stack_session.client(service)
        return cache[service]

    return get
