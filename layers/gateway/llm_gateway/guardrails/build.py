"""The deployment's guardrail pipeline from its settings (called by wiring when the gateway is built).

Each local check is built when the default policy or a key may use it: all of them are cheap to build,
so every deployment has the ones whose modules exist, and a request may turn them on. Bedrock
Guardrails only with a configured guardrail id and a Bedrock region.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from llm_gateway.guardrails.findings import Check
from llm_gateway.guardrails.pipeline import GuardrailPipeline
from llm_gateway.guardrails.policy import parse

if TYPE_CHECKING:
    import httpx

    from llm_gateway.config import Settings


def build_pipeline(config: Settings, client: Callable[[], httpx.AsyncClient]) -> GuardrailPipeline:
    checks: dict[str, Check] = {}
    for name, (module, cls, options) in _local_checks(config).items():
        factory = getattr(importlib.import_module(module), cls)
        checks[name] = factory(**options)
    bedrock = None
    if config.bedrock_guardrail_id and config.bedrock_region:
        from llm_gateway.guardrails.bedrock import BedrockGuardrail

        bedrock = BedrockGuardrail(
            guardrail_id=config.bedrock_guardrail_id,
            version=config.bedrock_guardrail_version,
            region=config.bedrock_region,
            base_url=config.bedrock_endpoint_url or f"https://bedrock-runtime.{config.bedrock_region}.amazonaws.com",
            client=client,
            timeout_s=config.bedrock_guardrail_timeout_s,
            fail_open=config.bedrock_guardrail_fail_open,
        )
    return GuardrailPipeline(checks, default=parse(config.guardrails, param="GATEWAY_GUARDRAILS"), bedrock=bedrock)


def _local_checks(config: Settings) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """check name -> (module, class, constructor options)."""
    found: dict[str, tuple[str, str, dict[str, Any]]] = {"pii": ("llm_gateway.guardrails.pii", "PiiCheck", {})}
    if importlib.util.find_spec("llm_gateway.guardrails.injection") is not None:
        found["injection"] = (
            "llm_gateway.guardrails.injection",
            "InjectionCheck",
            {"threshold": config.guardrail_injection_threshold},
        )
    if importlib.util.find_spec("llm_gateway.guardrails.denylist") is not None:
        terms = [term.strip() for term in config.guardrail_deny_terms.split(",") if term.strip()]
        found["denylist"] = ("llm_gateway.guardrails.denylist", "DenyListCheck", {"terms": terms})
    return found
