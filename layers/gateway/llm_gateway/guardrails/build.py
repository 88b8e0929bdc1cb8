"""The deployment's guardrail pipeline from its settings (called by wiring when the gateway is built).

Every deployment has the local checks (cheap to build; a key or a request may turn them on), the deny-list
only when it has terms, and Bedrock Guardrails only with a configured guardrail id and a region. The check
modules are imported here, on the first gateway build, never at import time of the core.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from llm_gateway.guardrails.findings import Check
from llm_gateway.guardrails.pipeline import GuardrailPipeline
from llm_gateway.guardrails.policy import parse

if TYPE_CHECKING:
    import httpx

    from llm_gateway.config import Settings
    from llm_gateway.guardrails.bedrock import BedrockGuardrail


def available_checks(config: Settings) -> frozenset[str]:
    """The checks this deployment's settings give it (what a key or a request may turn on)."""
    found = {"pii", "injection"}
    if any(term.strip() for term in config.guardrail_deny_terms.split(",")):
        found.add("denylist")
    if config.bedrock_guardrail_id and config.bedrock_region:
        found.add("bedrock")
    return frozenset(found)


def build_pipeline(config: Settings, client: Callable[[], httpx.AsyncClient]) -> GuardrailPipeline:
    from llm_gateway.guardrails.denylist import DenyListCheck
    from llm_gateway.guardrails.injection import InjectionCheck
    from llm_gateway.guardrails.pii import PiiCheck

    checks: dict[str, Check] = {
        "pii": PiiCheck(),
        "injection": InjectionCheck(threshold=config.guardrail_injection_threshold),
    }
    terms = [term.strip() for term in config.guardrail_deny_terms.split(",") if term.strip()]
    if terms:
        checks["denylist"] = DenyListCheck(terms)
    return GuardrailPipeline(
        checks, default=parse(config.guardrails, param="GATEWAY_GUARDRAILS"), bedrock=_bedrock(config, client)
    )


def _bedrock(config: Settings, client: Callable[[], httpx.AsyncClient]) -> BedrockGuardrail | None:
    if not (config.bedrock_guardrail_id and config.bedrock_region):
        return None
    from llm_gateway.guardrails.bedrock import BedrockGuardrail

    return BedrockGuardrail(
        guardrail_id=config.bedrock_guardrail_id,
        version=config.bedrock_guardrail_version,
        region=config.bedrock_region,
        base_url=config.bedrock_endpoint_url or f"https://bedrock-runtime.{config.bedrock_region}.amazonaws.com",
        client=client,
        timeout_s=config.bedrock_guardrail_timeout_s,
        fail_open=config.bedrock_guardrail_fail_open,
    )
