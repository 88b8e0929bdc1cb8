"""API routes of the template: what API Gateway matches a request against, and how it answers a route.

``ResponseTransferMode`` (SAM's Api event property) picks the integration per route: ``BUFFERED`` (the
whole proxy answer at once, 29 s by default) or ``RESPONSE_STREAM``, which SAM turns into API Gateway's
``responseTransferMode: STREAM`` and the ``response-streaming-invocations`` URI (the answer is passed on as
the function writes it, up to 15 minutes). SAM passes any other value through unchecked and deploys the
route buffered, so the harness refuses them rather than stream locally what would not stream deployed.
``TimeoutInMillis`` is the route's integration timeout when the template sets one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# SAM's spelling -> API Gateway's integration responseTransferMode
TRANSFER_MODES = {"BUFFERED": "BUFFERED", "RESPONSE_STREAM": "STREAM"}


class TransferModeError(ValueError):
    """A route's ResponseTransferMode or TimeoutInMillis the local harness cannot read."""


@dataclass(frozen=True)
class ApiRoute:
    function_id: str
    event_name: str
    method: str  # upper case, or "ANY"
    path: str  # as declared, e.g. /v1/jobs/{id}
    api_id: str  # logical id of the REST API (IMPLICIT_API when none is named)
    api_key_required: bool
    transfer_mode: str = "BUFFERED"  # or "STREAM" (API Gateway's names)
    timeout_s: float | None = None  # the event's TimeoutInMillis; None: API Gateway's default

    @property
    def streams(self) -> bool:
        return self.transfer_mode == "STREAM"


def transfer_mode(props: dict[str, Any]) -> str:
    """API Gateway's mode for an Api event: ``BUFFERED`` or ``STREAM``."""
    value = props.get("ResponseTransferMode", "BUFFERED")
    if value not in TRANSFER_MODES:
        hint = " (SAM spells it RESPONSE_STREAM, and deploys other values buffered)" if value == "STREAM" else ""
        raise TransferModeError(f"ResponseTransferMode {value!r} is not one of {', '.join(TRANSFER_MODES)}{hint}")
    return TRANSFER_MODES[value]


def integration_timeout_s(props: dict[str, Any]) -> float | None:
    value = props.get("TimeoutInMillis")
    if value is None:
        return None
    if not str(value).isdigit():
        raise TransferModeError(f"TimeoutInMillis {value!r} is not a whole number of milliseconds")
    return int(value) / 1000


@dataclass(frozen=True)
class RouteMatch:
    route: ApiRoute
    path_parameters: dict[str, str]


def _route_regex(path: str) -> re.Pattern[str]:
    """``/v1/jobs/{id}`` -> regex with a named group per parameter; ``{proxy+}`` is greedy."""
    pattern = ""
    for index, part in enumerate(re.split(r"(\{[^}]+\})", path)):
        if index % 2 == 0:
            pattern += re.escape(part)
        elif part.endswith("+}"):
            pattern += f"(?P<p{index}>.+)"
        else:
            pattern += f"(?P<p{index}>[^/]+)"
    return re.compile(f"^{pattern}/?$")


def _param_names(path: str) -> dict[str, str]:
    parts = re.split(r"(\{[^}]+\})", path)
    return {f"p{i}": part.strip("{}").rstrip("+") for i, part in enumerate(parts) if i % 2 == 1}


class RouteTable:
    """API Gateway style matching: literal paths win over parameterised ones, greedy ones come last."""

    def __init__(self, routes: Iterable[ApiRoute]) -> None:
        def specificity(route: ApiRoute) -> tuple[int, int, int, int]:
            params = route.path.count("{")
            return (int("+}" in route.path), params, -len(route.path), int(route.method == "ANY"))

        self.routes = sorted(routes, key=specificity)
        self._compiled = [(r, _route_regex(r.path), _param_names(r.path)) for r in self.routes]

    def match(self, method: str, path: str) -> RouteMatch | None:
        method = method.upper()
        for route, regex, names in self._compiled:
            if route.method not in (method, "ANY"):
                continue
            found = regex.match(path)
            if found:
                params = {names[group]: value for group, value in found.groupdict().items()}
                return RouteMatch(route, params)
        return None
