"""Lazily created, process-wide boto3 clients with explicit timeouts and bounded retries.

boto3 is imported on first use only (it costs ~0.1 s), clients are cached per service and call profile
and reused across warm invocations. botocore's own retry (``standard`` mode, a bounded number of
attempts) is the only retry layer for AWS calls; the provider RetryPolicy never wraps them.
``AWS_ENDPOINT_URL`` (moto locally) is honoured by boto3 itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.parameters import SecretsProvider, SSMProvider
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

T = TypeVar("T")

log = logging.getLogger("llm_gateway.aws")

# AWS error codes that say "not now" rather than "never": throttling and server-side failures.
UNAVAILABLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "SlowDown",
        "InternalServerError",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
DEPENDENCY_RETRY_AFTER_S = 2.0


@dataclass(frozen=True)
class CallProfile:
    """How patient a caller is: a cache read wants to fail fast, a ledger write wants to land."""

    connect_timeout_s: float = 2.0
    read_timeout_s: float = 5.0
    max_attempts: int = 3  # total, counting the first call

    def __post_init__(self) -> None:
        if self.connect_timeout_s <= 0 or self.read_timeout_s <= 0 or self.max_attempts < 1:
            raise ValueError(f"invalid AWS call profile: {self}")


FAST = CallProfile(connect_timeout_s=0.5, read_timeout_s=1.0, max_attempts=1)  # fail-open paths
STANDARD = CallProfile()
# Ledger and budgets: retried, yet bounded (a few seconds at worst) since a request waits on them;
# a ledger write that still fails goes to the retry queue instead.
DURABLE = CallProfile(connect_timeout_s=1.0, read_timeout_s=3.0, max_attempts=3)
# Provider keys (Secrets Manager, SSM): a request waits on them after each cache expiry, and a failure
# is a retryable 503, so a few seconds at worst (botocore's default would be 60 s per read).
KEYS = CallProfile(connect_timeout_s=1.0, read_timeout_s=2.0, max_attempts=2)

_clients: dict[tuple[str, CallProfile], Any] = {}
_parameter_providers: dict[str, Any] = {}  # Powertools providers, each with its own value cache
_session: Any = None  # one boto3 Session for every client: service models are loaded once per process
_lock = threading.Lock()


def client(service: str, profile: CallProfile = STANDARD) -> Any:
    """A cached boto3 client for ``service`` (thread-safe; boto3 clients may be shared across threads)."""
    key = (service, profile)
    found = _clients.get(key)
    if found is not None:
        return found
    with _lock:
        found = _clients.get(key)
        if found is None:
            found = _new_client(service, profile)
            _clients[key] = found
        return found


def dynamodb(profile: CallProfile = STANDARD) -> DynamoDBClient:
    return client("dynamodb", profile)  # type: ignore[no-any-return]


def sqs(profile: CallProfile = STANDARD) -> SQSClient:
    return client("sqs", profile)  # type: ignore[no-any-return]


def s3(profile: CallProfile = STANDARD) -> S3Client:
    return client("s3", profile)  # type: ignore[no-any-return]


def ssm_parameters() -> SSMProvider:
    """Powertools' SSM provider over a client with explicit timeouts (its values cached per ``max_age``)."""
    from aws_lambda_powertools.utilities.parameters import SSMProvider

    return _parameter_provider("ssm", lambda: SSMProvider(boto3_client=client("ssm", KEYS)))  # type: ignore[no-any-return]


def secrets() -> SecretsProvider:
    """Powertools' Secrets Manager provider over a client with explicit timeouts."""
    from aws_lambda_powertools.utilities.parameters import SecretsProvider

    return _parameter_provider(  # type: ignore[no-any-return]
        "secretsmanager", lambda: SecretsProvider(boto3_client=client("secretsmanager", KEYS))
    )


def _parameter_provider(service: str, build: Callable[[], Any]) -> Any:
    found = _parameter_providers.get(service)
    if found is None:
        found = build()  # outside _lock: client() takes it
        with _lock:
            found = _parameter_providers.setdefault(service, found)
    return found


