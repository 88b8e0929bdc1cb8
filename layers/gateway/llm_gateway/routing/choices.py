"""``n`` > 1 for providers without native choices: the same request, n times in parallel, merged.

Each call goes through the retry policy on its own and is its own attempt (ledger, cost, breaker),
so the answer's usage and cost are the sum of what was actually called. If one call fails for good,
the others are cancelled and the failure is the model's (the caller falls back as for one call).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from llm_gateway.models import Choice, ProviderResponse, Usage


async def in_parallel(call: Callable[[], Awaitable[ProviderResponse]], times: int) -> ProviderResponse:
    tasks = [asyncio.ensure_future(call()) for _ in range(times)]
    try:
        responses = list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return merge(responses)


def merge(responses: list[ProviderResponse]) -> ProviderResponse:
    """One response whose choices are all of theirs, in order, with their usage summed."""
    first, *rest = responses
    alternatives = list(first.alternatives)
    for response in rest:
        alternatives.append(
            Choice(content=response.content, finish_reason=response.finish_reason, logprobs=response.logprobs)
        )
        alternatives.extend(response.alternatives)
    return first.model_copy(update={"alternatives": alternatives, "usage": sum((r.usage for r in responses), Usage())})
