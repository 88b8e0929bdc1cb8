"""How much of a request's time one candidate model may use, so that a hung provider leaves time to fall back.

Without a share, the first model's call (and its retries) may use the whole deadline: behind API
Gateway's 29 seconds, one slow provider then becomes a 504 although another could have answered. A
model with fallbacks after it gets at most ``FALLBACK_SHARE`` of the time left, though never less than
``MIN_SHARE_S`` (its per-attempt timeout and its retry waits are bounded by it, as by any deadline); the
last one gets all that remains.
"""

from __future__ import annotations

import dataclasses

from llm_gateway.interfaces import RequestContext
from llm_gateway.routing.deadline import Deadline

FALLBACK_SHARE = 0.5  # the next model then gets at least as long as this one had
# Never cut a model's time below this: near the end of an invocation, halves too short for either model
# to answer would turn one call that could succeed into two that time out.
MIN_SHARE_S = 5.0


def candidate_context(ctx: RequestContext, *, fallbacks_left: int) -> RequestContext:
    """``ctx`` with the deadline one candidate runs under, given how many candidates follow it."""
    if fallbacks_left <= 0:
        return ctx
    remaining = ctx.deadline.remaining()
    share = max(remaining * FALLBACK_SHARE, MIN_SHARE_S)
    if share >= remaining:
        return ctx
    return dataclasses.replace(ctx, deadline=Deadline(share))
