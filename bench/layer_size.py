"""Part 4: the built layer's unzipped size and its largest packages (reuses local/build_layer.py).

The layer is rebuilt when it is missing or older than the gateway package / ``shared/`` / requirements,
so that the cold-start part never times stale code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from local import build_layer

DEFAULT_LAYER = build_layer.REPO_ROOT / ".build" / "layer"
SIZE_TARGET_MB = 30.0
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer")  # in the Lambda runtime; never counted


def _newest_mtime(paths: list[Path]) -> float:
    newest = 0.0
    for root in paths:
        if root.is_file():
            newest = max(newest, root.stat().st_mtime)
            continue
        for path in root.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                newest = max(newest, path.stat().st_mtime)
    return newest


def is_stale(layer_dir: Path = DEFAULT_LAYER) -> bool:
    marker = layer_dir / build_layer.MARKER
    if not marker.is_file() or not (layer_dir / "python" / "llm_gateway").is_dir():
        return True
    sources = [build_layer.GATEWAY_PACKAGE, build_layer.SHARED_DIR, build_layer.REQUIREMENTS]
    return _newest_mtime(sources) > marker.stat().st_mtime


def ensure_layer(layer_dir: Path = DEFAULT_LAYER, *, log: Any = print) -> Path:
    """The layer's ``python/`` directory, (re)built first when stale."""
    if is_stale(layer_dir):
        log(f"building the layer into {layer_dir} (missing or older than the sources)")
        build_layer.build_layer(layer_dir, log=log)
    return layer_dir / "python"


def measure(layer_dir: Path = DEFAULT_LAYER, *, top: int = 10) -> dict[str, Any]:
    python_dir = layer_dir / "python"
    sizes = build_layer.package_sizes(python_dir)
    bundled_runtime = [name for name, _ in sizes if name in RUNTIME_PROVIDED]
    counted = [(name, size) for name, size in sizes if name not in RUNTIME_PROVIDED]
    total = sum(size for _, size in counted)
    pyc = sum(p.stat().st_size for p in python_dir.rglob("*.pyc"))
    return {
        "layer_dir": str(layer_dir),
        "unzipped_mb": total / 1e6,
        "pyc_mb": pyc / 1e6,
        "with_momento": any(name == "momento" for name, _ in sizes),
        "runtime_packages_bundled": bundled_runtime,  # should be empty: boto3 is in the runtime
        "largest": [{"package": name, "mb": size / 1e6} for name, size in counted[:top]],
        "target_mb": SIZE_TARGET_MB,
    }
