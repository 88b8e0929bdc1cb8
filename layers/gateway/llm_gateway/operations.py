"""The gateway's operations by name, so that every entry point (HTTP, S3, Step Functions, the job worker)
can run any of them from a plain JSON payload.

Each operation is an async function ``(payload, ctx) -> dict`` living in its own module, imported on
first use so that a function only pays for what it runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from typing import Any

from .errors import InvalidRequestError
from .seams import RequestContext

Operation = Callable[[dict[str, Any], RequestContext], Awaitable[dict[str, Any]]]

# name -> "module:function", relative to this package
_OPERATIONS: dict[str, str] = {
    "completion": "completion_op:run_completion",
}


def register(name: str, target: str) -> None:
    """Add an operation (``"module:function"`` inside llm_gateway); modules call this for their own."""
    _OPERATIONS[name] = target


def names() -> list[str]:
    return sorted(_OPERATIONS)


def resolve(name: str) -> Operation:
    try:
        module_name, func_name = _OPERATIONS[name].split(":")
    except KeyError:
        raise InvalidRequestError(f"unknown operation '{name}'", details={"operations": names()}) from None
    module = importlib.import_module(f"{__package__}.{module_name}")
    operation: Operation = getattr(module, func_name)
    return operation


async def run(name: str, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
    return await resolve(name)(payload, ctx)
