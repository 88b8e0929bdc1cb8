"""Run the gateway locally: ``python -m local.run`` (or ``make run``).

Starts moto, the provider simulator (for providers without a real key in the environment) and an
API Gateway-like bridge on ``LOCAL_PORT`` (default 3000), then prints how to call it. Its endpoints go
to ``.local/stack.json`` (local/state.py) for ``make upload``, ``make usage``, ``make budget`` and
``make redrive``; SIGINT or SIGTERM stops everything within a few seconds.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import socket
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from local import state
from local.stack import DEFAULT_TEMPLATE, REPO_ROOT, LocalStack

PREFERRED_MODEL = "gpt-4o-mini"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.run", description=__doc__)
    parser.add_argument("--port", type=int, default=None, help="bridge port (default: $LOCAL_PORT or 3000)")
    parser.add_argument("--template", type=Path, default=DEFAULT_TEMPLATE)
    parser.add_argument("--simulate", action="store_true", help="simulate every provider, even with real keys")
    parser.add_argument("--quiet", action="store_true", help="no access log line per request")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("local").setLevel(logging.INFO)

    wakeup = _SignalWakeup()
    stack = LocalStack(
        args.template,
        port=args.port,
        simulate=True if args.simulate else None,
        log_requests=not args.quiet,
        throttle=True,  # the stage's throttling, as API Gateway applies it
    )
    if not stack.api_keys:  # e.g. LOCAL_API_KEYS=":tenant": every entry lacks a key
        print(
            "error: LOCAL_API_KEYS names no API key; use key:tenant pairs, "
            "e.g. LOCAL_API_KEYS=key-a:tenant-a,key-b:tenant-b",
            file=sys.stderr,
        )
        return 2
    state_path = state.state_file()
    with wakeup, stack:
        state.write(state.from_stack(stack), state_path)
        try:
            print(banner(stack, state_path), flush=True)
            wakeup.wait()
            print("\nstopping...", file=sys.stderr, flush=True)
        finally:
            state.remove(state_path, os.getpid())
    return 0


class _SignalWakeup:
    """Blocks the main thread until SIGINT or SIGTERM, without locks in the signal handler.

    A handler that sets a ``threading.Event`` can deadlock: it runs on the main thread, possibly while
    that thread is inside ``Event.wait`` holding the same condition's lock. Here the handler does
    nothing; ``signal.set_wakeup_fd`` writes the signal number to a socket the main thread reads. A
    second signal while stopping exits at once.
    """

    def __init__(self) -> None:
        self._stopping = False
        self._saved: dict[int, Any] = {}

    def __enter__(self) -> _SignalWakeup:
        self._reader, self._writer = socket.socketpair()
        self._writer.setblocking(False)
        signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._saved[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._saved.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(-1)
        self._reader.close()
        self._writer.close()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stopping:
            os._exit(128 + signum)  # asked twice: do not wait for the teardown

    def wait(self) -> None:
        self._reader.recv(1)  # returns once a signal's byte arrives (recv is retried after EINTR)
        self._stopping = True


def banner(stack: LocalStack, state_path: Path | None = None) -> str:
    key = next(iter(stack.api_keys), "<no API key: set LOCAL_API_KEYS>")
    lines = ["llm-gateway local stack is up", f"  API          {stack.api_url}"]
    lines += [f"    {r.method:<6} {r.path:<28} -> {r.function_id}" for r in stack.routes.routes]
    lines += [f"  API key      {k}  (tenant {t}; in the keys table)" for k, t in stack.api_keys.items()]
    sim = f" at {stack.simulator.url}" if stack.simulator else ""
    modes = ", ".join(f"{name}={mode}" for name, mode in stack.providers.items())
    lines.append(f"  Providers    {modes}{sim if 'simulated' in stack.providers.values() else ''}")
    lines.append(f"  AWS (moto)   {stack.moto_url}")
    lines += [f"    {lid:<22} {value}" for lid, value in stack.physical.items()]
    body = json.dumps(
        {"model": default_model(), "messages": [{"role": "user", "content": "Hello"}]}, separators=(",", ":")
    )
    curl = (
        f"curl -s {stack.api_url}/v1/chat/completions -H {shlex.quote('Authorization: Bearer ' + key)}"
        f" -H 'content-type: application/json' -d {shlex.quote(body)}"
    )
    lines += ["", "Try:", f"  {curl}", "  make keys ACTION=create TENANT=acme   (a key with a policy: docs/keys.md)"]
    if state_path is not None:
        lines += [f"  make upload FILE=events/documents/q3-board-update.md   (endpoints in {_shown(state_path)})"]
    lines += ["", "Ctrl-C to stop."]
    return "\n".join(lines)


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def default_model() -> str:
    """gpt-4o-mini when the catalog has it, else the catalog's first model."""
    try:
        models = json.loads((REPO_ROOT / "shared" / "catalog.json").read_text())["models"]
    except (OSError, ValueError, KeyError):
        return PREFERRED_MODEL
    ids = [m["id"] for m in models if isinstance(m, dict) and "id" in m]
    return PREFERRED_MODEL if PREFERRED_MODEL in ids or not ids else ids[0]


if __name__ == "__main__":
    sys.exit(main())
