"""Which guardrail checks run on a request, at which stage, in which mode.

One grammar everywhere (``GATEWAY_GUARDRAILS``, a key's policy, the ``x-gateway-guardrails`` header and
the native routes' ``guardrails`` body field): comma-separated ``check[.stage]=setting`` items, e.g.
``pii=redact, injection=block, denylist.output=monitor``.

* checks: ``pii``, ``injection``, ``denylist``, ``bedrock`` (Amazon Bedrock Guardrails, when configured);
* stages: ``input`` (before the cache and the provider) and ``output`` (the answer); without a stage the
  check's usual stages: ``injection`` the input only (it screens what the caller sends), the rest both;
* settings: ``off``, ``monitor`` (log and count), ``redact`` (replace what was found), ``block``, and
  for ``pii`` only ``restore``: the input redacted with numbered placeholders (``[EMAIL_1]``) that are
  put back in the answer, so the caller gets its own data back and the provider never sees it.
  ``pii=restore`` sets the input stage only: the output keeps its setting (with ``pii.output=redact``,
  personal data the model wrote itself is redacted, the caller's own comes back).

A request's own settings apply as its policy allows them (``override``): ``any``, ``tighten`` (only
settings at least as strict as the policy's: off < monitor < redact/restore < block), or ``none``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, cast

from pydantic import Field

from llm_gateway.errors import GuardrailOverrideRefusedError, InvalidRequestError
from llm_gateway.guardrails.findings import Mode

CHECKS = ("pii", "injection", "denylist", "bedrock")
STAGES = ("input", "output")
Stage = Literal["input", "output"]
Setting = Literal["off", "monitor", "redact", "restore", "block"]
Override = Literal["any", "tighten", "none"]
SETTINGS: tuple[Setting, ...] = ("off", "monitor", "redact", "restore", "block")
OVERRIDES: tuple[Override, ...] = ("any", "tighten", "none")
STRICTNESS = {"off": 0, "monitor": 1, "redact": 2, "restore": 2, "block": 3}
DEFAULT_STAGES: Mapping[str, tuple[Stage, ...]] = {
    "pii": ("input", "output"),
    "injection": ("input",),
    "denylist": ("input", "output"),
    "bedrock": ("input", "output"),
}
HEADER = "x-gateway-guardrails"
JOB_TAG = "guardrails"  # a job's tag: the policy resolved when it was submitted (describe()'s text)
BODY_FIELD = "guardrails"
MAX_SPEC_CHARS = 512

Settings = dict[tuple[str, Stage], Setting]  # (check, stage) -> setting; a missing pair is off
# The native routes' body field: the header's grammar as a string, or {"pii": "redact", ...}; read by
# the edge (http/guardrails.py), never part of the request the cache and the providers see.
GuardrailsField = Annotated[
    str | dict[str, str] | None,
    Field(
        default=None,
        description='Guardrail settings for this request, e.g. "pii=restore, injection=block" (README, Guardrails)',
    ),
]


@dataclass(frozen=True)
class GuardrailPolicy:
    """The settings in force: a mode per (check, stage) and whether PII placeholders are restored."""

    modes: Mapping[tuple[str, Stage], Mode] = field(default_factory=dict)
    restore: bool = False

    def mode(self, check: str, stage: Stage) -> Mode | None:
        return self.modes.get((check, stage))

    def checks(self, stage: Stage) -> Iterator[tuple[str, Mode]]:
        """The checks on at ``stage``, in a fixed order (block decisions do not depend on dict order)."""
        for check in CHECKS:
            if (mode := self.modes.get((check, stage))) is not None:
                yield check, mode

    @property
    def active(self) -> bool:
        return bool(self.modes)

    def describe(self) -> str:
        """The policy in the grammar above (logs; ``restore`` shown on ``pii.input``)."""
        parts = []
        for (check, stage), mode in sorted(self.modes.items()):
            shown = "restore" if self.restore and (check, stage) == ("pii", "input") else mode
            parts.append(f"{check}.{stage}={shown}")
        return ",".join(parts)


def parse(spec: Any, *, param: str) -> Settings:
    """Settings from a spec string (or, for the body field, an object ``{"pii": "redact"}``); a 400
    ``invalid_request`` naming ``param`` for anything else."""
    if isinstance(spec, Mapping):
        items = [(str(k), v) for k, v in spec.items()]
        if any(not isinstance(v, str) for _, v in items):
            raise _invalid(param, 'each value must be a setting string such as "redact"')
    elif isinstance(spec, str):
        if len(spec) > MAX_SPEC_CHARS:
            raise _invalid(param, f"at most {MAX_SPEC_CHARS} characters")
        items = []
        for item in (part.strip() for part in spec.split(",")):
            if not item:
                continue
            name, eq, value = item.partition("=")
            if not eq:
                raise _invalid(param, f"{item[:40]!r} is not check=setting (e.g. pii=redact)")
            items.append((name, value))
    else:
        raise _invalid(param, 'must be a string such as "pii=redact, injection=block"')
    settings: Settings = {}
    for name, value in items:
        for key, setting in _expand(name.strip().lower(), value.strip().lower(), param):
            settings[key] = setting
    return settings


def _expand(name: str, value: str, param: str) -> list[tuple[tuple[str, Stage], Setting]]:
    check, _, stage = name.partition(".")
    if check not in CHECKS:
        raise _invalid(param, f"unknown check {check[:40]!r}; expected one of {', '.join(CHECKS)}")
    if stage and stage not in STAGES:
        raise _invalid(param, f"unknown stage {stage[:40]!r} for {check}; expected input or output")
    if value not in SETTINGS:
        raise _invalid(param, f"unknown setting {value[:40]!r} for {name}; expected one of {', '.join(SETTINGS)}")
    setting: Setting = value
    if setting == "restore":
        if check != "pii" or stage == "output":
            raise _invalid(param, "restore is a setting of pii (or pii.input) only")
        return [(("pii", "input"), "restore")]  # the output keeps its own setting
    stages = (cast(Stage, stage),) if stage else DEFAULT_STAGES[check]
    return [((check, s), setting) for s in stages]


def policy_from(settings: Settings) -> GuardrailPolicy:
    modes: dict[tuple[str, Stage], Mode] = {}
    for key, setting in settings.items():
        if setting != "off":
            modes[key] = "redact" if setting == "restore" else setting
    return GuardrailPolicy(modes=modes, restore=settings.get(("pii", "input")) == "restore")


def resolve(base: Settings, requested: Settings | None, override: Override, *, param: str) -> GuardrailPolicy:
    """The base settings (deployment default, or the key's policy over it) with the request's applied
    as ``override`` allows: a 403 ``guardrails_override_refused`` naming ``param`` otherwise."""
    if not requested:
        return policy_from(base)
    if override == "none":
        raise GuardrailOverrideRefusedError(
            f"{param}: this key's guardrail policy cannot be changed per request",
            details={"param": param},
        )
    merged = dict(base)
    for key, setting in requested.items():
        current = base.get(key, "off")
        if override == "tighten" and STRICTNESS[setting] < STRICTNESS[current]:
            check, stage = key
            raise GuardrailOverrideRefusedError(
                f"{param}: {check}.{stage} may only be tightened here (the policy says {current})",
                details={"param": param, "check": check, "stage": stage, "policy": current},
            )
        if override == "tighten" and setting == "redact" and current == "restore":
            continue  # the same strictness; restoring is the policy's choice
        merged[key] = setting
    return policy_from(merged)


def layered(default: Settings, key_spec: str | None, *, param: str = "guardrails") -> Settings:
    """The deployment default with a key's own settings over it (the key's win, pair by pair)."""
    if not key_spec:
        return dict(default)
    return {**default, **parse(key_spec, param=param)}


def _invalid(param: str, message: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"{param}: {message}", details={"param": param, "errors": [{"param": param, "message": message}]}
    )
