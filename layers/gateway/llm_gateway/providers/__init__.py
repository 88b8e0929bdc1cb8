"""Provider adapters, imported only when first used (cold start pays only for what it calls)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the adapters' base pulls in httpx: only functions that call a provider import it
    from llm_gateway.providers.base import Provider

_ADAPTERS = {
    "openai": ("openai", "OpenAIProvider"),
    "openai_compatible": ("openai", "OpenAICompatibleProvider"),
    "anthropic": ("anthropic", "AnthropicProvider"),
    "gemini": ("gemini", "GeminiProvider"),
    "bedrock": ("bedrock", "BedrockProvider"),
}
# Wire dialects that are not providers of their own: a deployment kind serving a provider's models.
_DEPLOYMENT_KINDS = {
    "azure_openai": ("azure_openai", "AzureOpenAIProvider"),
}
# Providers called with AWS SigV4 signatures from the runtime's credentials, never with an API key.
SIGNED_PROVIDERS = frozenset({"bedrock"})

PROVIDER_NAMES = tuple(_ADAPTERS)


def adapter_class(provider: str) -> type[Provider]:
    """The adapter of a provider, or of a deployment kind (``azure_openai``)."""
    try:
        module_name, class_name = _ADAPTERS.get(provider) or _DEPLOYMENT_KINDS[provider]
    except KeyError:
        raise ValueError(f"no adapter for provider '{provider}'") from None
    module = importlib.import_module(f"{__name__}.{module_name}")
    cls: type[Provider] = getattr(module, class_name)
    return cls


__all__ = ["PROVIDER_NAMES", "SIGNED_PROVIDERS", "adapter_class"]
