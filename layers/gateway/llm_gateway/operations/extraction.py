"""Extraction as a named operation: a document (text or S3 object) and a schema in, validated JSON out.

The schema is inline (a JSON Schema) or the name of one shipped in ``shared/schemas/``. Extraction runs
at temperature 0 and is cacheable by default (only validated answers are cached, see structured.py).

Documents in S3: trusted entry points (the S3 trigger and Step Functions, authorised by IAM, and jobs
they handed over) may read any key of the documents bucket and say so with
``ctx.tags[DOCUMENT_SCOPE_TAG] = "bucket"``. Every other caller, an API key's tenant (directly or
through a job), may only read its own prefix ``incoming/tenants/<tenant>/``.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llm_gateway import aws
from llm_gateway.config import Settings
from llm_gateway.documents.loading import Document, S3Object, read_s3_document
from llm_gateway.errors import GatewayError, InvalidRequestError
from llm_gateway.gateway import Gateway
from llm_gateway.guardrails.policy import GuardrailsField
from llm_gateway.http import framing as api
from llm_gateway.interfaces import RequestContext
from llm_gateway.models import CacheControl, CompletionRequest, Message, Tier
from llm_gateway.operations import extraction_uploads as uploads
from llm_gateway.structured.reask import ReaskPolicy, StructuredResult, complete_structured
from llm_gateway.structured.schemas import check_schema, named_schema
from llm_gateway.wiring import Services

DOCUMENT_SCOPE_TAG = "documents_scope"
JOB_SOURCE_TAG = "job_source"  # set by the retry worker on a job's context: who submitted the job
# Job sources whose submitter was an IAM-authorised entry point (an upload, a task token, a message an
# IAM principal queued): their documents may be anywhere in the bucket, as for the entry point itself.
TRUSTED_JOB_SOURCES = frozenset({uploads.UPLOAD_JOB_SOURCE, "stepfunctions", "sqs"})
TENANT_PREFIX = "incoming/tenants/{tenant}/"
DEFAULT_MAX_TOKENS = 4_096
MAX_TEXT_CHARS = 2_000_000
PROMPT_VERSION = "extraction-v1"
INLINE_SCHEMA_NAME = "extraction"
FORMAT_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what providers accept as a schema/tool name

SYSTEM_PROMPT = (
    "You extract structured data from a document into a JSON object that follows the given schema. "
    "Use only what the document states: never guess or invent values. When the document does not give "
    "a value, use null where the schema allows it. Copy names and identifiers exactly as written. Write "
    "dates as YYYY-MM-DD and amounts as plain numbers, without currency symbols or thousands separators."
)


class DocumentRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bucket: str | None = Field(default=None, min_length=3, max_length=63)
    key: str = Field(min_length=1, max_length=1024)


class ExtractionRequest(BaseModel):
    """``POST /v1/extractions`` and the ``extraction`` operation's payload."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    text: str | None = Field(default=None, min_length=1, max_length=MAX_TEXT_CHARS)
    s3: DocumentRef | None = None
    json_schema: dict[str, Any] | str = Field(alias="schema")
    instructions: str | None = Field(default=None, max_length=4_000)
    model: str | None = Field(default=None, min_length=1, max_length=128)
    tier: Tier | None = None
    fallback: list[str] | None = Field(default=None, max_length=8)
    max_tokens: int | None = Field(default=None, ge=16, le=200_000)
    max_reasks: int | None = Field(default=None, ge=0, le=5)
    token_budget: int | None = Field(default=None, ge=1_000, le=2_000_000)
    cache: CacheControl | None = None
    metadata: dict[str, str] = Field(default_factory=dict, max_length=16)
    guardrails: GuardrailsField = None  # read by the edge (http/guardrails.py)

    @model_validator(mode="after")
    def _one_source(self) -> ExtractionRequest:
        if (self.text is None) == (self.s3 is None):
            raise ValueError("give exactly one of 'text' or 's3' ({\"key\": ...})")
        if self.model is not None and self.tier is not None:
            raise ValueError("give either 'model' or 'tier', not both")
        return self


def widen_scope_for_trusted_job(ctx: RequestContext) -> bool:
    """A job that an IAM-authorised entry point handed over may read anywhere in the bucket, as that
    entry point could; a job submitted over HTTP stays within its tenant's prefix. True if widened."""
    if ctx.tags.get(JOB_SOURCE_TAG) not in TRUSTED_JOB_SOURCES:
        return False
    ctx.tags[DOCUMENT_SCOPE_TAG] = "bucket"
    return True


async def run_extraction(payload: dict[str, Any], ctx: RequestContext, services: Services) -> dict[str, Any]:
    """The ``extraction`` operation: JSON-ready result with data, provider, model, cost and attempts.

    Run as a job that retries an upload (see extraction_uploads), it also writes the upload's result
    object, or rewrites its error object when the attempt fails.
    """
    started = time.perf_counter()
    request = api.validate(ExtractionRequest, payload)
    config = services.settings
    widen_scope_for_trusted_job(ctx)
    s3_key = request.s3.key if request.s3 is not None else None
    upload = uploads.continued_upload(ctx, s3_key, config.documents_bucket)
    if upload is None:
        return await _extract(request, ctx, services.gateway(), config, started)
    return await _retry_upload(upload, request, ctx, services, started)