def reset_clients() -> None:
    """Forget cached clients (the environment, e.g. AWS_ENDPOINT_URL, changed) and what they saw."""
    global _session
    with _lock:
        _clients.clear()
        _parameter_providers.clear()
        _unavailable_until.clear()
        _session = None


_unavailable_until: dict[str, float] = {}  # service -> monotonic time until which it is presumed down


def note_unavailable(service: str, for_s: float) -> None:
    """Remember that ``service`` just timed out or throttled, so that deferrable writes skip it a while."""
    _unavailable_until[service] = time.monotonic() + for_s


def recently_unavailable(service: str) -> bool:
    return time.monotonic() < _unavailable_until.get(service, 0.0)


# Blocking boto3 calls wait on the network, not the CPU: asyncio's default executor (CPU count + 4
# threads, i.e. 5-6 on Lambda) would queue a cache read behind a burst of ledger writes from parallel
# map calls, long enough to time the read out and pay for the call again.
IO_THREADS = 32
_executor: ThreadPoolExecutor | None = None


def _io_executor() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        with _lock:
            if _executor is None:
                _executor = ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="aws-io")
    return _executor


async def in_thread(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run a blocking boto3 call off the event loop, so parallel operations do not serialize on it."""
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)  # as asyncio.to_thread
    return await asyncio.get_running_loop().run_in_executor(_io_executor(), call)


def error_code(exc: BaseException) -> str | None:
    """The AWS error code of a botocore ClientError (e.g. ``ConditionalCheckFailedException``), else None."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code else None
    return None


def is_unavailable(exc: BaseException) -> bool:
    """Whether a boto3 call failed for want of the service (timeout, no connection, throttling, a 5xx)
    rather than because of what was asked: the kind of failure a retry later may fix."""
    from botocore.exceptions import ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    if isinstance(exc, HTTPClientError | BotoConnectionError):  # read/connect timeouts, endpoint unreachable
        return True
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return error_code(exc) in UNAVAILABLE_CODES or int(status) >= 500
    return False


@contextlib.contextmanager
def unavailable_as_503(service: str, operation: str) -> Iterator[None]:
    """Turn a dependency that is down or throttling into ServiceUnavailableError (503, retryable, with
    Retry-After), logged as an ERROR with the AWS code for operators; any other error passes through.

    The one place data access maps AWS faults for callers: its message names no bucket, table or account.
    """
    try:
        yield
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        from llm_gateway.errors import ServiceUnavailableError

        log.error(
            "AWS dependency unavailable",
            extra={
                "service": service,
                "operation": operation,
                "error": type(exc).__name__,
                "aws_code": error_code(exc),
            },
        )
        dependency_counters().add("DependencyUnavailable")
        raise ServiceUnavailableError(
            f"the gateway's {service} storage is unavailable right now; retry shortly",
            retry_after=DEPENDENCY_RETRY_AFTER_S,
        ) from None


_dependency_counters: Any = None


def dependency_counters() -> Any:
    """Counts of dependency faults, forwarded to CloudWatch metrics when a namespace is configured."""
    global _dependency_counters
    if _dependency_counters is None:
        from llm_gateway.accounting.counters import Counters, powertools_sink

        _dependency_counters = Counters(powertools_sink())
    return _dependency_counters


def _new_client(service: str, profile: CallProfile) -> Any:
    """Called with ``_lock`` held, which is what makes sharing the (not thread-safe) Session safe."""
    global _session
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=profile.connect_timeout_s,
        read_timeout=profile.read_timeout_s,
        retries={"mode": "standard", "total_max_attempts": profile.max_attempts},
        tcp_keepalive=True,
        max_pool_connections=64,  # parallel summarization and concurrent requests share one client
    )
    # Not boto3's default session (other code may use it unlocked); one private session, used under
    # _lock only. A session per client would parse the service model JSON again for each (~0.1 s each).
    if _session is None:
        _session = boto3.session.Session()
    return _session.client(service, config=config)
