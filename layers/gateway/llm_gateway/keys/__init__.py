"""Gateway keys: who is calling, what their key allows, and how fast they may go.

The contract with the HTTP edge (``llm_gateway.http``), for every route a gateway key protects::

    from llm_gateway import keys

    verified = keys.authenticate(event_headers, services)        # 401 missing/invalid, 503, 501
    ctx = RequestContext(tenant=verified.tenant, ..., tags={**verified.context_tags()})
    admission = keys.admit(verified, keys.requested_models(request, settings.default_tier),
                           keys.estimated_tokens(request, settings.default_max_tokens), services)  # 403, 429
    try:
        result = ...  # the core, with ctx
    finally:
        keys.settle(admission, actual_tokens, services)           # never raises; may run after the response

* ``authenticate(headers, services) -> VerifiedKey``: the key from ``Authorization: Bearer <key>`` or
  ``x-api-key: <key>`` (headers.py), verified against the keys table through a per-sandbox cache
  (verifier.py). ``VerifiedKey`` has ``key_id``, ``tenant`` and ``policy``: the tenant and the policy
  reach the core from here only, never from the body or other headers.
* ``VerifiedKey.context_tags()``: ``key_id`` (recorded by the usage ledger) and, for a key with its own
  budget, ``key_budget`` (read by :class:`~llm_gateway.keys.budget.KeyBudgetGuard`).
* ``admit(verified, models, estimated_tokens, services) -> Admission``: the model check (policy.py),
  then one conditional DynamoDB update that enforces requests and tokens per minute exactly across
  instances (limits.py). Call it for completions, extractions, summaries and job submissions;
  ``GET`` routes (usage, job status) need only ``authenticate``.
* ``settle(admission, actual_tokens, services)``: corrects the token reservation.

Errors are :mod:`llm_gateway.errors` classes in OpenAI's shape when rendered by the edge:
``missing_api_key`` / ``invalid_api_key`` 401, ``model_not_allowed`` 403, ``rate_limited`` 429 with
``retry_after`` (send it as ``Retry-After``), ``keys_unavailable`` 503.

Key management (create, list, show, revoke, rotate) is admin.py, used by ``functions/keys_admin``
(IAM-protected routes) and ``make keys``. Nothing here does I/O at import time.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llm_gateway.keys.limits import Admission
    from llm_gateway.keys.policy import KeyPolicy, VerifiedKey
    from llm_gateway.keys.service import (
        KeyService,
        admit,
        authenticate,
        estimated_tokens,
        key_service,
        requested_models,
        settle,
    )

# Loaded on first use: wiring imports keys.budget for every function, and only the HTTP edge needs the
# rest (about 6 ms of imports at a cold start).
_EXPORTS = {
    "Admission": "llm_gateway.keys.limits",
    "KeyPolicy": "llm_gateway.keys.policy",
    "VerifiedKey": "llm_gateway.keys.policy",
    **{
        name: "llm_gateway.keys.service"
        for name in (
            "KeyService",
            "admit",
            "authenticate",
            "estimated_tokens",
            "key_service",
            "requested_models",
            "settle",
        )
    },
}

__all__ = [
    "Admission",
    "KeyPolicy",
    "KeyService",
    "VerifiedKey",
    "admit",
    "authenticate",
    "estimated_tokens",
    "key_service",
    "requested_models",
    "settle",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'llm_gateway.keys' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
