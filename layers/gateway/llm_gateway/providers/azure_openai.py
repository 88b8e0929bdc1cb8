"""Azure OpenAI: OpenAI's Chat Completions on an Azure resource, one URL per Azure deployment.

The wire differs from OpenAI's in three places: the URL names the Azure deployment and carries an
``api-version`` query parameter, the key goes in an ``api-key`` header, and the body needs no ``model``
(the deployment decides it). Error bodies and streamed chunks are OpenAI's (content filtering: a 400
``content_filter``; throttling: a 429 with ``retry-after`` and ``retry-after-ms``).
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

from llm_gateway.models import ProviderRequest
from llm_gateway.providers.base import WireRequest
from llm_gateway.providers.openai import OpenAIProvider


class AzureOpenAIProvider(OpenAIProvider):
    name = "azure_openai"
    rate_limit_dialect = "azure"

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        connect_timeout_s: float = 3.0,
        log_prompts: bool = False,
        api_version: str,
        deployment_names: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(
            base_url=base_url, api_key=api_key, connect_timeout_s=connect_timeout_s, log_prompts=log_prompts
        )
        self.api_version = api_version
        # catalog model id -> Azure deployment name; a model not named is deployed under its own id
        self.deployment_names = dict(deployment_names or {})

    def deployment_url(self, model: str, operation: str = "chat/completions") -> str:
        name = quote(self.deployment_names.get(model, model), safe="")
        return f"{self.base_url}/openai/deployments/{name}/{operation}?api-version={quote(self.api_version, safe='')}"

    def build_request(self, request: ProviderRequest) -> WireRequest:
        wire = super().build_request(request)
        body = {k: v for k, v in wire.body.items() if k != "model"}
        headers = {k: v for k, v in wire.headers.items() if k != "authorization"}
        if self.api_key:
            headers["api-key"] = self.api_key
        return WireRequest(url=self.deployment_url(request.model), headers=headers, body=body)
