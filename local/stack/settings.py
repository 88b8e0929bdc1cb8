"""Constants, provider settings and API key parsing shared by the local stack's modules."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("local.stack")

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
DEFAULT_TEMPLATE = REPO_ROOT / "template.yaml"
LAYER_DIRS = (REPO_ROOT / "layers" / "gateway",)  # the layer's source, importable as in /opt/python
DEFAULT_STACK_NAME = "llm-gateway-local"
DEFAULT_LOCAL_PORT = 3000
SIM_KEY = "sim-key"
# The gateway key the sample API events (events/*-apigw*.json) carry; `make invoke` creates it for "dev".
SAMPLE_EVENT_KEY = "dev-local-key-0000"
INTEGRATION_TIMEOUT_S = 29.0  # API Gateway REST's default integration timeout
MAX_REQUEST_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit
LISTEN_BACKLOG = 128  # pending connections the bridge's socket holds (socketserver's default is 5)
POLL_WAIT_S = 1
# Lambda drains an SQS source with several concurrent invocations (5 pollers to start, capped by
# ScalingConfig.MaximumConcurrency); one serial poller would queue every job behind the slowest.
SQS_POLLERS = 5
S3_POLLERS = 2
# Called on each worker/poller thread as it exits: (module, function), only if the module is loaded.
THREAD_CLEANUP_HOOK = ("llm_gateway.runtime", "close_thread_resources")

Handler = Callable[[Any, Any], Any]


@dataclass(frozen=True)
class Provider:
    name: str
    key_var: str
    url_var: str
    sim_route: str  # key in ProviderSimulator.base_urls()


PROVIDERS = (
    Provider("openai", "OPENAI_API_KEY", "OPENAI_BASE_URL", "openai"),
    Provider("anthropic", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "anthropic"),
    Provider("gemini", "GEMINI_API_KEY", "GEMINI_BASE_URL", "gemini"),
    Provider("openai_compatible", "OPENAI_COMPATIBLE_API_KEY", "OPENAI_COMPATIBLE_BASE_URL", "compat"),
    # No key: the adapter signs with the (fake) AWS credentials; botocore's own endpoint variable.
    Provider("bedrock", "", "AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "bedrock"),
)

# Variables that would send boto3 somewhere other than the local moto server.
_AWS_VARS_TO_CLEAR = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
)


def parse_api_keys(spec: str) -> dict[str, str]:
    """``"key-a:tenant-a,key-b:tenant-b"`` -> {key: tenant}; a key without a tenant maps to ``dev``."""
    keys = {}
    for item in spec.split(","):
        key, _, tenant = item.strip().partition(":")
        if key.strip():
            keys[key.strip()] = tenant.strip() or "dev"
    return keys
