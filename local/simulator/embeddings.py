"""Embedding endpoints: OpenAI ``/v1/embeddings``, Gemini ``models/{m}:batchEmbedContents`` and Bedrock
``/model/{id}/invoke`` for Titan Text Embeddings v2 and Cohere Embed.

Vectors are deterministic: a unit vector seeded by a hash of the model and the text, at the model's full
length, then shortened and renormalised as the providers do for a smaller ``dimensions``. Usage is the
simulator's token count (chars/4). Each dialect refuses what its real API refuses: lengths it does not
offer, too many inputs per call, empty texts, unknown models and extraneous fields; the simulator's faults
(429, 500, drop, slow, malformed...) apply as on chat.
"""

from __future__ import annotations

import base64
import hashlib
import math
import random
import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from local.simulator.wire import ChatRequest, Json, Response, _ident, _json_response, _tokens

if TYPE_CHECKING:
    from local.simulator.server import ProviderSimulator


@dataclass(frozen=True)
class Model:
    dimensions: int  # the default (full) length
    min_dimensions: int | None = None  # any length from here up to the default may be asked for
    allowed: tuple[int, ...] = ()  # or exactly these
    max_inputs: int = 2048
    max_tokens: int = 8192


MODELS: dict[str, dict[str, Model]] = {
    "openai": {
        "text-embedding-3-small": Model(1536, min_dimensions=1),
        "text-embedding-3-large": Model(3072, min_dimensions=1),
        "text-embedding-ada-002": Model(1536),
    },
    "gemini": {
        "gemini-embedding-001": Model(3072, min_dimensions=128, max_inputs=100, max_tokens=2048),
        "text-embedding-004": Model(768, min_dimensions=1, max_inputs=100, max_tokens=2048),
    },
    "bedrock": {
        "amazon.titan-embed-text-v2:0": Model(1024, allowed=(256, 512, 1024), max_inputs=1),
        "cohere.embed-english-v3": Model(1024, max_inputs=96, max_tokens=512),
    },
}
OPENAI_MAX_REQUEST_TOKENS = 300_000
TITAN_MAX_CHARS = 50_000
COHERE_MAX_CHARS = 2048
COHERE_INPUT_TYPES = ("search_document", "search_query", "classification", "clustering")
TITAN_FIELDS = ("inputText", "dimensions", "normalize", "embeddingTypes")
COHERE_FIELDS = ("texts", "input_type", "truncate", "embedding_types")


@dataclass
class EmbedRequest:
    model: str
    texts: list[str]
    dimensions: int
    base64: bool = False
    body_kind: str = ""  # bedrock: "titan" or "cohere"


def vector(model: str, text: str, dimensions: int, full: int) -> list[float]:
    """The model's vector for ``text``: its first ``dimensions`` values, renormalised to length 1."""
    seed = int.from_bytes(hashlib.sha256(f"{model}\0{text}".encode()).digest()[:8], "big")
    rng = random.Random(seed)
    values = [rng.gauss(0.0, 1.0) for _ in range(full)][:dimensions]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def handle(
    sim: ProviderSimulator, provider: str, headers: dict[str, str], query: dict[str, str], raw: bytes, path_model: str
) -> tuple[Response, Any, str | None]:
    dialect = sim._dialects[provider]
    latency = sim.latency_s()
    if latency:
        time.sleep(latency)
    body: Any = None
    try:
        body = _json(raw)
    except ValueError:
        body = None
    model = path_model or (body.get("model") if isinstance(body, dict) else None)
    denied = dialect.check_auth(headers, query)
    if denied is not None:
        return denied, body, model
    if not isinstance(body, dict):
        return dialect.invalid_json(), body, model
    parsed = PARSERS[provider](dialect, body, path_model)
    if isinstance(parsed, Response):
        return parsed, body, model
    fault = sim._pick_fault(ChatRequest(provider, parsed.model, parsed.texts), headers)
    if fault is not None and fault.name != "content_filter" and not fault.name.startswith("stream_"):
        if fault.name == "drop":
            return Response(0, None, fault="drop"), body, parsed.model
        if fault.name == "slow":
            time.sleep(max(0.0, fault.delay_s))
        else:
            resp = dialect.fault(fault, ChatRequest(provider, parsed.model, parsed.texts))
            resp.fault = fault.name
            return resp, body, parsed.model
    full = MODELS[provider][parsed.model].dimensions
    vectors = [vector(parsed.model, text, parsed.dimensions, full) for text in parsed.texts]
    resp = RENDERERS[provider](parsed, vectors)
    resp.fault = fault.name if fault is not None else None
    return resp, body, parsed.model


