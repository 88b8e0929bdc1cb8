"""``GET /v1/usage`` answers: the usage summary as JSON (default), or as CSV with ``format=csv``.

The CSV has one header row and one row per group of the JSON, in its order: ``total``, then each ``day``,
each ``model``, each ``key`` and each ``deployment`` (all per day), with the same counters and amounts. The
budget alerts (the JSON's ``alerts``) are not usage groups and stay in the JSON only.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from aws_lambda_powertools.event_handler import Response

from llm_gateway.errors import InvalidRequestError

if TYPE_CHECKING:
    from llm_gateway.http.edge import HttpEdge

Format = Literal["json", "csv"]
FORMATS: tuple[Format, ...] = ("json", "csv")
CSV_CONTENT_TYPE = "text/csv; charset=utf-8"
KEY_COLUMNS = ("group", "date", "provider", "model", "key_id", "deployment")
NUMBER_COLUMNS = (
    "requests",
    "cache_hits",
    "cache_hit_rate",
    "attempts",
    "errors",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cost_usd",
    "saved_usd",
)
# (group, the JSON's list)
GROUPS = (("day", "days"), ("model", "models"), ("key", "keys"), ("deployment", "deployments"))


def answer_format(value: str | None) -> Format:
    """The ``format`` query parameter: ``json`` when absent; anything else but ``csv`` is a 400 naming it."""
    if value is None or value == "json":
        return "json"
    if value == "csv":
        return "csv"
    raise InvalidRequestError(
        f"format must be one of {', '.join(FORMATS)}, got {value[:40]!r}", details={"param": "format"}
    )


def respond(edge: HttpEdge, answer: Format, summary: Mapping[str, Any]) -> Response[str]:
    if answer == "json":
        return edge.json(200, summary)
    filename = f"usage-{summary['from']}-{summary['to']}.csv"
    return Response(
        status_code=200,
        content_type=CSV_CONTENT_TYPE,
        body=usage_csv(summary),
        headers={"content-disposition": f'attachment; filename="{filename}"', "x-request-id": edge.request_id()},
    )


def usage_csv(summary: Mapping[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180
    writer.writerow((*KEY_COLUMNS, *NUMBER_COLUMNS))
    for group, row in _rows(summary):
        keys = [group, *(_text(row.get(name)) for name in KEY_COLUMNS[1:])]
        writer.writerow([*keys, *(_number(name, row) for name in NUMBER_COLUMNS)])
    return out.getvalue()


def _rows(summary: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    yield "total", {**summary["totals"], "date": f"{summary['from']}/{summary['to']}"}
    for group, name in GROUPS:
        for row in summary.get(name, []):
            yield group, row


def _number(name: str, row: Mapping[str, Any]) -> str:
    if name == "cache_hit_rate" and name not in row:  # as the JSON computes its total's
        value: Any = round(row["cache_hits"] / row["requests"], 4) if row.get("requests") else 0.0
    else:
        value = row.get(name, 0)
    if isinstance(value, float):
        return format(Decimal(repr(value)), "f")  # never exponent notation (1.7e-05)
    return str(value)


def _text(value: Any) -> str:
    """A text cell; one a spreadsheet would run as a formula is quoted as text (OWASP's CSV injection)."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
