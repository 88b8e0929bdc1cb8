"""One small interface over each provider's embedding API: ``embed(texts, model, dimensions)``.

Each adapter wraps the provider's chat adapter and reuses its HTTP call (explicit timeout, transport and
status errors mapped onto the exception tree) and, for Bedrock, its SigV4 signing. Batching to the
model's limits is the operation's job: an adapter sends what it is given in one call.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from llm_gateway.documents.tokens import estimate_text_tokens
from llm_gateway.errors import MalformedResponseError
from llm_gateway.providers.base import Provider, WireRequest
from llm_gateway.providers.bedrock import BedrockProvider

TITAN_V2 = "amazon.titan-embed-text-v2:0"
COHERE_PREFIX = "cohere.embed-"
# Bedrock reports what it billed for an InvokeModel in a header (Cohere's body carries no count).
BEDROCK_TOKEN_HEADER = "x-amzn-bedrock-input-token-count"


@dataclass(frozen=True)
class Embedded:
    vectors: list[list[float]]  # in the order of the texts sent
    input_tokens: int


class EmbeddingProvider(Protocol):
    async def embed(
        self,
        texts: Sequence[str],
        model: str,
        dimensions: int | None,
        *,
        client: httpx.AsyncClient,
        timeout_s: float,
    ) -> Embedded:
        """``dimensions`` None: the model's default length (the parameter is not sent)."""
        ...


class _Adapter:
    def __init__(self, provider: Provider) -> None:
        self.provider = provider

    async def _post(self, wire: WireRequest, model: str, client: httpx.AsyncClient, timeout_s: float) -> Any:
        response = await self.provider.send(wire, model, client=client, timeout_s=timeout_s)
        return response, self.provider.json_body(response, model)

    def _malformed(self, why: str, model: str) -> MalformedResponseError:
        return MalformedResponseError(
            f"{self.provider.name} answered embeddings with an unexpected shape: {why}",
            provider=self.provider.name,
            model=model,
        )


class OpenAIEmbeddings(_Adapter):
    """``POST {base}/embeddings``: floats asked for (the gateway encodes base64 itself)."""

    async def embed(
        self, texts: Sequence[str], model: str, dimensions: int | None, *, client: httpx.AsyncClient, timeout_s: float
    ) -> Embedded:
        body: dict[str, Any] = {"model": model, "input": list(texts), "encoding_format": "float"}
        if dimensions is not None:
            body["dimensions"] = dimensions
        headers = {"content-type": "application/json"}
        if self.provider.api_key:
            headers["authorization"] = f"Bearer {self.provider.api_key}"
        wire = WireRequest(url=f"{self.provider.base_url}/embeddings", headers=headers, body=body)
        _, data = await self._post(wire, model, client, timeout_s)
        try:
            rows = sorted(data["data"], key=lambda row: int(row["index"]))
            vectors = [_floats(row["embedding"]) for row in rows]
            tokens = int(data["usage"]["prompt_tokens"])
        except (KeyError, TypeError, ValueError) as exc:
            raise self._malformed(type(exc).__name__, model) from exc
        return _checked(self, vectors, texts, model, tokens)


class GeminiEmbeddings(_Adapter):
    """``models/{m}:batchEmbedContents``: one request per text. Gemini reports no token count here, so
    usage is the gateway's own estimate (as the README says)."""

    async def embed(
        self, texts: Sequence[str], model: str, dimensions: int | None, *, client: httpx.AsyncClient, timeout_s: float
    ) -> Embedded:
        name = f"models/{model}"
        requests: list[dict[str, Any]] = []
        for text in texts:
            one: dict[str, Any] = {"model": name, "content": {"parts": [{"text": text}]}}
            if dimensions is not None:
                one["outputDimensionality"] = dimensions
            requests.append(one)
        headers = {"content-type": "application/json"}
        if self.provider.api_key:
            headers["x-goog-api-key"] = self.provider.api_key
        url = f"{self.provider.base_url}/v1beta/{quote(name, safe='/')}:batchEmbedContents"
        _, data = await self._post(
            WireRequest(url=url, headers=headers, body={"requests": requests}), model, client, timeout_s
        )
        try:
            vectors = [_floats(row["values"]) for row in data["embeddings"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise self._malformed(type(exc).__name__, model) from exc
        return _checked(self, vectors, texts, model, sum(estimate_text_tokens(t) for t in texts))


class BedrockEmbeddings(_Adapter):
    """InvokeModel (``/model/{id}/invoke``), signed like Converse: Titan v2 takes one text per call,
    Cohere a list."""

    provider: BedrockProvider

    async def embed(
        self, texts: Sequence[str], model: str, dimensions: int | None, *, client: httpx.AsyncClient, timeout_s: float
    ) -> Embedded:
        if model.startswith(COHERE_PREFIX):
            body: dict[str, Any] = {"texts": list(texts), "input_type": "search_document"}
        else:
            if len(texts) != 1:
                raise ValueError("Titan embeddings take one text per call")
            body = {"inputText": texts[0], "normalize": True}
            if dimensions is not None:
                body["dimensions"] = dimensions
        url = f"{self.provider.base_url}/model/{quote(model, safe='')}/invoke"
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        headers = self.provider._signed_headers(url, content, model)
        wire = WireRequest(url=url, headers=headers, body=body, content=content)
        response, data = await self._post(wire, model, client, timeout_s)
        try:
            if "texts" in body:
                vectors = [_floats(row) for row in data["embeddings"]]
                counted = response.headers.get(BEDROCK_TOKEN_HEADER)
                tokens = int(counted) if counted is not None else sum(estimate_text_tokens(t) for t in texts)
            else:
                vectors = [_floats(data["embedding"])]
                tokens = int(data["inputTextTokenCount"])
        except (KeyError, TypeError, ValueError) as exc:
            raise self._malformed(type(exc).__name__, model) from exc
        return _checked(self, vectors, texts, model, tokens)


def embedding_adapter(provider: Provider) -> EmbeddingProvider | None:
    """The embedding API of a configured provider; None for one that has none here."""
    if isinstance(provider, BedrockProvider):
        return BedrockEmbeddings(provider)
    if provider.name == "gemini":
        return GeminiEmbeddings(provider)
    if provider.name == "openai":
        return OpenAIEmbeddings(provider)
    return None


def _floats(raw: Any) -> list[float]:
    if not isinstance(raw, list) or not raw:
        raise ValueError("a vector is a non-empty list")
    return [float(x) for x in raw]


def _checked(adapter: _Adapter, vectors: list[list[float]], texts: Sequence[str], model: str, tokens: int) -> Embedded:
    if len(vectors) != len(texts):
        raise adapter._malformed(f"{len(vectors)} vectors for {len(texts)} inputs", model)
    if len({len(v) for v in vectors}) > 1:
        raise adapter._malformed("vectors of different lengths", model)
    return Embedded(vectors=vectors, input_tokens=max(tokens, 0))