def _json(raw: bytes) -> Any:
    import json

    return json.loads(raw) if raw else None


def _length_ok(spec: Model, dimensions: Any) -> bool:
    if not isinstance(dimensions, int) or isinstance(dimensions, bool):
        return False
    if dimensions == spec.dimensions:
        return True
    if spec.allowed:
        return dimensions in spec.allowed
    return spec.min_dimensions is not None and spec.min_dimensions <= dimensions <= spec.dimensions


# --------------------------------------------------------------------------- OpenAI


def _openai(dialect: Any, body: Json, _: str | None) -> EmbedRequest | Response:
    model = body.get("model")
    spec = MODELS["openai"].get(model) if isinstance(model, str) else None
    if spec is None:
        return dialect.error(
            404, f"The model `{model}` does not exist or you do not have access to it.", code="model_not_found"
        )
    raw = body.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
        return dialect.error(400, "'$.input' is invalid. Please check the API reference.", param="input")
    if len(texts) > spec.max_inputs:
        return dialect.error(400, f"'$.input' is invalid: at most {spec.max_inputs} inputs per request.", param="input")
    dimensions = body.get("dimensions", spec.dimensions)
    if "dimensions" in body and not spec.min_dimensions:
        return dialect.error(400, "This model does not support specifying dimensions.", param="dimensions")
    if not _length_ok(spec, dimensions):
        return dialect.error(400, f"Invalid value for 'dimensions' = {dimensions}.", param="dimensions")
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        return dialect.error(400, f"Invalid value for 'encoding_format' = {fmt}.", param="encoding_format")
    counts = [_tokens(t) for t in texts]
    if max(counts) > spec.max_tokens:
        return dialect.error(
            400,
            f"This model's maximum context length is {spec.max_tokens} tokens, however you requested "
            f"{max(counts)} tokens in your input. Please reduce your input.",
            param="input",
            code="context_length_exceeded",
        )
    if sum(counts) > OPENAI_MAX_REQUEST_TOKENS:
        return dialect.error(
            400, f"Requested {sum(counts)} tokens, max {OPENAI_MAX_REQUEST_TOKENS} tokens per request", param="input"
        )
    return EmbedRequest(model, texts, dimensions, base64=fmt == "base64")


def _openai_render(req: EmbedRequest, vectors: list[list[float]]) -> Response:
    def encode(v: list[float]) -> Any:
        return base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode() if req.base64 else v

    tokens = sum(_tokens(t) for t in req.texts)
    return _json_response(
        200,
        {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(vectors)],
            "model": req.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        },
    )


# --------------------------------------------------------------------------- Gemini


