"""What the benchmark parts share: interpreters, the request they send, API Gateway events, quiet stdout."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from local.stack import LocalStack

REPO_ROOT = Path(__file__).resolve().parent.parent
LITELLM_VENV = REPO_ROOT / ".venv-bench-litellm"
PY312_VENV = REPO_ROOT / ".venv-bench-312"
API_KEY = "bench-key"
TENANT = "bench-tenant"
MODEL = "gpt-4o-mini"  # in our catalog (openai) and a plain OpenAI model for LiteLLM
CHAT_PATH = "/v1/chat/completions"


@dataclass(frozen=True)
class Interpreter:
    argv: tuple[str, ...]
    version: str  # "3.12.1"

    @property
    def minor(self) -> str:
        return ".".join(self.version.split(".")[:2])


def probe_interpreter(python: Path | str) -> Interpreter | None:
    """The interpreter at ``python`` with its version, or None when it does not run."""
    try:
        res = subprocess.run(
            [str(python), "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if res.returncode != 0:
        return None
    return Interpreter((str(python),), res.stdout.strip())


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def chat_body(*, prompt: str = "Say hello in five words.", temperature: float = 0.7) -> dict[str, Any]:
    """The one request every path sends (OpenAI Chat Completions shape).

    temperature > 0: a non-deterministic request, which a response cache must not serve.
    """
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 256,  # room for the whole answer: a truncated one is never cached
        "temperature": temperature,
    }


def apigw_event(stack: LocalStack, body: dict[str, Any], *, path: str = CHAT_PATH) -> dict[str, Any]:
    """Exactly the proxy event the local API bridge builds for this request (API key -> tenant)."""
    from local.stack import api_gateway_event

    match = stack.routes.match("POST", path)
    if match is None:
        raise RuntimeError(f"the template has no POST {path} route")
    raw = json.dumps(body).encode()
    return api_gateway_event(
        match=match,
        method="POST",
        path=path,
        query="",
        headers=[("Content-Type", "application/json"), ("x-api-key", API_KEY), ("Content-Length", str(len(raw)))],
        body=raw,
        source_ip="127.0.0.1",
        stage=stack.template.api_stage(match.route.api_id, stack.resolver.resolve),
        api_key=API_KEY,
        tenant=TENANT,
    )


def lambda_env(function_name: str, memory_mb: int = 1024) -> dict[str, str]:
    """Variables the Lambda python3.12 runtime sets for every function (values are placeholders)."""
    return {
        "AWS_LAMBDA_FUNCTION_NAME": function_name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "PYTHONDONTWRITEBYTECODE": "1",  # /var/task is read-only: the handler module is compiled each time
    }


@contextlib.contextmanager
def stdout_discarded() -> Iterator[None]:
    """Send fd 1 to /dev/null (handler logs and EMF metrics would flood the terminal); fd 2 stays."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def bookkeeping_done(timeout_s: float = 30.0) -> None:
    """Wait (untimed) for the after-response bookkeeping of the last request, as Lambda does before it
    hands the sandbox the next event; a no-op when bookkeeping runs inline."""
    from llm_gateway import after_response

    if not after_response.wait_idle(timeout_s):
        raise RuntimeError(f"after-response bookkeeping still running after {timeout_s:.0f} s")


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class AwsCallCounter:
    """Counts AWS API calls ("service:Operation") made through botocore while active."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def active(self) -> Iterator[AwsCallCounter]:
        from botocore.endpoint import Endpoint

        original = Endpoint.make_request
        counter = self

        def counting(self: Any, operation_model: Any, request_dict: Any) -> Any:
            name = f"{operation_model.service_model.service_name}:{operation_model.name}"
            with counter._lock:
                counter.calls[name] += 1
            return original(self, operation_model, request_dict)

        Endpoint.make_request = counting  # type: ignore[method-assign]
        try:
            yield self
        finally:
            Endpoint.make_request = original  # type: ignore[method-assign]

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.calls)


class MotoTimer:
    """Time the local moto server spends serving requests, so that its cost can be taken out of ours.

    Times werkzeug's ``run_wsgi`` (environ, moto's answer, writing the response) of the stack's
    ``ThreadedMotoServer`` through a subclass of its request handler set on that server only. Uses
    private attributes: if they move, the timer reports itself unavailable and the bench says so.
    moto's own costs are not AWS's: e.g. it deep-copies a whole table for every TransactWriteItems.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._total_s = 0.0
        self.requests = 0
        self.available = False

    def install(self, stack: LocalStack) -> MotoTimer:
        server = getattr(getattr(stack, "_moto", None), "_server", None)
        handler_class = getattr(server, "RequestHandlerClass", None)
        if server is None or handler_class is None or not hasattr(handler_class, "run_wsgi"):
            return self
        timer = self

        class TimedHandler(handler_class):  # type: ignore[misc, valid-type]
            def run_wsgi(self) -> None:
                started = time.perf_counter()
                try:
                    super().run_wsgi()
                finally:
                    with timer._lock:
                        timer._total_s += time.perf_counter() - started
                        timer.requests += 1

        server.RequestHandlerClass = TimedHandler
        self.available = True
        return self

    @property
    def total_ms(self) -> float:
        with self._lock:
            return self._total_s * 1000.0
