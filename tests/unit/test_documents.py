"""Documents to text, and the extraction handler's S3 key conventions (no AWS needed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from llm_gateway.documents import document_text
from llm_gateway.errors import InvalidRequestError, UnsupportedDocumentError
from tests.pdf_bytes import pdf_with_lines

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_plain_text_and_markdown_pass_through() -> None:
    doc = document_text("# Title\n\nJane Doe — CTO\n".encode(), name="card.md")
    assert doc.kind == "text" and doc.text == "# Title\n\nJane Doe — CTO\n"
    assert document_text(b"\xef\xbb\xbfhello", name="x.txt").text == "hello"  # BOM dropped


def test_html_is_reduced_to_text() -> None:
    html = b"<html><head><script>var x=1</script></head><body><p>Jane <b>Doe</b></p></body></html>"
    doc = document_text(html, name="page.html")
    assert doc.kind == "html" and "Jane Doe" in doc.text and "var x" not in doc.text


def test_pdf_text_layer_is_extracted_by_content_not_name() -> None:
    doc = document_text(pdf_with_lines(["INVOICE 42", "Acme (Berlin)"]), name="upload.bin")
    assert doc.kind == "pdf" and doc.pages == 1
    assert doc.text.splitlines() == ["INVOICE 42", "Acme (Berlin)"]


@pytest.mark.parametrize(
    ("raw", "name", "error"),
    [
        (bytes(range(256)), "x.bin", UnsupportedDocumentError),
        (b"abc\x00def", "x.txt", UnsupportedDocumentError),
        (b"%PDF-1.4\nnot really a pdf", "x.pdf", UnsupportedDocumentError),
        (pdf_with_lines([]), "blank.pdf", UnsupportedDocumentError),  # no text layer
        (b"  \n\t ", "x.txt", InvalidRequestError),
    ],
)
def test_unreadable_documents_get_a_clear_error(raw: bytes, name: str, error: type[Exception]) -> None:
    with pytest.raises(error) as caught:
        document_text(raw, name=name)
    assert caught.value.http_status in (400, 415)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def handler() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "extraction_app_under_test", REPO_ROOT / "functions/extraction/app.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_output_keys_mirror_the_input_path(handler: ModuleType) -> None:
    assert handler.output_keys("incoming/extract/invoice/2026/a b.pdf") == (
        "results/extract/invoice/2026/a b.pdf.json",
        "errors/extract/invoice/2026/a b.pdf.json",
    )
    assert handler.schema_from_key("incoming/extract/invoice/2026/a.pdf") == "invoice"
    for bad in ("incoming/extract/a.pdf", "incoming/extract//a.pdf", "other/invoice/a.pdf"):
        with pytest.raises(InvalidRequestError):
            handler.schema_from_key(bad)
