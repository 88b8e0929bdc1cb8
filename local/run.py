"""Run the gateway locally: ``python -m local.run`` (or ``make run``).

Starts moto, the provider simulator (for providers without a real key in the environment) and an
API Gateway-like bridge on ``LOCAL_PORT`` (default 3000), then prints how to call it.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

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

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    stack = LocalStack(
        args.template, port=args.port, simulate=True if args.simulate else None, log_requests=not args.quiet
    )
    if not stack.api_keys:  # e.g. LOCAL_API_KEYS=":tenant": every entry lacks a key
        print(
            "error: LOCAL_API_KEYS names no API key; use key:tenant pairs, "
            "e.g. LOCAL_API_KEYS=key-a:tenant-a,key-b:tenant-b",
            file=sys.stderr,
        )
        return 2
    with stack:
        print(banner(stack), flush=True)
        while not stop.wait(0.5):  # short waits keep the main thread responsive to signals
            pass
        print("\nstopping...", file=sys.stderr, flush=True)
    return 0


def banner(stack: LocalStack) -> str:
    key = next(iter(stack.api_keys), "<no API key: set LOCAL_API_KEYS>")
    lines = ["llm-gateway local stack is up", f"  API          {stack.api_url}"]
    lines += [f"    {r.method:<6} {r.path:<28} -> {r.function_id}" for r in stack.routes.routes]
    lines += [f"  API key      {k}  (tenant {t})" for k, t in stack.api_keys.items()]
    sim = f" at {stack.simulator.url}" if stack.simulator else ""
    modes = ", ".join(f"{name}={mode}" for name, mode in stack.providers.items())
    lines.append(f"  Providers    {modes}{sim if 'simulated' in stack.providers.values() else ''}")
    lines.append(f"  AWS (moto)   {stack.moto_url}")
    lines += [f"    {lid:<22} {value}" for lid, value in stack.physical.items()]
    body = json.dumps(
        {"model": default_model(), "messages": [{"role": "user", "content": "Hello"}]}, separators=(",", ":")
    )
    curl = (
        f"curl -s {stack.api_url}/v1/chat/completions -H {shlex.quote('x-api-key: ' + key)}"
        f" -H 'content-type: application/json' -d {shlex.quote(body)}"
    )
    lines += ["", "Try:", f"  {curl}", "", "Ctrl-C to stop."]
    return "\n".join(lines)


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
