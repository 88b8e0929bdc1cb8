"""A circuit breaker per provider+model whose state is shared by every Lambda instance.

Closed: calls flow; failures that say "this provider is unhealthy" (rate limits, 5xx, timeouts,
connection errors, malformed answers; the gateway decides which) are counted in a fixed window.
At ``failure_threshold`` failures the first instance to notice opens the circuit for ``cooldown_s``
(a conditional write: one opener, one cool-down). Open: every instance skips the model. After the
cool-down the circuit is half-open: exactly one instance wins a conditional "probe" claim and calls;
success closes the circuit, failure opens it again. A probe that never reports back expires.
A provider that refuses the gateway's key (401/403) opens the circuit at once, for the much longer
``auth_cooldown_s`` (GATEWAY_BREAKER_AUTH_COOLDOWN, 300 s), counted as ``ProviderAuthFailures``.

The gateway orders candidates with ``available`` (read-only) and calls ``allow`` only for the model it
is about to call, so a probe is never claimed for a fallback that ends up not being called.

State lives in a small store (DynamoDB item in the usage table, or Momento keys), read through a
local view cached for ``view_ttl_s`` so that a healthy request does not pay a read per candidate. A view
older than that but younger than ``view_ttl_s + view_stale_s`` is still used, while one read refreshes it
in the background (the request that finds it stale does not wait on the store; the next one sees the
fresh state). Older views are read before use.
Store failures are fail-open: a broken breaker must never stop traffic.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from llm_gateway import aws
from llm_gateway.accounting.counters import Counters
from llm_gateway.errors import ServiceUnavailableError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

log = logging.getLogger("llm_gateway.routing.breaker")

Phase = Literal["closed", "open", "half_open"]
DEFAULT_AUTH_COOLDOWN_S = 300  # a provider that refused the gateway's key is left alone this long


@dataclass(frozen=True)
class CircuitState:
    open_until: float = 0.0  # calls are refused until then
    tripped_at: float = 0.0  # when the circuit last opened; 0 when closed
    probe_until: float = 0.0  # a half-open probe is in flight until then
    last_failure_at: float = 0.0

    def phase(self, now: float) -> Phase:
        if not self.tripped_at:
            return "closed"
        return "open" if now < self.open_until else "half_open"


class BreakerStore(Protocol):
    """Shared state operations; each is atomic on the store's side (conditional writes)."""

    async def count_failure(self, circuit: str, now: float, window: int, ttl_s: int) -> tuple[int, CircuitState]:
        """Add one failure to the count for ``window``; returns the new count and the state."""
        ...

    async def read(self, circuit: str) -> CircuitState: ...

    async def trip(self, circuit: str, now: float, open_until: float, ttl_s: int) -> bool:
        """Open the circuit unless it is already open; True if this call opened it."""
        ...

    async def claim_probe(self, circuit: str, now: float, probe_until: float) -> bool:
        """Claim the half-open probe; True for exactly one caller until ``probe_until``."""
        ...

    async def close(self, circuit: str, now: float, window: int, ttl_s: int) -> None:
        """Close a half-open circuit and reset its failure count (no-op if it was re-opened meanwhile)."""
        ...


@dataclass
class _View:
    state: CircuitState
    read_at: float


