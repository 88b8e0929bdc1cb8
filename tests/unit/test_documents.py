"""Documents to text, and the S3 key conventions of the extraction handler and summary uploads (no AWS needed)."""

from __future__ import annotations

import pytest

from llm_gateway.config import Settings
from llm_gateway.documents.loading import document_text
from llm_gateway.errors import InvalidRequestError, UnsupportedDocumentError
from llm_gateway.operations import extraction_uploads
from llm_gateway.operations.summary_uploads import is_upload_key, output_keys
from tests.pdf_bytes import pdf_with_lines


def test_plain_text_and_markdown_pass_through() -> None:
    doc = document_text("# Title\n\nJane Doe — CTO\n".encode(), name="card.md")
    assert doc.kind == "text" and doc.text == "# Title\n\nJane Doe — CTO\n"
    assert document_text(b"\xef\xbb\xbfhello", name="x.txt").text == "hello"  # BOM dropped


def test_html_is_reduced_to_text() -> None:
    html = b"<html><head><script>var x=1</script></head><body><p>Jane <b>Doe</b></p></body></html>"
    doc = document_text(html, name="page.html")
    assert doc.kind == "html" and "Jane Doe" in doc.text and "var x" not in doc.text


@pytest.mark.parametrize(
    "raw",
    [
        b"<!DOCTYPE html><html><body><p>Jane <b>Doe</b></p><script>var x=1</script></body></html>",
        b"\xef\xbb\xbf\n  <html lang='en'><p>Jane Doe</p></html>",
        b"<?xml version='1.0'?>\n<!-- exported -->\n<html xmlns='http://www.w3.org/1999/xhtml'><p>Jane Doe</p></html>",
    ],
)
def test_html_is_recognised_by_its_first_bytes_whatever_the_name_or_type(raw: bytes) -> None:
    doc = document_text(raw, name="upload.txt", content_type="application/octet-stream")
    assert doc.kind == "html" and "Jane Doe" in doc.text and "<" not in doc.text and "var x" not in doc.text


def test_markdown_with_inline_tags_is_not_taken_for_html() -> None:
    markdown = b"# Notes<br>\n\nSee <html> for details, and <p>this</p>.\n"
    assert document_text(markdown, name="notes.md").kind == "text"


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


def test_output_keys_mirror_the_input_path() -> None:
    assert extraction_uploads.output_keys("incoming/extract/invoice/2026/a b.pdf") == (
        "results/extract/invoice/2026/a b.pdf.json",
        "errors/extract/invoice/2026/a b.pdf.json",
    )
    assert extraction_uploads.schema_from_key("incoming/extract/invoice/2026/a.pdf") == "invoice"
    for bad in ("incoming/extract/a.pdf", "incoming/extract//a.pdf", "other/invoice/a.pdf"):
        with pytest.raises(InvalidRequestError):
            extraction_uploads.schema_from_key(bad)


def test_summary_upload_keys_mirror_the_input_path() -> None:
    assert output_keys("incoming/summarize/reports/2026/q3 board.md") == (
        "results/summarize/reports/2026/q3 board.md.json",
        "results/summarize/reports/2026/q3 board.md.txt",
        "errors/summarize/reports/2026/q3 board.md.json",
    )
    assert is_upload_key("incoming/summarize/a.md")
    assert not is_upload_key("incoming/summarize/folder/") and not is_upload_key("incoming/extract/a.md")


def test_the_stuff_ceiling_is_configurable() -> None:
    assert Settings.from_env({}).summary_stuff_max_tokens == 32_000
    assert Settings.from_env({"GATEWAY_SUMMARY_STUFF_MAX_TOKENS": "8000"}).summary_stuff_max_tokens == 8_000
