"""Amazon Bedrock Runtime's Converse API, called with httpx and signed with SigV4.

No API key: each call is signed with the runtime's credentials from botocore's chain (in Lambda, the
function's role) for the ``bedrock`` signing name in the configured region. botocore is imported on
the first call only, so functions that never reach Bedrock do not pay for it at cold start.
"""

from __future__ import annotations

import json
import re
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import httpx

from llm_gateway.errors import (
    ContentFilteredError,
    ContextTooLongError,
    ProviderAuthError,
    ProviderBadRequestError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitedError,
)
from llm_gateway.models import ProviderRequest, ProviderResponse
from llm_gateway.providers import bedrock_converse as converse
from llm_gateway.providers import eventstream
from llm_gateway.providers.base import Provider, WireRequest, with_json_instruction

if TYPE_CHECKING:
    from llm_gateway.providers.stream_call import StreamDecoder

SIGNING_NAME = "bedrock"

_ERROR_TYPES: dict[str, type[ProviderError]] = {
    "ThrottlingException": RateLimitedError,
    "ServiceQuotaExceededException": RateLimitedError,
    "ModelNotReadyException": ProviderUnavailableError,
    "ServiceUnavailableException": ProviderUnavailableError,
    "InternalServerException": ProviderUnavailableError,
    "ModelErrorException": ProviderUnavailableError,
    "ModelTimeoutException": ProviderTimeoutError,
    "AccessDeniedException": ProviderAuthError,
    "UnrecognizedClientException": ProviderAuthError,
    "InvalidSignatureException": ProviderAuthError,
    "IncompleteSignatureException": ProviderAuthError,
    "MissingAuthenticationTokenException": ProviderAuthError,
    "ExpiredTokenException": ProviderAuthError,
    "ValidationException": ProviderBadRequestError,
    "ResourceNotFoundException": ProviderBadRequestError,
}
# Cross-region inference profiles are named by geography; the catalog names the US one.
_GEO_PREFIX = re.compile(r"^(us|eu|apac)\.")


def regional_model_id(model: str, region: str) -> str:
    """An inference-profile id moved to the region's geography (``us.`` -> ``eu.`` in eu-west-1)."""
    if not _GEO_PREFIX.match(model):
        return model
    geo = "eu" if region.startswith("eu-") else "apac" if region.startswith("ap-") else "us"
    return _GEO_PREFIX.sub(f"{geo}.", model, count=1)


def _region_from_url(base_url: str) -> str | None:
    host = urlsplit(base_url).hostname or ""
    match = re.fullmatch(r"bedrock-runtime(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?", host)
    return match.group(1) if match else None


class BedrockProvider(Provider):
    name = "bedrock"
    rate_limit_dialect = ""  # Bedrock states no quota in its headers; a throttled call is a 429 only

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None = None,
        connect_timeout_s: float = 3.0,
        log_prompts: bool = False,
        region: str | None = None,
    ) -> None:
        super().__init__(base_url=base_url, api_key=None, connect_timeout_s=connect_timeout_s, log_prompts=log_prompts)
        resolved = region or _region_from_url(base_url)
        if not resolved:
            raise ValueError("bedrock needs a region (BEDROCK_REGION or AWS_REGION)")
        self.region = resolved
        self._credential_source: Any = None  # botocore's chain, resolved on first use and kept
        self._lock = threading.Lock()

    # --- wire -------------------------------------------------------------------------------------

    def build_request(self, request: ProviderRequest) -> WireRequest:
        return self._wire(request, "converse", "application/json")

    def build_stream_request(self, request: ProviderRequest) -> WireRequest:
        """The same call to ConverseStream, answered as binary eventstream frames."""
        return self._wire(request, "converse-stream", eventstream.CONTENT_TYPE)

    def _wire(self, request: ProviderRequest, operation: str, accept: str) -> WireRequest:
        calling = bool(request.tools) and request.tool_choice != "none"
        if calling and request.native_structured:
            # The structured answer is a forced tool of its own: with the caller's tools it is asked
            # for in the prompt instead (and validated all the same), as for Anthropic.
            request = request.model_copy(update={"native_structured": False})
        system, turns = converse.conversation(with_json_instruction(request), request.model, with_tools=calling)
        body: dict[str, Any] = {"messages": turns, "inferenceConfig": converse.inference_config(request)}
        if system:
            body["system"] = system
        if (tools := converse.tool_config(request)) is not None:
            body["toolConfig"] = tools
        model = regional_model_id(request.model, self.region)
        url = f"{self.base_url}/model/{quote(model, safe='')}/{operation}"
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        headers = self._signed_headers(url, content, request.model, accept)
        return WireRequest(url=url, headers=headers, body=body, content=content)

    def parse_response(self, data: Any, request: ProviderRequest) -> ProviderResponse:
        stop_reason = str(data.get("stopReason"))
        if stop_reason in converse.FILTERED:
            raise ContentFilteredError(f"{self.name} filtered the answer", provider=self.name, model=request.model)
        blocks = data["output"]["message"]["content"]
        content, finish, calls = converse.answer(blocks, request, stop_reason)
        return ProviderResponse(
            content=content,
            finish_reason=finish,
            tool_calls=calls or None,
            usage=converse.usage(data.get("usage") or {}),
            raw_model=request.model,
        )

    def stream_decoder(self, request: ProviderRequest) -> StreamDecoder:
        from llm_gateway.providers.bedrock_stream import ConverseStreamDecoder, ConverseStreamReader

        return ConverseStreamDecoder(ConverseStreamReader(request, provider=self.name, log_prompts=self.log_prompts))

    # --- errors -----------------------------------------------------------------------------------

    def error_message(self, body: Any) -> tuple[str, str]:
        if not isinstance(body, dict):
            return "", ""
        message = body.get("message") or body.get("Message") or ""
        return str(message), _short_type(str(body.get("__type") or ""))

    def error_type_from_headers(self, headers: httpx.Headers) -> str:
        return _short_type(headers.get("x-amzn-errortype", ""))

    def classify_error(self, status: int, message: str, error_type: str, body: Any) -> type[ProviderError] | None:
        if error_type == "ValidationException" and converse.TOO_LONG.search(message):
            return ContextTooLongError
        return _ERROR_TYPES.get(error_type)

    # --- signing ----------------------------------------------------------------------------------

    def _signed_headers(self, url: str, content: bytes, model: str, accept: str = "application/json") -> dict[str, str]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        credentials = self._credentials()
        if credentials is None:
            raise ProviderAuthError(
                f"{self.name}: no AWS credentials found to sign the call", provider=self.name, model=model
            )
        aws_request = AWSRequest(
            method="POST",
            url=url,
            data=content,
            headers={"content-type": "application/json", "accept": accept},
        )
        SigV4Auth(credentials.get_frozen_credentials(), SIGNING_NAME, self.region).add_auth(aws_request)
        return {key: str(value) for key, value in aws_request.headers.items()}

    def _credentials(self) -> Any:
        """botocore's credential chain (environment, web identity, container, instance profile...).
        Refreshable credentials renew themselves; the chain itself is resolved once per provider."""
        with self._lock:
            if self._credential_source is None:
                import botocore.session

                self._credential_source = botocore.session.get_session().get_credentials()
            return self._credential_source


def _short_type(raw: str) -> str:
    """``ValidationException:http://internal...`` or ``com.amazon.coral...#ValidationException`` -> the name."""
    return raw.split(":", 1)[0].rsplit("#", 1)[-1].strip()
