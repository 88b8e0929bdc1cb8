"""llm_gateway: the core of a serverless multi-provider LLM gateway.

Public surface: request/response models, the exception tree, and the gateway. Heavy or optional
pieces (provider adapters, AWS clients, Momento) are imported where they are used, not here.
"""

from llm_gateway.errors import GatewayError
from llm_gateway.models import CompletionRequest, CompletionResult

__all__ = ["CompletionRequest", "CompletionResult", "GatewayError"]
