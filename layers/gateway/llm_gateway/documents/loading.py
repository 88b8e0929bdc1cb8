"""Documents as text: read an S3 object (bounded in size) and turn plain text, Markdown, HTML or PDF into text.

PDF text comes from ``pypdf`` (pure Python, no dependencies), imported only when a PDF arrives. A PDF
without a text layer (a scan) is refused with a clear error rather than sent as an empty prompt.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from llm_gateway import aws
from llm_gateway.errors import (
    DocumentNotFoundError,
    InvalidRequestError,
    PayloadTooLargeError,
    UnsupportedDocumentError,
)

MAX_PDF_PAGES = 300
_PDF_MAGIC = b"%PDF-"
_HTML_SUFFIXES = (".html", ".htm", ".xhtml")
_MISSING = {"NoSuchKey", "NoSuchBucket", "404", "NotFound"}
_DENIED = {"AccessDenied", "403", "AllAccessDisabled"}


@dataclass(frozen=True)
class Document:
    text: str
    kind: str  # "text" | "html" | "pdf"
    size_bytes: int
    pages: int | None = None


@dataclass(frozen=True)
class S3Object:
    bucket: str
    key: str


async def read_s3_document(obj: S3Object, *, max_bytes: int) -> Document:
    """The object's text. Missing or unreadable objects are the caller's 404/415, too large a 413."""
    raw, content_type = await aws.in_thread(_get_object, obj, max_bytes)
    return document_text(raw, name=obj.key, content_type=content_type)


def _get_object(obj: S3Object, max_bytes: int) -> tuple[bytes, str]:
    """The object's bytes; a dependency fault (timeout, throttling, 5xx) is a 503, even mid-body."""
    with aws.unavailable_as_503("S3", "GetObject"):
        return _read_object(obj, max_bytes)


def _read_object(obj: S3Object, max_bytes: int) -> tuple[bytes, str]:
    from botocore.exceptions import ClientError

    # The caller sees its own key, never the bucket's name (nor the account that owns it).
    try:
        response: Any = aws.s3().get_object(Bucket=obj.bucket, Key=obj.key)
    except ClientError as exc:
        code = aws.error_code(exc) or ""
        if code in _MISSING:
            raise DocumentNotFoundError(f"no document at key '{obj.key}'", details={"key": obj.key}) from None
        if code in _DENIED:
            raise DocumentNotFoundError(
                f"the gateway may not read the document at key '{obj.key}'", details={"key": obj.key}
            ) from None
        raise
    body = response["Body"]
    try:
        size = int(response.get("ContentLength") or 0)
        if size > max_bytes:
            raise PayloadTooLargeError(
                f"the document is {size} bytes; the limit is {max_bytes}", details={"limit": max_bytes}
            )
        raw: bytes = body.read(max_bytes + 1)
    finally:
        body.close()
    if len(raw) > max_bytes:
        raise PayloadTooLargeError(f"the document is over {max_bytes} bytes", details={"limit": max_bytes})
    return raw, str(response.get("ContentType") or "")


def document_text(raw: bytes, *, name: str = "", content_type: str = "") -> Document:
    """Text of a document's bytes: PDF (by magic bytes, name or type), HTML (by name, type, or a start of
    ``<!doctype html`` / ``<html``), else UTF-8 text (Markdown and plain text as-is)."""
    lowered = name.lower()
    if raw.startswith(_PDF_MAGIC) or lowered.endswith(".pdf") or content_type.startswith("application/pdf"):
        return _pdf(raw)
    text = _utf8(raw)
    from llm_gateway.documents.html_text import html_to_text, starts_like_html

    declared = lowered.endswith(_HTML_SUFFIXES) or content_type.startswith(("text/html", "application/xhtml"))
    if declared or starts_like_html(text):  # uploads often come as .txt or application/octet-stream
        return _non_empty(Document(text=html_to_text(text), kind="html", size_bytes=len(raw)))
    return _non_empty(Document(text=text, kind="text", size_bytes=len(raw)))


def _utf8(raw: bytes) -> str:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UnsupportedDocumentError(
            "the document is neither UTF-8 text nor a PDF", details={"supported": ["text", "markdown", "html", "pdf"]}
        ) from None
    if "\x00" in text:
        raise UnsupportedDocumentError(
            "the document looks binary; send UTF-8 text, Markdown, HTML or PDF",
            details={"supported": ["text", "markdown", "html", "pdf"]},
        )
    return text


def _pdf(raw: bytes) -> Document:
    try:
        from pypdf import PdfReader
    except ImportError:  # pragma: no cover - pypdf ships in the layer
        raise UnsupportedDocumentError("PDF support is not installed in this deployment") from None
    try:
        reader = PdfReader(io.BytesIO(raw))
        if reader.is_encrypted and not reader.decrypt(""):
            raise UnsupportedDocumentError("the PDF is encrypted")
        pages = reader.pages
        if len(pages) > MAX_PDF_PAGES:
            raise PayloadTooLargeError(
                f"the PDF has {len(pages)} pages; the limit is {MAX_PDF_PAGES}", details={"limit": MAX_PDF_PAGES}
            )
        texts = [(page.extract_text() or "").strip() for page in pages]
    except (UnsupportedDocumentError, PayloadTooLargeError):
        raise
    except Exception as exc:  # a third-party parser on untrusted bytes: any failure means "cannot read it"
        raise UnsupportedDocumentError(f"the PDF cannot be read: {type(exc).__name__}") from None
    text = "\n\n".join(t for t in texts if t)
    if not text:
        raise UnsupportedDocumentError("the PDF has no text layer (a scanned image?); OCR it first")
    return Document(text=text, kind="pdf", size_bytes=len(raw), pages=len(texts))


def _non_empty(document: Document) -> Document:
    if not document.text.strip():
        raise InvalidRequestError("the document is empty", details={"param": "document"})
    return document
