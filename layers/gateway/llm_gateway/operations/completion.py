"""Completion as a named operation (payload in, JSON-ready result out)."""

from __future__ import annotations

from typing import Any

from llm_gateway.http import framing as api
from llm_gateway.interfaces import RequestContext
from llm_gateway.models import CompletionRequest
from llm_gateway.wiring import Services


async def run_completion(payload: dict[str, Any], ctx: RequestContext, services: Services) -> dict[str, Any]:
    request = api.validate(CompletionRequest, payload)
    result = await services.gateway().complete(request, ctx)
    return result.model_dump(mode="json")