def _gemini(dialect: Any, body: Json, path_model: str | None) -> EmbedRequest | Response:
    model = (path_model or "").removeprefix("models/")
    spec = MODELS["gemini"].get(model)
    if spec is None:
        return dialect.error(
            404,
            "NOT_FOUND",
            f"models/{model} is not found for API version v1beta, or is not supported for embedContent.",
        )
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        return dialect.client_error("* BatchEmbedContentsRequest.requests: requests is not specified\n")
    if len(requests) > spec.max_inputs:
        return dialect.client_error(
            f"* BatchEmbedContentsRequest.requests: at most {spec.max_inputs} requests can be in one batch\n"
        )
    texts: list[str] = []
    lengths: set[Any] = set()
    for i, one in enumerate(requests):
        where = f"BatchEmbedContentsRequest.requests[{i}]"
        if not isinstance(one, dict) or one.get("model") != f"models/{model}":
            return dialect.client_error(f"* {where}.model: the model must match the batch's model models/{model}\n")
        parts = (one.get("content") or {}).get("parts") if isinstance(one.get("content"), dict) else None
        text = "".join(p.get("text", "") for p in parts if isinstance(p, dict)) if isinstance(parts, list) else ""
        if not text:
            return dialect.client_error(f"* {where}.content: content must contain text\n")
        if _tokens(text) > spec.max_tokens:
            return dialect.client_error(f"* {where}: the input is longer than {spec.max_tokens} tokens\n")
        texts.append(text)
        wanted = one.get("outputDimensionality", one.get("output_dimensionality", spec.dimensions))
        if not _length_ok(spec, wanted):
            return dialect.client_error(f"* {where}.output_dimensionality: {wanted} is out of range\n")
        lengths.add(wanted)
    if len(lengths) != 1:
        return dialect.client_error("* the simulator answers one output_dimensionality per batch\n")
    return EmbedRequest(model, texts, lengths.pop())


def _gemini_render(_: EmbedRequest, vectors: list[list[float]]) -> Response:
    return _json_response(200, {"embeddings": [{"values": v} for v in vectors]})


# --------------------------------------------------------------------------- Bedrock InvokeModel


def _bedrock(dialect: Any, body: Json, path_model: str | None) -> EmbedRequest | Response:
    model = path_model or ""
    spec = MODELS["bedrock"].get(model)
    if spec is None:
        return dialect.client_error("The provided model identifier is invalid.")
    cohere = model.startswith("cohere.")
    for key in body:
        if key not in (COHERE_FIELDS if cohere else TITAN_FIELDS):
            return dialect.client_error(f"Malformed input request: extraneous key [{key}] is not permitted")
    if cohere:
        texts = body.get("texts")
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return dialect.client_error("Malformed input request: #/texts: expected type: JSONArray of String")
        if not texts or len(texts) > spec.max_inputs:
            return dialect.client_error(
                f"Malformed input request: #/texts: expected maxItems: {spec.max_inputs}, actual: {len(texts)}"
            )
        for i, text in enumerate(texts):
            if not text or len(text) > COHERE_MAX_CHARS:
                return dialect.client_error(
                    f"Malformed input request: #/texts/{i}: expected minLength: 1, maxLength: {COHERE_MAX_CHARS}"
                )
        if body.get("input_type") not in COHERE_INPUT_TYPES:
            return dialect.client_error("Malformed input request: #/input_type: is not a valid enum value")
        return EmbedRequest(model, list(texts), spec.dimensions, body_kind="cohere")
    text = body.get("inputText")
    if not isinstance(text, str) or not text:
        return dialect.client_error("Malformed input request: #/inputText: expected minLength: 1, actual: 0")
    if len(text) > TITAN_MAX_CHARS or _tokens(text) > spec.max_tokens:
        return dialect.client_error("400 Bad Request: Too many input tokens. Max input tokens: 8192")
    dimensions = body.get("dimensions", spec.dimensions)
    if not _length_ok(spec, dimensions):
        return dialect.client_error(f"Malformed input request: #/dimensions: {dimensions} is not a valid enum value")
    return EmbedRequest(model, [text], dimensions, body_kind="titan")


def _bedrock_render(req: EmbedRequest, vectors: list[list[float]]) -> Response:
    tokens = sum(_tokens(t) for t in req.texts)
    headers = {"X-Amzn-Bedrock-Input-Token-Count": str(tokens), "x-amzn-RequestId": _ident("", 32)}
    if req.body_kind == "cohere":
        body: Json = {
            "id": _ident("", 32),
            "embeddings": vectors,
            "response_type": "embeddings_floats",
            "texts": [t.lower() for t in req.texts],
        }
    else:
        body = {"embedding": vectors[0], "embeddingsByType": {"float": vectors[0]}, "inputTextTokenCount": tokens}
    return _json_response(200, body, headers)


PARSERS = {"openai": _openai, "gemini": _gemini, "bedrock": _bedrock}
RENDERERS = {"openai": _openai_render, "gemini": _gemini_render, "bedrock": _bedrock_render}
