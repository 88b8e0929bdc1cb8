"""The client-compatibility venv (``make compat-venv``) and a way to run one of tests/compat's scripts in it
against the local stack: the script prints JSON per model, read back here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from local.stack import LocalStack

ROOT = Path(__file__).resolve().parents[2]
COMPAT_PYTHON = ROOT / ".venv-compat" / "bin" / "python"
KEY = "key-a"
MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-3-5-haiku-latest", "gemini": "gemini-2.0-flash"}


def ensure_compat_python() -> Path:
    """The venv's interpreter, (re)built through the same make target as ``make test`` when it is missing or
    older than its pins."""
    stamp = ROOT / ".venv-compat" / ".installed"
    pins = [ROOT / "tests" / "compat" / name for name in ("requirements.txt", "requirements-nodeps.txt")]
    if not stamp.exists() or stamp.stat().st_mtime < max(p.stat().st_mtime for p in pins):
        make = subprocess.run(
            ["make", "compat-venv", f"PYTHON={sys.executable}"], cwd=ROOT, capture_output=True, text=True, timeout=900
        )
        if make.returncode != 0:
            pytest.fail(f"`make compat-venv` failed:\n{make.stdout[-2000:]}\n{make.stderr[-2000:]}")
    return COMPAT_PYTHON


def run_compat_script(
    python: Path, stack: LocalStack, script: str, client: str, *extra: str, check_errors: bool = True
) -> dict[str, Any]:
    """Run ``tests/compat/<script>`` for ``client`` on every model of ``MODELS``; its JSON, per model."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AWS_"))}
    completed = subprocess.run(
        [
            str(python),
            str(ROOT / "tests" / "compat" / script),
            client,
            "--base-url",
            f"{stack.api_url}/v1",
            "--key",
            KEY,
            "--models",
            ",".join(MODELS.values()),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results: dict[str, Any] = json.loads(completed.stdout)
    if check_errors:
        for model, result in results.items():
            assert "error" not in result, f"{client} on {model}: {result['error']}\n{result.get('traceback')}"
    return results
