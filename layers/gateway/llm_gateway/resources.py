"""Locate the data files in ``shared/`` (catalog, prompts, schemas) wherever the code runs.

In Lambda they are bundled into the layer; in a checkout they sit at the repository root.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path


@cache
def shared_dir() -> Path:
    explicit = os.environ.get("GATEWAY_SHARED_DIR")
    if explicit and Path(explicit).is_dir():
        return Path(explicit)
    here = Path(__file__).resolve().parent
    bundled = here / "_shared"
    if bundled.is_dir():
        return bundled
    for parent in here.parents:  # a checkout: layers/gateway/llm_gateway -> repo root
        candidate = parent / "shared"
        if (candidate / "catalog.json").is_file():
            return candidate
    raise FileNotFoundError("cannot find the shared/ data directory; set GATEWAY_SHARED_DIR")
