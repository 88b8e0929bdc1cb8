"""The request's guardrail policy, as the edge resolves it: the deployment's default
(``GATEWAY_GUARDRAILS``), the key's own settings over it, then the request's (``x-gateway-guardrails`` on
every route, the ``guardrails`` body field on the native routes) as the key (or the deployment) lets a
request change them. Verdicts are counted as operator metrics: ``GuardrailVerdicts`` with the dimensions
``Check`` and ``Verdict`` (:mod:`llm_gateway.observability.metrics`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from llm_gateway.guardrails import policy as policies
from llm_gateway.guardrails.request import GuardrailRequest, Verdicts
from llm_gateway.http.framing import invalid
from llm_gateway.observability import metrics as operator_metrics
from llm_gateway.wiring import Services

if TYPE_CHECKING:
    from llm_gateway.keys import KeyPolicy

# The native routes, whose bodies take a ``guardrails`` field (the others: the header only).
BODY_ROUTES = frozenset({"/v1/completions", "/v1/extractions", "/v1/summaries"})
JOBS_ROUTE = "/v1/jobs"  # a job's input may carry the field too (extractions, summaries)


def resolve(
    headers: Mapping[str, str] | None,
    body: Mapping[str, Any] | None,
    route: str,
    key_policy: KeyPolicy | None,
    current: Services,
) -> GuardrailRequest:
    config = current.settings
    base = policies.layered(
        policies.parse(config.guardrails, param="GATEWAY_GUARDRAILS"),
        key_policy.guardrails if key_policy is not None else None,
    )
    override = _override(key_policy.guardrails_override if key_policy is not None else None, config.guardrails_override)
    requested: policies.Settings = {}
    param = policies.HEADER
    header = _header(headers)
    if header is not None:
        requested.update(policies.parse(header, param=policies.HEADER))
    spec = _body_spec(body, route)
    if spec is not None:
        requested.update(policies.parse(spec, param=policies.BODY_FIELD))
        param = policies.BODY_FIELD
    policy = policies.resolve(base, requested, override, param=param)
    _refuse_missing(requested, current, param)
    return GuardrailRequest(policy, Verdicts(operator_metrics.guardrail_verdict))


def _body_spec(body: Mapping[str, Any] | None, route: str) -> Any:
    """The body's ``guardrails``: on a native route, or in a submitted job's ``input``."""
    if body is None:
        return None
    if route == JOBS_ROUTE:
        job_input = body.get("input")
        return job_input.get(policies.BODY_FIELD) if isinstance(job_input, Mapping) else None
    return body.get(policies.BODY_FIELD) if route in BODY_ROUTES else None


def _override(key_value: str | None, default: policies.Override) -> policies.Override:
    return next((o for o in policies.OVERRIDES if o == key_value), default)


def _header(headers: Mapping[str, str] | None) -> str | None:
    for name, value in (headers or {}).items():
        if name.lower() == policies.HEADER:
            return value
    return None


def _refuse_missing(requested: policies.Settings, current: Services, param: str) -> None:
    """A check the request turns on that this deployment does not have is a 400 naming ``param``."""
    wanted = {check for (check, _), setting in requested.items() if setting != "off"}
    if not wanted:
        return
    from llm_gateway.guardrails.build import available_checks

    available = available_checks(current.settings)  # from the settings: no gateway is built for this
    for check in sorted(wanted):
        if check not in available:
            why = "no Bedrock guardrail is configured here" if check == "bedrock" else "not available here"
            raise invalid(param, f"the {check} check is {why}")