async def _retry_upload(
    upload: uploads.Upload, request: ExtractionRequest, ctx: RequestContext, services: Services, started: float
) -> dict[str, Any]:
    config = services.settings
    when = uploads.now_iso()
    attempt = uploads.job_attempt(ctx)
    job_id = ctx.tags.get("job_id")
    try:
        body = await _extract(request, ctx, services.gateway(), config, started)
    except GatewayError as err:
        final = not err.retryable or attempt >= config.job_max_receives
        schema = request.json_schema if isinstance(request.json_schema, str) else None
        await aws.in_thread(
            uploads.write_error,
            upload,
            err,
            started=when,
            status="failed" if final else "retrying",
            schema=schema,
            job_id=job_id,
            attempt=attempt,
            max_attempts=config.job_max_receives,
        )
        raise
    await aws.in_thread(uploads.write_result, upload, body, started=when, job_id=job_id)
    return body


async def _extract(
    request: ExtractionRequest, ctx: RequestContext, gateway: Gateway, config: Settings, started: float
) -> dict[str, Any]:
    schema_name, schema = resolve_schema(request.json_schema)
    source: dict[str, Any]
    if request.s3 is not None:
        obj = document_location(request.s3, ctx, config)
        document = await read_s3_document(obj, max_bytes=config.extraction_max_document_bytes)
        source = {"bucket": obj.bucket, "key": obj.key, "kind": document.kind, "pages": document.pages}
    else:
        assert request.text is not None
        document = Document(text=request.text, kind="text", size_bytes=len(request.text.encode("utf-8")))
        source = {"kind": "text"}
    source["chars"] = len(document.text)
    result = await complete_structured(
        gateway,
        completion_request(request, document.text, schema),
        ctx,
        schema=schema,
        name=schema_name,
        policy=ReaskPolicy(
            max_reasks=request.max_reasks if request.max_reasks is not None else config.extraction_max_reasks,
            token_budget=request.token_budget or config.extraction_token_budget,
        ),
    )
    return extraction_body(result, schema_name, source, request.metadata, started)


def resolve_schema(spec: dict[str, Any] | str) -> tuple[str, dict[str, Any]]:
    """(name, schema): a shipped schema by name, or an inline one after checking it."""
    if isinstance(spec, str):
        return spec, named_schema(spec)
    schema = check_schema(spec)
    title = schema.get("title")
    if isinstance(title, str) and FORMAT_NAME.match(title):
        return title, schema
    return INLINE_SCHEMA_NAME, schema


class DocumentForbiddenError(InvalidRequestError):
    """An S3 reference outside the caller's own prefix: another tenant's document, or none of its business."""

    code = "document_forbidden"
    http_status = 403


def document_location(ref: DocumentRef, ctx: RequestContext, config: Settings) -> S3Object:
    bucket = config.documents_bucket
    if not bucket:
        raise InvalidRequestError("this deployment has no documents bucket (DOCUMENTS_BUCKET)", details={"param": "s3"})
    check_document_scope(ref, tenant=ctx.tenant, bucket_wide=ctx.tags.get(DOCUMENT_SCOPE_TAG) == "bucket")
    if ref.bucket is not None and ref.bucket != bucket:
        raise InvalidRequestError("only the gateway's documents bucket can be read", details={"param": "s3.bucket"})
    return S3Object(bucket=bucket, key=ref.key)


def check_document_scope(ref: DocumentRef, *, tenant: str, bucket_wide: bool) -> None:
    """403 unless the key is the tenant's own (``incoming/tenants/<tenant>/``) or the caller may read the
    whole bucket (a trusted entry point). Also run when a job is submitted, so it is refused at once."""
    if bucket_wide:
        return
    prefix = TENANT_PREFIX.format(tenant=tenant)
    if not ref.key.startswith(prefix) or ".." in ref.key.split("/"):
        raise DocumentForbiddenError(
            f"documents must be under '{prefix}' in the documents bucket", details={"param": "s3.key"}
        )


def completion_request(request: ExtractionRequest, text: str, schema: dict[str, Any]) -> CompletionRequest:
    system = SYSTEM_PROMPT
    if isinstance(schema.get("description"), str):
        system += f"\n\nWhat to extract: {schema['description']}"
    user = f"{request.instructions.strip()}\n\n" if request.instructions else ""
    user += f"Document:\n\n{text}"
    return CompletionRequest(
        messages=[Message(role="system", content=system), Message(role="user", content=user)],
        model=request.model,
        tier=request.tier,
        fallback=request.fallback,
        max_tokens=request.max_tokens or DEFAULT_MAX_TOKENS,
        temperature=0.0,
        metadata=request.metadata,
        cache=request.cache,
        prompt_version=PROMPT_VERSION,
    )


def extraction_body(
    result: StructuredResult, schema_name: str, source: dict[str, Any], metadata: dict[str, str], started: float
) -> dict[str, Any]:
    return {
        "id": f"ext-{uuid.uuid4().hex}",
        "object": "extraction",
        "schema": schema_name,
        "data": result.data,
        "provider": result.provider,
        "model": result.model,
        "usage": result.usage.model_dump(),
        "cost_usd": result.cost_usd,
        "asks": result.asks,
        "cached": result.cached,
        "attempts": [a.model_dump(mode="json") for a in result.attempts],
        "latency_ms": round((time.perf_counter() - started) * 1000.0, 3),
        "source": source,
        "metadata": metadata,
    }
