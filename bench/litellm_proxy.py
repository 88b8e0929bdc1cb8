"""A LiteLLM proxy in its own process, pointed at the provider simulator; always shut down on exit."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx

from bench.common import MODEL, progress

START_TIMEOUT_S = 180.0  # the proxy imports litellm, fastapi and friends: slow on a small machine
STOP_TIMEOUT_S = 15.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def proxy_config(openai_base_url: str, api_key: str) -> dict[str, object]:
    """One model, ``openai/<MODEL>`` at the simulator; JSON is valid YAML, so no YAML writer is needed."""
    return {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {"model": f"openai/{MODEL}", "api_base": openai_base_url, "api_key": api_key},
            }
        ],
        "litellm_settings": {"telemetry": False, "drop_params": True, "num_retries": 0},
    }


class LiteLLMProxy:
    """``litellm --config <file> --host 127.0.0.1 --port P`` with the cost map local and telemetry off."""

    def __init__(self, litellm_bin: Path, openai_base_url: str, api_key: str) -> None:
        self.litellm_bin = litellm_bin
        self.master_key = f"sk-bench-{secrets.token_hex(8)}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._dir = tempfile.TemporaryDirectory(prefix="bench-litellm-")
        self._config = Path(self._dir.name) / "config.yaml"
        self._config.write_text(json.dumps(proxy_config(openai_base_url, api_key), indent=2), encoding="utf-8")
        self._log_path = Path(self._dir.name) / "proxy.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.master_key}"}

    def __enter__(self) -> LiteLLMProxy:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": self._dir.name,
            "LITELLM_MASTER_KEY": self.master_key,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_TELEMETRY": "False",
            "LITELLM_LOG": "ERROR",
            "DISABLE_ADMIN_UI": "True",
            # Only 127.0.0.1 is reachable: anything else goes to a closed port and fails fast.
            "HTTP_PROXY": "http://127.0.0.1:9",
            "HTTPS_PROXY": "http://127.0.0.1:9",
            "NO_PROXY": "127.0.0.1,localhost",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        argv = [str(self.litellm_bin), "--config", str(self._config), "--host", "127.0.0.1", "--port", str(self.port)]
        argv += ["--num_workers", "1", "--telemetry", "False"]
        started = time.monotonic()
        with self._log_path.open("wb") as log:
            # Own process group: stop() can end the proxy and any worker it forked, and nothing else.
            self._proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        progress(f"LiteLLM proxy starting on {self.url} (pid {self._proc.pid})")
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() - started < START_TIMEOUT_S:
                if self._proc.poll() is not None:
                    raise RuntimeError(f"the LiteLLM proxy exited with {self._proc.returncode}:\n{self.log_tail()}")
                try:
                    if client.get(f"{self.url}/health/liveliness").status_code == 200:
                        self.startup_s = time.monotonic() - started
                        progress(f"LiteLLM proxy ready after {self.startup_s:.1f} s")
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"the LiteLLM proxy was not ready within {START_TIMEOUT_S:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=STOP_TIMEOUT_S)
            except ProcessLookupError:
                pass
        self._dir.cleanup()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
