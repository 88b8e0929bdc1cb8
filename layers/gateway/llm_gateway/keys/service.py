"""The entry points the HTTP edge calls (see the package docstring for the contract).

One :class:`KeyService` per :class:`~llm_gateway.wiring.Services`, built on first use and kept for the
sandbox's life (its verifier cache is the per-sandbox cache), so the edge needs no new wiring.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from llm_gateway.errors import ModelNotAllowedError, NotConfiguredError
from llm_gateway.keys.headers import presented_key
from llm_gateway.keys.limits import Admission, RateLimiter
from llm_gateway.keys.policy import VerifiedKey, first_refused
from llm_gateway.keys.store import KeyStore
from llm_gateway.keys.verifier import KeyVerifier

if TYPE_CHECKING:
    from llm_gateway.config import Settings
    from llm_gateway.models import CompletionRequest
    from llm_gateway.wiring import Services


class KeyService:
    def __init__(
        self,
        settings: Settings,
        *,
        store: KeyStore | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if store is None:
            if not settings.keys_table:
                raise NotConfiguredError("gateway keys are not configured here (KEYS_TABLE)")
            store = KeyStore(settings.keys_table)
        self.store = store
        self.verifier = KeyVerifier(
            store,
            ttl_s=settings.key_cache_ttl_s,
            negative_ttl_s=settings.key_negative_cache_ttl_s,
            clock=clock,
            monotonic=monotonic,
        )
        self.limiter = RateLimiter(store, clock=clock)

    def authenticate(self, headers: Mapping[str, str] | None) -> VerifiedKey:
        return self.verifier.verify(presented_key(headers))

    def admit(self, key: VerifiedKey, models: str | Sequence[str], estimated_tokens: int) -> Admission:
        names = [models] if isinstance(models, str) else list(models)
        refused = first_refused(key.policy, names)
        if refused is not None:
            raise ModelNotAllowedError(
                f"this key may not use {refused!r}", details={"param": "model", "allowed": list(key.policy.allowed)}
            )
        return self.limiter.admit(key, estimated_tokens)

    def settle(self, admission: Admission, actual_tokens: int) -> None:
        self.limiter.settle(admission, actual_tokens)


_services: weakref.WeakKeyDictionary[Services, KeyService] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def key_service(services: Services) -> KeyService:
    """The key service of these services (one per process in Lambda); NotConfiguredError without KEYS_TABLE."""
    with _lock:
        found = _services.get(services)
        if found is None:
            found = KeyService(services.settings)
            _services[services] = found
        return found


def authenticate(headers: Mapping[str, str] | None, services: Services) -> VerifiedKey:
    """The verified key of a request, from its headers only. Raises MissingApiKeyError /
    InvalidApiKeyError (401), KeyStoreUnavailableError (503), NotConfiguredError (501)."""
    return key_service(services).authenticate(headers)


def admit(key: VerifiedKey, models: str | Sequence[str], estimated_tokens: int, services: Services) -> Admission:
    """Before any provider call: every model or tier the request names must be allowed (else
    ModelNotAllowedError, 403), then the key's rate limits are charged 1 request and
    ``estimated_tokens`` (else KeyRateLimitedError, 429 with ``retry_after``)."""
    return key_service(services).admit(key, models, estimated_tokens)


def settle(admission: Admission, actual_tokens: int, services: Services) -> None:
    """After the call (success or failure): the actual tokens (input + output; 0 when nothing was
    spent). Never raises; safe to run after the response."""
    key_service(services).settle(admission, actual_tokens)


def requested_models(request: CompletionRequest, default_tier: str) -> list[str]:
    """The names a request asks for, as the caller wrote them: ``model`` (or ``tier:<tier>``, or the
    default tier when it names neither) and every explicit ``fallback``."""
    first = request.model or f"tier:{request.tier or default_tier}"
    return [first, *(request.fallback or [])]


def estimated_tokens(request: CompletionRequest, default_max_tokens: int) -> int:
    """Tokens to reserve against tokens-per-minute: the prompt's estimate plus ``max_tokens`` of output."""
    from llm_gateway.documents.tokens import estimate_message_tokens

    return estimate_message_tokens(request.messages) + (request.max_tokens or default_max_tokens)
