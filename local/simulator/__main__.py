"""Run the provider simulator standalone: ``python -m local.simulator --port 8900``."""

from __future__ import annotations

import argparse
import sys
import time

from local.simulator.server import ProviderSimulator

# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Local OpenAI/Anthropic/Gemini provider simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument("--latency-ms", type=int, default=0, help="fixed delay added to every provider answer")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)

    sim = ProviderSimulator(args.host, args.port, args.latency_ms)
    sim.verbose = args.verbose
    sim.start()
    print(f"provider simulator listening on {sim.url}", flush=True)
    for name, url in sim.base_urls().items():
        print(f"  {name:<10} {url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
