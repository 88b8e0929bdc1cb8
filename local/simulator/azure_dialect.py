"""Azure OpenAI dialect: OpenAI's Chat Completions behind Azure's URL, key header and errors.

``POST /azure/openai/deployments/{deployment}/chat/completions?api-version=...``: the deployment must
be registered (``ProviderSimulator.add_azure_deployment``: its model and, optionally, the one key it
accepts), the key comes in an ``api-key`` header (a Bearer token alone is refused), a missing
``api-version`` is a 404 "Resource not found" as on Azure, an unknown deployment a 404
``DeploymentNotFound``. The body needs no ``model`` (the deployment decides it); answers name the
deployment's model. Content filtering is a 400 ``content_filter`` with ``innererror``, as Azure's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from local.simulator.faults import Fault
from local.simulator.openai_dialect import OpenAIDialect
from local.simulator.wire import ChatRequest, Response, _ident, _json_response

_API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")
_DEPLOYMENT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class AzureDeployment:
    model: str
    api_key: str | None = None  # None: any key but "invalid"


class AzureOpenAIDialect(OpenAIDialect):
    def __init__(self, deployments: dict[str, AzureDeployment]) -> None:
        super().__init__("azure")
        self.deployments = deployments  # shared with the simulator, which registers them

    def azure_error(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
        return _json_response(
            status, {"error": {"code": code, "message": message}}, {**self._headers(), **(headers or {})}
        )

    def _headers(self) -> dict[str, str]:
        request_id = _ident("", 32)
        return {"apim-request-id": request_id, "x-request-id": request_id, "x-ms-region": "Sim Central"}

    def _ratelimit_headers(self, remaining: int, reset: str = "1s") -> dict[str, str]:
        # Azure states only what remains.
        return {
            "x-ratelimit-remaining-requests": str(remaining),
            "x-ratelimit-remaining-tokens": "149000" if remaining else "0",
        }

    def check_auth(self, headers: dict[str, str], query: dict[str, str]) -> Response | None:
        key = headers.get("api-key", "")
        if not key or key == "invalid":
            return self.azure_error(
                401,
                "401",
                "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid "
                "key for an active subscription and use a correct regional API endpoint for your resource.",
            )
        if not _API_VERSION.match(query.get("api-version", "")):
            return self.azure_error(404, "404", "Resource not found")
        return None

    def not_found(self, method: str, path: str) -> Response:
        return self.azure_error(404, "404", "Resource not found")

    def parse(self, body: Any, headers: dict[str, str], path_model: str | None) -> ChatRequest | Response:
        deployment = self.deployments.get(path_model or "")
        if deployment is None:
            return self.azure_error(
                404,
                "DeploymentNotFound",
                "The API deployment for this resource does not exist. If you created the deployment within the "
                "last 5 minutes, please wait a moment and try again.",
            )
        if deployment.api_key is not None and headers.get("api-key") != deployment.api_key:
            return self.check_auth({}, {})  # the 401 of a wrong key
        if isinstance(body, dict):
            body = {**body, "model": deployment.model}  # the deployment decides the model
        return super().parse(body, headers, path_model)

    def fault(self, fault: Fault, req: ChatRequest) -> Response:
        if fault.name == "content_filter":
            return _json_response(
                400,
                {
                    "error": {
                        "message": "The response was filtered due to the prompt triggering Azure OpenAI's content "
                        "management policy. Please modify your prompt and retry.",
                        "type": None,
                        "param": "prompt",
                        "code": "content_filter",
                        "status": 400,
                        "innererror": {
                            "code": "ResponsibleAIPolicyViolation",
                            "content_filter_result": {
                                "hate": {"filtered": True, "severity": "medium"},
                                "self_harm": {"filtered": False, "severity": "safe"},
                                "sexual": {"filtered": False, "severity": "safe"},
                                "violence": {"filtered": False, "severity": "safe"},
                            },
                        },
                    }
                },
                self._headers(),
            )
        if fault.name == "rate_limit":
            wait = max(int(fault.retry_after), 1)
            return self.azure_error(
                429,
                "429",
                "Requests to the ChatCompletions_Create Operation have exceeded call rate limit of your current "
                f"OpenAI S0 pricing tier. Please retry after {wait} seconds.",
                {
                    "retry-after": str(wait),
                    "retry-after-ms": str(int(fault.retry_after * 1000)),
                    **self._ratelimit_headers(0),
                },
            )
        return super().fault(fault, req)


def valid_deployment_name(name: Any) -> bool:
    return isinstance(name, str) and bool(_DEPLOYMENT_NAME.match(name))
