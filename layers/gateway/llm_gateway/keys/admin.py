"""Key management (the admin function and ``make keys``): create, list, show, revoke, rotate.

The secret exists in exactly one place: the answer to create (or rotate). It is hashed at once; the
table, the logs and every later view have only the key id. Rotation keeps the key id (so usage, rate
limits and a key budget carry on) and issues a new secret as the next generation; the old secret stops
at once or, with ``grace_seconds``, at the end of the grace period.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llm_gateway import aws
from llm_gateway.errors import KeyNotFoundError, NotConfiguredError
from llm_gateway.http.framing import invalid
from llm_gateway.keys.hashing import key_hash, new_key_id, new_secret
from llm_gateway.keys.policy import BUDGET_SUBJECT_PREFIX, KeyBudget, KeyPolicy, KeyRecord
from llm_gateway.keys.store import KeyStore

if TYPE_CHECKING:
    from llm_gateway.accounting.budgets import DynamoDBBudgetGuard

MAX_GRACE_S = 7 * 86_400
PATTERN = r"^[A-Za-z0-9_.:/*?\[\]-]{1,128}$"


class BudgetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit_usd: float = Field(ge=0, le=1_000_000)
    window: Literal["day", "month"] = "day"


class KeySpec(BaseModel):
    """The body of ``POST /v1/admin/keys``."""

    model_config = ConfigDict(extra="forbid")
    tenant: str = Field(min_length=1, max_length=256)
    name: str = Field(default="", max_length=128)
    expires_at: datetime | None = None  # ISO 8601 with a zone, e.g. 2027-01-01T00:00:00Z
    expires_in_seconds: int | None = Field(default=None, ge=1, le=10 * 365 * 86_400)
    allowed_models: list[str] = Field(default_factory=list, max_length=64)
    requests_per_minute: int | None = Field(default=None, ge=1, le=1_000_000)
    tokens_per_minute: int | None = Field(default=None, ge=1, le=1_000_000_000)
    budget: BudgetSpec | None = None
    metadata: dict[str, str] = Field(default_factory=dict, max_length=32)
    # The key's guardrail settings (README, Guardrails) and what its requests may change.
    guardrails: str | None = Field(default=None, max_length=512)
    guardrails_override: Literal["any", "tighten", "none"] | None = None

    @field_validator("guardrails")
    @classmethod
    def _guardrails(cls, value: str | None) -> str | None:
        if value is not None:
            from llm_gateway.errors import InvalidRequestError
            from llm_gateway.guardrails.policy import parse

            try:
                parse(value, param="guardrails")
            except InvalidRequestError as err:
                raise ValueError(err.message.removeprefix("guardrails: ")) from None
        return value

    @field_validator("tenant")
    @classmethod
    def _tenant(cls, value: str) -> str:
        if not value.isprintable() or value != value.strip():
            raise ValueError("must be printable, without leading or trailing spaces")
        if value.startswith(BUDGET_SUBJECT_PREFIX):
            raise ValueError(f"must not start with {BUDGET_SUBJECT_PREFIX!r} (reserved for key budgets)")
        return value

    @field_validator("allowed_models")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if not re.fullmatch(PATTERN, pattern):
                raise ValueError(f"{pattern!r} is not a model pattern (letters, digits, _.:/-, and * ? [ ])")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str]) -> dict[str, str]:
        if any(len(k) > 64 or len(v) > 512 for k, v in value.items()):
            raise ValueError("keys at most 64 characters, values at most 512")
        return value

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("needs a time zone (e.g. a trailing Z)")
        return value


class RotateSpec(BaseModel):
    """The body of ``POST /v1/admin/keys/{key_id}/rotate`` (may be empty)."""

    model_config = ConfigDict(extra="forbid")
    grace_seconds: int = Field(default=0, strict=True)  # whole seconds; a bool or text is refused


class KeyAdmin:
    def __init__(
        self,
        store: KeyStore,
        *,
        budgets: DynamoDBBudgetGuard | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.budgets = budgets
        self._clock = clock

    def create(self, spec: KeySpec) -> tuple[str, KeyRecord]:
        """(the secret, to hand over once; the stored record)."""
        now = self._clock()
        expires = spec.expires_at.timestamp() if spec.expires_at is not None else None
        if spec.expires_in_seconds is not None:
            expires = min(expires or float("inf"), now + spec.expires_in_seconds)
        if expires is not None and expires <= now:
            raise invalid("expires_at", "must be in the future")
        policy = KeyPolicy(
            tenant=spec.tenant,
            name=spec.name,
            created_at=now,
            expires_at=expires,
            allowed=tuple(spec.allowed_models),
            requests_per_minute=spec.requests_per_minute,
            tokens_per_minute=spec.tokens_per_minute,
            budget=KeyBudget(Decimal(str(spec.budget.limit_usd)), spec.budget.window) if spec.budget else None,
            metadata=dict(spec.metadata),
            guardrails=spec.guardrails,
            guardrails_override=spec.guardrails_override,
        )
        key_id = new_key_id()
        if policy.budget is not None:
            if self.budgets is None:
                raise NotConfiguredError("key budgets need the usage table (USAGE_TABLE)")
            window: Literal["day", "month"] = "month" if policy.budget.window == "month" else "day"
            self.budgets.set_policy(BUDGET_SUBJECT_PREFIX + key_id, float(policy.budget.limit_usd), window)
        secret = new_secret()
        record = KeyRecord(key_hash=key_hash(secret), key_id=key_id, policy=policy)
        self.store.put_new(record)
        return secret, record

    def import_key(self, secret: str, tenant: str, *, name: str = "imported") -> KeyRecord:
        """Register an existing secret (the local stack's ``LOCAL_API_KEYS``) for ``tenant``; idempotent:
        the key id is derived from the hash, and a second import finds the first one's record."""
        digest = key_hash(secret)
        record = KeyRecord(
            key_hash=digest,
            key_id=f"key_{digest[:16]}",
            policy=KeyPolicy(tenant=KeySpec(tenant=tenant).tenant, name=name, created_at=self._clock()),
        )
        try:
            self.store.put_new(record)
        except Exception as exc:
            if aws.error_code(exc) != "ConditionalCheckFailedException":
                raise
            found = self.store.by_hash(digest)
            if found is None:
                raise
            return found
        return record

    def show(self, key_id: str) -> KeyRecord:
        """The key's current (latest) record; KeyNotFoundError (404) if there is none."""
        records = self.store.records_of(key_id)
        if not records:
            raise KeyNotFoundError(f"no key {key_id!r}")
        return records[-1]

    def list_keys(self, tenant: str | None = None) -> list[KeyRecord]:
        latest: dict[str, KeyRecord] = {}
        for record in self.store.all_records(tenant):
            if record.key_id not in latest or record.generation > latest[record.key_id].generation:
                latest[record.key_id] = record
        return sorted(latest.values(), key=lambda r: (r.policy.tenant, r.policy.created_at, r.key_id))

    def revoke(self, key_id: str) -> KeyRecord:
        """Revoke every secret of the key (stops within the verifiers' cache TTL)."""
        records = self.store.records_of(key_id)
        if not records:
            raise KeyNotFoundError(f"no key {key_id!r}")
        now = self._clock()
        for record in records:
            if record.policy.revoked_at is None:
                self.store.set_end(record, revoked_at=now)
        return records[-1].with_policy(revoked_at=records[-1].policy.revoked_at or now)

    def rotate(self, key_id: str, *, grace_seconds: int = 0) -> tuple[str, KeyRecord]:
        """A new secret for the key, same policy; the old secrets end now or after ``grace_seconds``."""
        if not 0 <= grace_seconds <= MAX_GRACE_S:
            raise invalid("grace_seconds", f"must be between 0 and {MAX_GRACE_S}")
        current = self.show(key_id)
        now = self._clock()
        if current.policy.refusal(now) is not None:
            raise invalid("key_id", f"the key is {current.policy.refusal(now)}; create a new one instead")
        secret = new_secret()
        record = KeyRecord(
            key_hash=key_hash(secret),
            key_id=key_id,
            policy=current.policy,
            generation=current.generation + 1,
        )
        self.store.put_new(record)
        for old in self.store.records_of(key_id):
            if old.generation >= record.generation or old.policy.refusal(now) is not None:
                continue
            if grace_seconds:
                end = now + grace_seconds
                self.store.set_end(old, expires_at=min(end, old.policy.expires_at or end))
            else:
                self.store.set_end(old, revoked_at=now)
        return secret, record


def admin_for(keys_table: str | None, usage_table: str | None) -> KeyAdmin:
    """The key manager over these tables (key budgets live in the usage table when there is one)."""
    if not keys_table:
        raise NotConfiguredError("gateway keys are not configured here (KEYS_TABLE)")
    budgets = None
    if usage_table:
        from llm_gateway.accounting.budgets import DynamoDBBudgetGuard

        budgets = DynamoDBBudgetGuard(usage_table)
    return KeyAdmin(KeyStore(keys_table), budgets=budgets)


def secret_view(secret: str, record: KeyRecord) -> dict[str, Any]:
    """A new or rotated key's record with its secret: the one answer that ever carries it."""
    return {**key_view(record), "key": secret, "note": "the key is shown once; it cannot be retrieved later"}


def key_view(record: KeyRecord, *, now: float | None = None) -> dict[str, Any]:
    """What the admin API and ``make keys`` show of a key: never the secret, never the hash."""
    policy = record.policy
    now = time.time() if now is None else now
    return {
        "object": "gateway.key",
        "id": record.key_id,
        "tenant": policy.tenant,
        "name": policy.name,
        "status": policy.refusal(now) or "active",
        "generation": record.generation,
        "created_at": _iso(policy.created_at),
        "expires_at": _iso(policy.expires_at),
        "revoked_at": _iso(policy.revoked_at),
        "allowed_models": list(policy.allowed),
        "requests_per_minute": policy.requests_per_minute,
        "tokens_per_minute": policy.tokens_per_minute,
        "budget": (
            {"limit_usd": float(policy.budget.limit_usd), "window": policy.budget.window} if policy.budget else None
        ),
        "metadata": dict(policy.metadata),
        "guardrails": policy.guardrails,
        "guardrails_override": policy.guardrails_override,
    }


def _iso(epoch: float | None) -> str | None:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z") if epoch is not None else None
