"""The response cache: key derivation and policy, over a two-method backend (DynamoDB or Momento).

Policy lives here, once, whatever the backend:

* Key: a sha256 of the scope (tenant and namespace as separate fields, or an explicitly shared
  namespace), the catalog fingerprint (its version plus a hash of its content, so a price or wire-model
  change invalidates entries) and the canonical request: route as resolved (model, or tier after the
  default), fallbacks, capabilities, messages, every sampling parameter, the response format with its
  schema, and the prompt version. Two tenants therefore never share an entry, unless both ask for the
  same ``shared:`` namespace.
* Only deterministic requests are cached (temperature 0, or ``cache.force``); only complete answers
  are stored (finish reason ``stop``, non-empty, valid JSON when JSON was asked for): never errors,
  refusals or truncated answers.
* ``no_cache`` skips the read, ``no_store`` the write, ``ttl_seconds`` overrides the default TTL,
  ``namespace`` partitions (within the tenant, or across tenants with the ``shared:`` prefix).
* A backend that fails or is slower than ``timeout_s`` is skipped (fail-open): logged, counted, and
  the request goes on to the provider.
* Entries are zlib-compressed above a few KB. One still larger than the backend takes (a DynamoDB
  item) goes to S3 when the backend has a bucket (see dynamodb.py), else it is not stored (counted),
  never an exception.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from pydantic import ValidationError

from llm_gateway.accounting.counters import Counters
from llm_gateway.errors import InvalidRequestError
from llm_gateway.interfaces import RequestContext
from llm_gateway.models import CacheControl, Choice, CompletionRequest, CompletionResult, Usage
from llm_gateway.observability.spans import traced
from llm_gateway.tool_models import ToolCall

log = logging.getLogger("llm_gateway.accounting.cache")

KEY_VERSION = 2
SHARED_PREFIX = "shared:"
COMPRESS_ABOVE_BYTES = 4_096
_RAW, _ZLIB = b"J", b"Z"


class CacheBackend(Protocol):
    """Bytes in, bytes out. Expired entries must read as misses. Errors are raised, not swallowed."""

    name: str
    max_value_bytes: int

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None: ...


# --------------------------------------------------------------------------- keys


def cache_scope(tenant: str, namespace: str | None) -> dict[str, str | None]:
    """Whose entries these are: a ``shared:`` namespace is the only way across tenants.

    Separate fields, hashed as JSON: no tenant id can be crafted to collide with another tenant's
    namespace (as joining them into one string would allow).
    """
    if namespace and namespace.startswith(SHARED_PREFIX):
        return {"shared": namespace.removeprefix(SHARED_PREFIX)}
    if not tenant:
        raise ValueError("a cache scope needs a tenant")
    return {"tenant": tenant, "namespace": namespace or None}


def canonical_request(request: CompletionRequest, *, default_tier: str, default_max_tokens: int) -> dict[str, Any]:
    """Everything that can change the answer, with defaults resolved; nothing that cannot (metadata)."""
    fmt = request.response_format
    canonical: dict[str, Any] = {
        "route": {
            "model": request.model,
            "tier": None if request.model else (request.tier or default_tier),
            "fallback": request.fallback,
            "capabilities": sorted(set(request.capabilities)),
        },
        "messages": [m.model_dump(mode="json", exclude_none=True) for m in request.messages],
        "params": {
            "max_tokens": request.max_tokens or default_max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "stop": request.stop,
            "seed": request.seed,
            **_choice_params(request),
        },
        "format": fmt.model_dump(mode="json", by_alias=True) if fmt is not None else None,
        "prompt_version": request.prompt_version,
    }
    if request.tools or request.tool_choice is not None or request.parallel_tool_calls is not None:
        # Only when present: the keys of requests without tools stay what they were.
        canonical["tools"] = {
            "tools": [t.model_dump(mode="json") for t in request.tools or []],
            "tool_choice": request.tool_choice
            if isinstance(request.tool_choice, str | None)
            else request.tool_choice.model_dump(mode="json"),
            "parallel_tool_calls": request.parallel_tool_calls,
        }
    return canonical


def _choice_params(request: CompletionRequest) -> dict[str, Any]:
    """n, logprobs and the other newer parameters, only when set: keys of requests without them are
    unchanged (existing entries stay valid)."""
    values = {
        "n": request.n if request.n != 1 else None,
        "logprobs": request.logprobs or None,
        "top_logprobs": request.top_logprobs or None,
        "presence_penalty": request.presence_penalty,
        "frequency_penalty": request.frequency_penalty,
        "logit_bias": request.logit_bias or None,
        "top_k": request.top_k,
    }
    return {k: v for k, v in values.items() if v is not None}


def cache_key(
    tenant: str,
    request: CompletionRequest,
    *,
    catalog_version: str,
    default_tier: str = "fast",
    default_max_tokens: int = 1024,
) -> str:
    namespace = request.cache.namespace if request.cache else None
    material = {
        "v": KEY_VERSION,
        "scope": cache_scope(tenant, namespace),
        "catalog": catalog_version,
        "request": canonical_request(request, default_tier=default_tier, default_max_tokens=default_max_tokens),
    }
    canonical = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return f"v{KEY_VERSION}:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- policy


def is_cacheable_request(request: CompletionRequest) -> bool:
    return request.is_deterministic() or bool(request.cache and request.cache.force)


def is_cacheable_result(request: CompletionRequest, result: CompletionResult) -> bool:
    """Complete answers only: no truncation, refusal or error, and parseable JSON when JSON was asked for;
    a tool-call answer is complete when it has its calls; with n > 1, every choice (they are stored
    together, as one entry)."""
    first = (result.finish_reason, result.content, bool(result.tool_calls))
    answers = [first] + [(c.finish_reason, c.content, bool(c.tool_calls)) for c in result.alternatives]
    for finish_reason, content, has_calls in answers:
        if finish_reason == "tool_calls":
            if not has_calls:
                return False
            continue
        if finish_reason != "stop" or not content.strip():
            return False
        if request.response_format is not None:
            try:
                json.loads(content)
            except ValueError:
                return False
    return True


def encode_entry(result: CompletionResult) -> bytes:
    """Only the answer itself: never the request's metadata, attempts or ids (a shared entry must not leak them)."""
    body = json.dumps(
        {
            "content": result.content,
            **({"tool_calls": [c.model_dump(mode="json") for c in result.tool_calls]} if result.tool_calls else {}),
            "provider": result.provider,
            "model": result.model,
            "finish_reason": result.finish_reason,
            "usage": result.usage.model_dump(),
            "cost_usd": result.cost_usd,
            "stored_at": int(time.time()),
            # Only when present, so entries without them read as before.
            **({"logprobs": result.logprobs} if result.logprobs is not None else {}),
            **({"alternatives": [c.model_dump() for c in result.alternatives]} if result.alternatives else {}),
        },
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode("utf-8")
    if len(body) > COMPRESS_ABOVE_BYTES:
        return _ZLIB + zlib.compress(body, 6)
    return _RAW + body


def decode_entry(value: bytes, request: CompletionRequest) -> tuple[CompletionResult, float]:
    """The cached answer, shaped for this request, and what it originally cost (what the hit saved)."""
    kind, payload = value[:1], value[1:]
    if kind == _ZLIB:
        payload = zlib.decompress(payload)
    elif kind != _RAW:
        raise ValueError("unknown cache entry encoding")
    data = json.loads(payload)
    result = CompletionResult(
        content=data["content"],
        tool_calls=[ToolCall.model_validate(c) for c in data["tool_calls"]] if data.get("tool_calls") else None,
        provider=data["provider"],
        model=data["model"],
        finish_reason=data["finish_reason"],
        usage=Usage.model_validate(data["usage"]),
        cost_usd=0.0,  # this answer cost nothing now
        latency_ms=0.0,
        attempts=[],
        cached=True,
        metadata=dict(request.metadata),
        logprobs=data.get("logprobs"),
        alternatives=[Choice.model_validate(c) for c in data.get("alternatives", [])],
    )
    return result, float(data.get("cost_usd", 0.0))


HitObserver = Callable[[RequestContext, CompletionResult, float], Awaitable[None]]


class CompletionCache:
    """The gateway's ResponseCache: policy, fail-open and counters over any CacheBackend.

    ``on_hit(ctx, result, saved_usd)`` is told of every hit (the usage ledger counts them).
    """

    def __init__(
        self,
        backend: CacheBackend,
        *,
        catalog_version: str,
        default_ttl_s: int = 86_400,
        timeout_s: float = 0.5,
        default_tier: str = "fast",
        default_max_tokens: int = 1024,
        counters: Counters | None = None,
        on_hit: HitObserver | None = None,
    ) -> None:
        self.backend = backend
        self.on_hit = on_hit
        self.catalog_version = catalog_version
        self.default_ttl_s = default_ttl_s
        self.timeout_s = timeout_s
        self.default_tier = default_tier
        self.default_max_tokens = default_max_tokens
        self.counters = counters or Counters()

    def key_for(self, tenant: str, request: CompletionRequest) -> str:
        return cache_key(
            tenant,
            request,
            catalog_version=self.catalog_version,
            default_tier=self.default_tier,
            default_max_tokens=self.default_max_tokens,
        )

    @traced("cache.lookup")
    async def lookup(self, ctx: RequestContext, request: CompletionRequest) -> CompletionResult | None:
        if not is_cacheable_request(request):
            self.counters.add("CacheBypass")
            return None
        if request.cache and request.cache.no_cache:
            self.counters.add("CacheReadSkipped")
            return None
        key = self.key_for(ctx.tenant, request)
        try:
            value = await asyncio.wait_for(self.backend.get(key), timeout=self.timeout_s)
        except Exception as exc:  # down, slow or refusing: the request still succeeds without the cache
            self._unavailable("get", exc)
            return None
        if value is None:
            self.counters.add("CacheMiss")
            return None
        try:
            hit, saved_usd = decode_entry(value, request)
        except (ValueError, KeyError, TypeError, ValidationError, zlib.error):
            log.warning("unreadable cache entry ignored", extra={"backend": self.backend.name})
            self.counters.add("CacheCorruptEntry")
            return None
        self.counters.add("CacheHit")
        if self.on_hit is not None:
            await self.on_hit(ctx, hit, saved_usd)
        return hit

    @traced("cache.store")
    async def store(self, ctx: RequestContext, request: CompletionRequest, result: CompletionResult) -> None:
        if result.cached or not is_cacheable_request(request) or (request.cache and request.cache.no_store):
            return
        if not is_cacheable_result(request, result):
            self.counters.add("CacheNotStoredIncomplete")
            return
        value = encode_entry(result)
        if len(value) > self.backend.max_value_bytes:
            log.warning(
                "answer too large to cache",
                extra={"bytes": len(value), "limit": self.backend.max_value_bytes, "backend": self.backend.name},
            )
            self.counters.add("CacheNotStoredTooLarge")
            return
        ttl = request.cache.ttl_seconds if request.cache and request.cache.ttl_seconds else self.default_ttl_s
        key = self.key_for(ctx.tenant, request)
        await ctx.defer.soon(lambda: self._set(key, value, ttl))

    async def _set(self, key: str, value: bytes, ttl: int) -> None:
        try:
            await asyncio.wait_for(self.backend.set(key, value, ttl), timeout=self.timeout_s)
        except Exception as exc:
            self._unavailable("set", exc)
            return
        self.counters.add("CacheStore")

    def _unavailable(self, operation: str, exc: BaseException) -> None:
        timed_out = isinstance(exc, TimeoutError)
        log.warning(
            "cache unavailable, continuing without it",
            extra={"backend": self.backend.name, "operation": operation, "error": type(exc).__name__},
        )
        self.counters.add("CacheTimeout" if timed_out else "CacheError")


# --------------------------------------------------------------------------- HTTP controls


def cache_control_from_headers(headers: Mapping[str, str], base: CacheControl | None = None) -> CacheControl | None:
    """``Cache-Control: no-cache, no-store`` plus ``x-gateway-cache-ttl`` / ``-namespace`` / ``-force``.

    For callers (like the OpenAI client) whose body has no ``cache`` field. Header names are
    case-insensitive; returns ``base`` unchanged when no cache header is present.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    directives = {d.strip().split("=", 1)[0].lower() for d in lowered.get("cache-control", "").split(",") if d.strip()}
    updates: dict[str, Any] = {}
    if "no-cache" in directives:
        updates["no_cache"] = True
    if "no-store" in directives:
        updates["no_store"] = True
    if (ttl := lowered.get("x-gateway-cache-ttl")) is not None:
        updates["ttl_seconds"] = ttl
    if (namespace := lowered.get("x-gateway-cache-namespace")) is not None:
        updates["namespace"] = namespace
    if (force := lowered.get("x-gateway-cache-force")) is not None:
        updates["force"] = force.strip().lower() in ("1", "true", "yes")
    if not updates:
        return base
    merged = {**(base.model_dump() if base else {}), **updates}
    try:
        return CacheControl.model_validate(merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = "header x-gateway-cache-" + ".".join(str(p) for p in first["loc"]).replace("_seconds", "")
        raise InvalidRequestError(f"{param}: {first['msg']}", details={"param": param}) from None


__all__ = [
    "CacheBackend",
    "CompletionCache",
    "cache_control_from_headers",
    "cache_key",
    "cache_scope",
    "canonical_request",
    "is_cacheable_request",
    "is_cacheable_result",
]
