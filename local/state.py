"""Where a running ``make run`` can be found: its endpoints, written to a state file the CLIs read.

``make run`` writes ``.local/stack.json`` (``$LOCAL_STATE_FILE`` to move it) once the stack is up and
removes it when it stops. ``make usage``, ``make budget``, ``make redrive`` and ``make upload`` use it when
no AWS target is given (no ``AWS_ENDPOINT_URL``, ``AWS_PROFILE`` or ``AWS_REGION``/``AWS_DEFAULT_REGION``
in the environment), so they work against the local stack with nothing set by hand.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Mapping, MutableMapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from local.stack import LocalStack

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STATE_FILE = REPO_ROOT / ".local" / "stack.json"
# Any of these in the environment means the caller chose an AWS target: the state file is not used.
AWS_TARGET_VARS = ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION")
NOT_RUNNING = (
    "no local stack is running (start one with `make run`), and no AWS target is set "
    "(AWS_PROFILE or AWS_REGION for a real account, or AWS_ENDPOINT_URL)"
)


class NoTarget(Exception):
    """Neither a running local stack nor an AWS target: the CLIs print this in one line and exit 2."""


@dataclass
class StackState:
    """What the CLIs need to reach a running local stack (all local, fake credentials)."""

    pid: int
    moto_url: str
    region: str
    api_url: str | None
    api_keys: dict[str, str]  # key -> tenant
    bucket: str | None
    tables: dict[str, str] = field(default_factory=dict)  # logical id -> table name
    queues: dict[str, str] = field(default_factory=dict)  # logical id -> queue URL
    simulator_url: str | None = None  # the provider simulator's control API (/_sim/...), if one runs
    topics: dict[str, str] = field(default_factory=dict)  # logical id -> SNS topic ARN (AlertsTopic)
    access_key_id: str = "testing"
    secret_access_key: str = "testing"

    def aws_environment(self) -> dict[str, str]:
        """Variables pointing boto3 and the CLIs at this stack's moto server and resources."""
        env = {
            "AWS_ENDPOINT_URL": self.moto_url,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
        }
        named = {
            "USAGE_TABLE": self.tables.get("UsageTable"),
            "RETRY_QUEUE_URL": self.queues.get("RetryQueue"),
            "RETRY_DLQ_URL": self.queues.get("RetryDeadLetterQueue"),
            "DOCUMENTS_BUCKET": self.bucket,
        }
        env.update({name: value for name, value in named.items() if value})
        return env


def state_file(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env["LOCAL_STATE_FILE"]) if env.get("LOCAL_STATE_FILE") else DEFAULT_STATE_FILE


def from_stack(stack: LocalStack) -> StackState:
    from local.context import REGION

    def physical(resource_type: str) -> dict[str, str]:
        return {
            lid: stack.physical[lid] for lid in stack.template.resources_of_type(resource_type) if lid in stack.physical
        }

    buckets = list(physical("AWS::S3::Bucket").values())
    return StackState(
        pid=os.getpid(),
        moto_url=stack.moto_url,
        region=REGION,
        api_url=stack.api_url,
        api_keys=dict(stack.api_keys),
        bucket=buckets[0] if len(buckets) == 1 else None,
        tables=physical("AWS::DynamoDB::Table"),
        queues=physical("AWS::SQS::Queue"),
        simulator_url=stack.simulator.url if stack.simulator is not None else None,
        topics=physical("AWS::SNS::Topic"),
    )


def write(state: StackState, path: Path) -> None:
    """Written atomically (a reader never sees half a file); readable by the owner only (it holds API keys)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(asdict(state), out, indent=2)
    partial.replace(path)


def remove(path: Path, pid: int) -> None:
    """Delete the state file if it is still ours (another ``make run`` may have replaced it)."""
    current = _read(path)
    if current is not None and current.pid == pid:
        path.unlink(missing_ok=True)


def running(path: Path) -> StackState | None:
    """The state of a stack that is still up: its process alive and its moto server accepting connections."""
    state = _read(path)
    if state is None or not _process_alive(state.pid) or not _accepts_connections(state.moto_url):
        return None
    return state


def _read(path: Path) -> StackState | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        known = {f.name for f in fields(StackState)}  # a newer make run may write more
        return StackState(**{name: value for name, value in data.items() if name in known})
    except (OSError, ValueError, TypeError):
        return None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, someone else's
    return True


def _accepts_connections(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=1):
            return True
    except OSError:
        return False


def aws_target_given(environ: Mapping[str, str]) -> bool:
    return any(environ.get(name) for name in AWS_TARGET_VARS)


def use_local_stack_if_no_target(environ: MutableMapping[str, str] | None = None) -> StackState | None:
    """No AWS target in the environment: point it at the running local stack (returned), or raise
    :class:`NoTarget`. A target given: leave the environment alone and return None."""
    env = os.environ if environ is None else environ
    if aws_target_given(env):
        return None
    state = running(state_file(env))
    if state is None:
        raise NoTarget(NOT_RUNNING)
    env.update(state.aws_environment())
    return state


def exit_without_traceback(exc: BaseException) -> int:
    """The CLIs' one-line answer to a missing target or an unreachable or refusing AWS (exit 2)."""
    print(f"error: {exc}", file=sys.stderr)
    return 2
