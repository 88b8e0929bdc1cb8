"""Completion as a named operation (payload in, JSON-ready result out)."""

from __future__ import annotations

from typing import Any

from . import api
from .models import CompletionRequest
from .seams import RequestContext
from .service import default_gateway


async def run_completion(payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
    request = api.validate(CompletionRequest, payload)
    result = await default_gateway().complete(request, ctx)
    return result.model_dump(mode="json")
