"""What every instance knows about each deployment's quota, and the reservations against it.

* **Plan**: the deployments of a model in the order to try (``selection.order``), those known to be
  exhausted left out, with when each has room again. The shared state (window counts, exhausted-until)
  is read in one BatchGetItem for all of them, at most once per ``view_ttl_s`` per instance: another
  instance's "exhausted" is seen at most ``view_ttl_s`` late (plus one read); this instance's own at once.
* **Admit**: a deployment with declared RPM/TPM gets a reservation in the shared window counter (one
  conditional UpdateItem; a refusal means the window is full: try the next deployment). Tokens are
  reserved from the estimate (input + max output) and **settled** to what the call used afterwards.
  A deployment without declared limits costs no store call at all.
* **Observe**: every answer's rate-limit snapshot and every 429; "0 left" or a 429 marks the deployment
  exhausted until its reset, here at once and in the shared state for every other instance.

Store failures are fail-open (the provider's own 429s and headers remain the backstop), counted as
``QuotaStoreError``; a broken quota store must not stop traffic.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from llm_gateway.quotas import selection
from llm_gateway.quotas.metrics import QuotaMetrics
from llm_gateway.quotas.model import Deployment, RateLimitSnapshot, Target
from llm_gateway.quotas.store import Admission, SharedQuota

log = logging.getLogger("llm_gateway.quotas")

DEFAULT_429_WAIT_S = 1.0  # a 429 that names no reset: leave the deployment alone this long


class QuotaStore(Protocol):
    async def reserve(
        self,
        deployment: str,
        window: int,
        *,
        requests: int,
        tokens: int,
        rpm: int | None,
        tpm: int | None,
        expires_at: int,
    ) -> Admission: ...

    async def adjust(self, deployment: str, window: int, *, requests: int = 0, tokens: int = 0) -> None: ...

    async def mark_exhausted(self, deployment: str, until: float) -> bool: ...

    async def read(self, deployments: Sequence[str], window: int) -> dict[str, SharedQuota]: ...


@dataclass
class _View:
    window: int = -1
    requests: int = 0  # shared counts of the window, as last seen (they only grow within a window)
    tokens: int = 0
    in_flight: int = 0  # this instance's reservations sent and not yet answered
    local_calls: int = 0  # this instance's calls in the window (the share of deployments without limits)
    exhausted_until: float = 0.0
    read_at: float = float("-inf")
    hint: float | None = None  # utilisation the provider's headers gave, good until hint_until
    hint_until: float = 0.0


@dataclass(frozen=True)
class QuotaTicket:
    """A call's hold on a deployment's window: settle it with the tokens the call used."""

    deployment: Deployment
    window: int
    tokens: int = 0  # reserved in the shared counter
    counted: bool = False  # False: nothing was written (no limits declared, or the store failed)
    next_window_too: bool = False  # reserved near the window's end: counted in the next window as well


@dataclass
class QuotaPlan:
    targets: list[Target]  # to try, best first
    resets: dict[str, float] = field(default_factory=dict)  # skipped deployment -> when it has room again


class QuotaTracker:
    def __init__(
        self,
        store: QuotaStore | None,
        *,
        window_s: float = 60.0,
        view_ttl_s: float = 1.0,
        boundary_guard_s: float = 0.25,
        clock: Callable[[], float] = time.time,
        metrics: QuotaMetrics | None = None,
    ) -> None:
        self.store = store
        self.window_s = window_s
        self.view_ttl_s = view_ttl_s
        self.boundary_guard_s = boundary_guard_s
        self._clock = clock
        self.metrics = metrics or QuotaMetrics()
        self._views: dict[str, _View] = {}
        self._lock = threading.Lock()  # views are shared by the invocations of every thread
        self._refreshing: set[str] = set()

    def now(self) -> float:
        return self._clock()

    def window(self, now: float) -> int:
        return int(now // self.window_s)

    def window_end(self, window: int) -> float:
        return (window + 1) * self.window_s

    # --- plan

    async def plan(self, targets: Sequence[Target]) -> QuotaPlan:
        now = self._clock()
        window = self.window(now)
        await self._refresh([t.deployment for t in targets], now, window)
        loads: list[selection.Load] = []
        resets: dict[str, float] = {}
        with self._lock:
            views = [self._view(t.deployment.id, window) for t in targets]
            total_calls = sum(v.local_calls for v in views)
            for target, view in zip(targets, views, strict=True):
                dep = target.deployment
                until = view.exhausted_until
                if _full(dep, view):  # the shared counter says so: no point asking it again this window
                    until = max(until, self.window_end(window))
                used = self._utilisation(dep, view, total_calls, now)
                loads.append(selection.Load(dep.id, dep.weight, used, until))
                if until > now:
                    resets[dep.id] = until
        chosen = selection.order(loads, now)
        for deployment in resets:
            self.metrics.skipped(deployment)
        by_id = {t.deployment.id: t for t in targets}
        return QuotaPlan([by_id[d] for d in chosen], resets)

    # --- admit and settle

    async def admit(self, target: Target, *, requests: int, tokens: int) -> QuotaTicket | None:
        """A hold on the deployment's window, or None when its declared limits refuse this call."""
        dep = target.deployment
        now = self._clock()
        window = self.window(now)
        with self._lock:
            view = self._view(dep.id, window)
            view.local_calls += requests
            counted = self.store is not None and (dep.rpm is not None or dep.tpm is not None)
            if counted:
                view.in_flight += requests
        if not counted or self.store is None:
            return QuotaTicket(dep, window)
        reserved = min(tokens, dep.tpm) if dep.tpm is not None else 0
        # Near the window's end the call may reach the provider in its next window: count it in both, so
        # that neither window can hold more than the limit wherever the provider counts it.
        windows = [window, window + 1] if self.window_end(window) - now < self.boundary_guard_s else [window]
        try:
            admission = await self._reserve_in(dep, windows, requests, reserved)
        except Exception as exc:
            self._store_failed("reserve", exc)
            return QuotaTicket(dep, window)
        finally:
            with self._lock:
                view.in_flight -= requests
        with self._lock:
            self._see(view, window, admission.counts.requests, admission.counts.tokens)
            used = self._utilisation(dep, view, view.local_calls, now)
        if not admission.admitted:
            self.metrics.skipped(dep.id)
            return None
        self.metrics.utilisation(dep.id, used)
        return QuotaTicket(dep, window, tokens=reserved, counted=True, next_window_too=len(windows) > 1)

    async def _reserve_in(self, dep: Deployment, windows: list[int], requests: int, tokens: int) -> Admission:
        """Reserve in every one of ``windows`` or none (a refusal takes back what was reserved before it).
        The admission returned is the first window's."""
        assert self.store is not None
        first: Admission | None = None
        for index, window in enumerate(windows):
            admission = await self.store.reserve(
                dep.id,
                window,
                requests=requests,
                tokens=tokens,
                rpm=dep.rpm,
                tpm=dep.tpm,
                expires_at=int(self.window_end(window)),
            )
            first = first or admission
            if not admission.admitted:
                for taken in windows[:index]:
                    await self.store.adjust(dep.id, taken, requests=-requests, tokens=-tokens)
                return Admission(False, first.counts)
        assert first is not None
        return first

    async def settle(self, ticket: QuotaTicket, used_tokens: int) -> None:
        """Correct the reservation's token estimate by what the call used (nothing to do without a TPM)."""
        if not ticket.counted or ticket.deployment.tpm is None or self.store is None:
            return
        windows = [ticket.window, ticket.window + 1] if ticket.next_window_too else [ticket.window]
        try:
            for window in windows:
                await self.store.adjust(ticket.deployment.id, window, tokens=used_tokens - ticket.tokens)
        except Exception as exc:
            self._store_failed("settle", exc)

    def reset_after_refusal(self, ticket_window: int | None = None) -> float:
        """When a deployment whose window refused a reservation has room again: the window's end."""
        return self.window_end(self.window(self._clock()) if ticket_window is None else ticket_window)

    def exhausted_until(self, deployment: str) -> float:
        """When this instance believes the deployment has room again (0: it has now)."""
        with self._lock:
            view = self._views.get(deployment)
            return view.exhausted_until if view is not None else 0.0

    # --- observe

    async def observe(
        self,
        deployment: Deployment,
        snapshot: RateLimitSnapshot | None,
        *,
        rate_limited: bool = False,
        retry_after_s: float | None = None,
    ) -> float | None:
        """Learn from an answer (or a 429). Returns the time the deployment is exhausted until, if it is."""
        now = self._clock()
        until = snapshot.exhausted_until() if snapshot is not None else None
        if rate_limited:
            self.metrics.rate_limited(deployment.id)
            known = [t for t in (until, now + retry_after_s if retry_after_s else None) if t is not None]
            until = max(known) if known else now + DEFAULT_429_WAIT_S
        with self._lock:
            view = self._view(deployment.id, self.window(now))
            if snapshot is not None and (hint := _hint(snapshot)) is not None:
                resets = [t for t in (snapshot.requests_reset_at, snapshot.tokens_reset_at) if t is not None]
                view.hint, view.hint_until = hint, max(resets) if resets else now + self.window_s
            if until is None or until <= view.exhausted_until:
                return view.exhausted_until if view.exhausted_until > now else None
            view.exhausted_until = until
        if until <= now:
            return None
        log.info("deployment out of quota", extra={"deployment": deployment.id, "until": round(until, 3)})
        if self.store is not None:
            try:  # rare (an exhaustion), and every other instance should skip it as soon as possible
                await self.store.mark_exhausted(deployment.id, until)
            except Exception as exc:
                self._store_failed("mark_exhausted", exc)
        return until

    # --- views

    def _view(self, deployment: str, window: int) -> _View:
        """The deployment's view, moved to ``window`` (counts start again; exhaustion and hints stay)."""
        view = self._views.setdefault(deployment, _View())
        if view.window != window:
            view.window, view.requests, view.tokens, view.local_calls = window, 0, 0, 0
            view.read_at = float("-inf")
        return view

    def _see(self, view: _View, window: int, requests: int, tokens: int) -> None:
        if view.window == window:
            view.requests = max(view.requests, requests)
            view.tokens = max(view.tokens, tokens)

    async def _refresh(self, deployments: Sequence[Deployment], now: float, window: int) -> None:
        """One read of the deployments whose view is older than ``view_ttl_s``. While one request of this
        instance reads, the others use the view they have (a read per instance and interval, not per request)."""
        if self.store is None:
            return
        with self._lock:
            stale = [
                d.id
                for d in deployments
                if d.id not in self._refreshing and now - self._view(d.id, window).read_at >= self.view_ttl_s
            ]
            self._refreshing.update(stale)
        if not stale:
            return
        try:
            shared = await self.store.read(stale, window)
        except Exception as exc:
            self._store_failed("read", exc)
            shared = {}
        finally:
            with self._lock:
                self._refreshing.difference_update(stale)
        with self._lock:
            for deployment, state in shared.items():
                view = self._view(deployment, window)
                self._see(view, window, state.counts.requests, state.counts.tokens)
                view.exhausted_until = max(view.exhausted_until, state.exhausted_until)
                view.read_at = now

    def _utilisation(self, dep: Deployment, view: _View, total_calls: int, now: float) -> float:
        return selection.utilisation(
            view.requests + view.in_flight,
            view.tokens,
            rpm=dep.rpm,
            tpm=dep.tpm,
            hint=view.hint if now < view.hint_until else None,
            share=view.local_calls / total_calls if total_calls else 0.0,
        )

    def _store_failed(self, operation: str, exc: BaseException) -> None:
        log.warning("quota store unavailable", extra={"operation": operation, "error": type(exc).__name__})
        self.metrics.store_error()


def _full(dep: Deployment, view: _View) -> bool:
    return (dep.rpm is not None and view.requests >= dep.rpm) or (dep.tpm is not None and view.tokens >= dep.tpm)


def _hint(snapshot: RateLimitSnapshot) -> float | None:
    """Utilisation from the headers: the larger used fraction of requests and tokens."""
    fractions = [
        1.0 - remaining / limit
        for remaining, limit in (
            (snapshot.remaining_requests, snapshot.limit_requests),
            (snapshot.remaining_tokens, snapshot.limit_tokens),
        )
        if remaining is not None and limit
    ]
    return max(fractions) if fractions else None