class SharedCircuitBreaker:
    def __init__(
        self,
        store: BreakerStore,
        *,
        failure_threshold: int = 5,
        window_s: int = 60,
        cooldown_s: int = 30,
        probe_timeout_s: int = 30,
        auth_cooldown_s: int = DEFAULT_AUTH_COOLDOWN_S,
        view_ttl_s: float = 1.0,
        view_stale_s: float = 0.0,
        clock: Callable[[], float] = time.time,
        counters: Counters | None = None,
    ) -> None:
        self.store = store
        self.failure_threshold = failure_threshold
        self.window_s = window_s
        self.cooldown_s = cooldown_s
        self.probe_timeout_s = probe_timeout_s
        self.auth_cooldown_s = auth_cooldown_s
        self.view_ttl_s = view_ttl_s
        self.view_stale_s = view_stale_s
        self._clock = clock
        self.counters = counters or Counters()
        self._views: dict[str, _View] = {}
        self._probing: set[str] = set()
        self._refreshing: dict[str, asyncio.Task[None]] = {}  # circuit -> its background read

    @staticmethod
    def circuit(provider: str, model: str) -> str:
        return f"{provider}#{model}"

    @property
    def state_ttl_s(self) -> int:
        """How long shared state outlives its last write."""
        return max(self.window_s, self.cooldown_s, self.probe_timeout_s, self.auth_cooldown_s) * 10

    async def available(self, provider: str, model: str) -> bool:
        """Read-only: closed, or half-open with no probe known to be in flight. Claims nothing."""
        circuit = self.circuit(provider, model)
        now = self._clock()
        try:
            state = await self._state(circuit, now)
        except Exception as exc:
            self._store_failed("available", exc)
            return True
        phase = state.phase(now)
        if phase == "closed" or (phase == "half_open" and state.probe_until <= now):
            return True
        self.counters.add("BreakerRejected")
        return False

    async def allow(self, provider: str, model: str) -> bool:
        """Just before calling the model: closed goes ahead; half-open goes ahead only for the one
        caller that wins the probe claim."""
        circuit = self.circuit(provider, model)
        now = self._clock()
        try:
            state = await self._state(circuit, now)
            phase = state.phase(now)
            if phase == "closed":
                return True
            if phase == "open":
                self.counters.add("BreakerRejected")
                return False
            won = await self.store.claim_probe(circuit, now, now + self.probe_timeout_s)
        except Exception as exc:
            self._store_failed("allow", exc)
            return True
        if won:
            self._probing.add(circuit)
            self.counters.add("BreakerProbe")
        else:
            self.counters.add("BreakerRejected")
        return won

    async def record(self, provider: str, model: str, *, ok: bool, auth_failure: bool = False) -> None:
        """A call's outcome. ``auth_failure``: the provider refused the gateway's key (401/403)."""
        circuit = self.circuit(provider, model)
        now = self._clock()
        try:
            if auth_failure:
                await self._record_auth_failure(circuit, now)
            elif ok:
                await self._record_success(circuit, now)
            else:
                await self._record_failure(circuit, now)
        except Exception as exc:
            self._store_failed("record", exc)

    async def last_failure_at(self, provider: str, model: str) -> float:
        """When this model last failed, as far as this instance knows (0: never)."""
        view = self._views.get(self.circuit(provider, model))
        return view.state.last_failure_at if view else 0.0

    async def _record_success(self, circuit: str, now: float) -> None:
        view = self._views.get(circuit)
        probing = circuit in self._probing
        self._probing.discard(circuit)
        # Healthy and known closed: no write at all. Successes while open (calls that started
        # before the trip) do not close it; only the cool-down and a probe do.
        if view is None or not view.state.tripped_at:
            return
        if probing or view.state.phase(now) == "half_open":
            await self.store.close(circuit, now, int(now // self.window_s), self.state_ttl_s)
            self._views.pop(circuit, None)
            self.counters.add("BreakerClosed")

    async def _record_failure(self, circuit: str, now: float) -> None:
        window = int(now // self.window_s)
        ttl_s = self.state_ttl_s
        count, state = await self.store.count_failure(circuit, now, window, ttl_s)
        probing = circuit in self._probing
        self._probing.discard(circuit)
        if (probing or count >= self.failure_threshold) and state.phase(now) != "open":
            if await self.store.trip(circuit, now, now + self.cooldown_s, ttl_s):
                log.warning("circuit opened", extra={"circuit": circuit, "failures": count, "probe": probing})
                self.counters.add("BreakerOpened", provider=circuit.partition("#")[0])
            state = await self.store.read(circuit)
        self._views[circuit] = _View(state, now)

    async def _record_auth_failure(self, circuit: str, now: float) -> None:
        """A refused key will be refused again until an operator fixes it: open the circuit at once, for
        ``auth_cooldown_s`` (much longer than a 5xx cool-down), so that every request does not call the
        provider to hear it again. After it, one probe finds out whether the key works now."""
        self.counters.add("ProviderAuthFailures")  # the operator's alarm: a key was revoked or rotated badly
        self._probing.discard(circuit)
        ttl_s = self.state_ttl_s
        await self.store.count_failure(circuit, now, int(now // self.window_s), ttl_s)  # the last-failed time
        if await self.store.trip(circuit, now, now + self.auth_cooldown_s, ttl_s):
            log.error("circuit opened: the provider refused the gateway's key", extra={"circuit": circuit})
            self.counters.add("BreakerOpenedAuth", provider=circuit.partition("#")[0])
        self._views[circuit] = _View(await self.store.read(circuit), now)

    async def _state(self, circuit: str, now: float) -> CircuitState:
        view = self._views.get(circuit)
        if view is not None:
            age = now - view.read_at
            if age < self.view_ttl_s:
                return view.state
            if age < self.view_ttl_s + self.view_stale_s:
                self._refresh_later(circuit)
                return view.state
        state = await self.store.read(circuit)
        self._views[circuit] = _View(state, now)
        return state

    def _refresh_later(self, circuit: str) -> None:
        """One background read of ``circuit`` at a time, on the running loop (kept across invocations)."""
        running = self._refreshing.get(circuit)
        if running is not None and not running.done():
            return
        self._refreshing[circuit] = asyncio.get_running_loop().create_task(self._refresh(circuit))

    async def _refresh(self, circuit: str) -> None:
        try:
            state = await self.store.read(circuit)
        except Exception as exc:
            self._store_failed("refresh", exc)
            return
        self._views[circuit] = _View(state, self._clock())

    def _store_failed(self, operation: str, exc: BaseException) -> None:
        log.warning("circuit breaker store unavailable", extra={"operation": operation, "error": type(exc).__name__})
        self.counters.add("BreakerStoreError")


# --------------------------------------------------------------------------- DynamoDB store


class DynamoDBBreakerStore:
    """One item per circuit in the usage table: ``pk = BREAKER#<provider>#<model>``, ``sk = STATE``.

    Attributes: ``open_until``, ``tripped_at``, ``probe_until``, ``last_failure_at`` (epoch seconds),
    ``fw``/``fc`` (current failure window and its count) and ``expires_at`` (TTL, refreshed on writes).
    """

    def __init__(self, table: str, *, client: Callable[[], DynamoDBClient] | None = None) -> None:
        self.table = table
        self._client = client or (lambda: aws.dynamodb(aws.FAST))

    def _key(self, circuit: str) -> dict[str, dict[str, str]]:
        return {"pk": {"S": f"BREAKER#{circuit}"}, "sk": {"S": "STATE"}}

    async def count_failure(self, circuit: str, now: float, window: int, ttl_s: int) -> tuple[int, CircuitState]:
        values = {":one": _n(1), ":w": _n(window), ":now": _n(now), ":exp": _n(int(now) + ttl_s)}
        same_window = "SET fc = fc + :one, last_failure_at = :now, expires_at = :exp"
        new_window = "SET fc = :one, fw = :w, last_failure_at = :now, expires_at = :exp"
        for _ in range(3):  # at a window boundary two instances may race to start the new window
            for expression, condition in (
                (same_window, "fw = :w"),
                (new_window, "attribute_not_exists(fw) OR fw <> :w"),
            ):
                item = await self._update(circuit, expression, condition, values)
                if item is not None:
                    return int(item["fc"]["N"]), _state_of(item)
        raise ServiceUnavailableError(f"could not count a failure for {circuit}")

    async def read(self, circuit: str) -> CircuitState:
        response = await aws.in_thread(
            self._client().get_item, TableName=self.table, Key=self._key(circuit), ConsistentRead=True
        )
        return _state_of(response.get("Item") or {})

    async def trip(self, circuit: str, now: float, open_until: float, ttl_s: int) -> bool:
        item = await self._update(
            circuit,
            "SET open_until = :until, tripped_at = :now, probe_until = :zero, expires_at = :exp",
            "attribute_not_exists(open_until) OR open_until <= :now",
            {":until": _n(open_until), ":now": _n(now), ":zero": _n(0), ":exp": _n(int(now) + ttl_s)},
        )
        return item is not None

    async def claim_probe(self, circuit: str, now: float, probe_until: float) -> bool:
        item = await self._update(
            circuit,
            "SET probe_until = :probe",
            "tripped_at > :zero AND open_until <= :now AND (attribute_not_exists(probe_until) OR probe_until <= :now)",
            {":probe": _n(probe_until), ":now": _n(now), ":zero": _n(0)},
        )
        return item is not None

    async def close(self, circuit: str, now: float, window: int, ttl_s: int) -> None:
        await self._update(
            circuit,
            "SET open_until = :zero, tripped_at = :zero, probe_until = :zero, fc = :zero",
            "tripped_at > :zero AND open_until <= :now",
            {":zero": _n(0), ":now": _n(now)},
        )

    async def _update(
        self, circuit: str, expression: str, condition: str, values: dict[str, dict[str, str]]
    ) -> dict[str, dict[str, str]] | None:
        """The item after the update, or None when the condition did not hold."""
        try:
            response = await aws.in_thread(
                self._client().update_item,
                TableName=self.table,
                Key=self._key(circuit),
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except Exception as exc:
            if aws.error_code(exc) == "ConditionalCheckFailedException":
                return None
            raise
        return response.get("Attributes", {})  # type: ignore[return-value]


def _n(value: float) -> dict[str, str]:
    return {"N": repr(round(value, 3)) if isinstance(value, float) else str(value)}


def _state_of(item: Mapping[str, Any]) -> CircuitState:
    def number(name: str) -> float:
        attr = item.get(name)
        return float(attr["N"]) if isinstance(attr, dict) and "N" in attr else 0.0

    return CircuitState(
        open_until=number("open_until"),
        tripped_at=number("tripped_at"),
        probe_until=number("probe_until"),
        last_failure_at=number("last_failure_at"),
    )
