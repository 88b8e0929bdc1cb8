"""CloudFormation's intrinsic functions (``!Ref``, ``!Sub``, ``!GetAtt``, ``!If``...) evaluated against the
local harness's values; a template can only be read as far as these go (``TemplateError`` otherwise)."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping
from typing import Any, Protocol


class TemplateError(ValueError):
    """The template uses something the local harness cannot interpret."""


def to_env_value(value: Any) -> str:
    """Environment values are strings in Lambda; CloudFormation writes booleans in lower case."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


class TemplateLike(Protocol):
    """What the resolver reads of the template (``local.cfn.Template``)."""

    parameters: dict[str, Any]
    conditions: dict[str, Any]
    mappings: dict[str, Any]
    resources: dict[str, Any]


class _NoValue:
    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE: Any = _NoValue()


class Resolver:
    """Evaluates intrinsic functions against local values.

    ``refs`` maps logical ids (resources) to their Ref value; ``attrs`` maps (logical id, attribute) to
    GetAtt values; ``fallback`` supplies values for resources the harness does not create.
    """

    def __init__(
        self,
        template: TemplateLike,
        *,
        pseudo: Mapping[str, str],
        parameters: Mapping[str, str] | None = None,
        refs: Mapping[str, str] | None = None,
        attrs: Mapping[tuple[str, str], str] | None = None,
        fallback: Callable[[str, str | None], str] | None = None,
    ) -> None:
        self.template = template
        self.pseudo = dict(pseudo)
        self.parameters = self._parameter_values(parameters or {})
        self.refs = refs if refs is not None else {}
        self.attrs = attrs if attrs is not None else {}
        self.fallback = fallback
        self._fns: dict[str, Callable[[Any], Any]] = {
            "Ref": self._ref,
            "Fn::GetAtt": self._get_att,
            "Fn::Sub": self._sub,
            "Fn::Join": self._join,
            "Fn::Select": self._select,
            "Fn::Split": self._split,
            "Fn::If": self._if,
            "Fn::Equals": self._equals,
            "Fn::Not": lambda v: not self._bool(v[0]),
            "Fn::And": lambda v: all(self._bool(c) for c in v),
            "Fn::Or": lambda v: any(self._bool(c) for c in v),
            "Condition": self.condition,
            "Fn::FindInMap": self._find_in_map,
            "Fn::Base64": lambda v: base64.b64encode(str(self.resolve(v)).encode()).decode(),
            "Fn::GetAZs": lambda v: [f"{self.pseudo['AWS::Region']}{s}" for s in "abc"],
            "Fn::ToJsonString": lambda v: json.dumps(self.resolve(v), separators=(",", ":")),
            "Fn::Length": lambda v: len(self.resolve(v)),
        }

    def _parameter_values(self, overrides: Mapping[str, str]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, spec in self.template.parameters.items():
            if name in overrides:
                value: Any = overrides[name]
            elif "Default" in spec:
                value = spec["Default"]
            else:
                continue  # referenced later -> error with the parameter's name
            if str(spec.get("Type", "")).startswith("CommaDelimitedList") or str(spec.get("Type", "")).startswith(
                "List<"
            ):
                value = [v.strip() for v in str(value).split(",")] if isinstance(value, str) else value
            values[name] = value
        return values

    # ---- entry points

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            items = [self.resolve(v) for v in value]
            return [v for v in items if v is not NO_VALUE]
        if isinstance(value, dict):
            if len(value) == 1:
                ((key, arg),) = value.items()
                if key in self._fns:
                    return self._fns[key](arg)
            out = {k: self.resolve(v) for k, v in value.items()}
            return {k: v for k, v in out.items() if v is not NO_VALUE}
        return value

    def condition(self, name: str) -> bool:
        if name not in self.template.conditions:
            raise TemplateError(f"unknown condition {name!r}")
        return self._bool(self.template.conditions[name])

    # ---- functions

    def _bool(self, value: Any) -> bool:
        resolved = self.resolve(value)
        if isinstance(resolved, str):
            return resolved.lower() == "true"
        return bool(resolved)

    def _ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        if name in self.template.parameters:
            raise TemplateError(f"parameter {name!r} has no Default; pass it in parameters")
        if name in self.refs:
            return self.refs[name]
        if name in self.template.resources and self.fallback:
            return self.fallback(name, None)
        raise TemplateError(f"!Ref {name}: unknown or not yet created")

    def _get_att(self, arg: Any) -> Any:
        parts = self.resolve(arg)
        name, attr = (parts if isinstance(parts, list) else str(parts).split(".", 1))[:2]
        if (name, attr) in self.attrs:
            return self.attrs[(name, attr)]
        if name in self.template.resources and self.fallback:
            return self.fallback(name, attr)
        raise TemplateError(f"!GetAtt {name}.{attr}: unknown or not yet created")

    def _sub(self, arg: Any) -> str:
        text, variables = (arg[0], self.resolve(arg[1]) if len(arg) > 1 else {}) if isinstance(arg, list) else (arg, {})

        def replace(found: re.Match[str]) -> str:
            name = found.group(1)
            if name.startswith("!"):  # ${!Literal} is an escaped literal
                return "${" + name[1:] + "}"
            if name in variables:
                return to_env_value(variables[name])
            if "." in name and not name.startswith("AWS::"):
                return to_env_value(self._get_att(name.split(".", 1)))
            return to_env_value(self._ref(name))

        return re.sub(r"\$\{([^}]+)\}", replace, str(text))

    def _join(self, arg: list[Any]) -> str:
        delimiter, items = arg
        return str(delimiter).join(to_env_value(v) for v in self.resolve(items))

    def _select(self, arg: list[Any]) -> Any:
        index, items = self.resolve(arg)
        return items[int(index)]

    def _split(self, arg: list[Any]) -> list[str]:
        delimiter, text = self.resolve(arg)
        return str(text).split(str(delimiter))

    def _if(self, arg: list[Any]) -> Any:
        name, when_true, when_false = arg
        return self.resolve(when_true if self.condition(name) else when_false)

    def _equals(self, arg: list[Any]) -> bool:
        left, right = self.resolve(arg)
        return to_env_value(left) == to_env_value(right)

    def _find_in_map(self, arg: list[Any]) -> Any:
        name, top, second = self.resolve(arg)
        try:
            return self.template.mappings[name][top][second]
        except KeyError as exc:
            raise TemplateError(f"Fn::FindInMap {name}/{top}/{second}: not found") from exc
