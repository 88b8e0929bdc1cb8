"""GET /v1/usage?format=csv over the local stack's bridge: the caller's own report, the same numbers as the JSON."""

from __future__ import annotations

import csv
import io

import httpx
import pytest

from llm_gateway.http.usage_report import KEY_COLUMNS, NUMBER_COLUMNS
from tests.support.accounting import api_key_for, unique

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_real_aws")]


def test_csv_report_has_the_json_numbers_one_row_per_group(local_stack, simulator):
    tenant = unique()
    with api_key_for(local_stack, tenant) as key, httpx.Client(base_url=local_stack.api_url, timeout=30) as http:
        headers = {"x-api-key": key}
        for model, prompt in (("gpt-4o-mini", "one"), ("gpt-4o-mini", "two"), ("claude-3-5-haiku-latest", "three")):
            body = {"model": model, "fallback": [], "messages": [{"role": "user", "content": prompt}]}
            assert http.post("/v1/completions", json=body, headers=headers).status_code == 200
        as_json = http.get("/v1/usage", headers=headers)
        as_csv = http.get("/v1/usage", params={"format": "csv"}, headers=headers)
        explicit_json = http.get("/v1/usage", params={"format": "json"}, headers=headers)

    assert as_csv.status_code == 200, as_csv.text
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert as_csv.headers["x-request-id"]
    assert explicit_json.json() == as_json.json()
    report = as_json.json()
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert list(rows[0]) == [*KEY_COLUMNS, *NUMBER_COLUMNS]
    groups = [row["group"] for row in rows]
    days, models, keys = len(report["days"]), len(report["models"]), len(report["keys"])
    deployments = len(report["deployments"])
    assert groups == ["total"] + ["day"] * days + ["model"] * models + ["key"] * keys + ["deployment"] * deployments
    assert (models, keys, deployments, report["totals"]["requests"]) == (2, 1, 2, 3)

    total = rows[0]
    assert total["date"] == f"{report['from']}/{report['to']}"
    for name in NUMBER_COLUMNS:
        assert float(total[name]) == pytest.approx(report["totals"][name], rel=1e-12), name
    json_rows = [*report["days"], *report["models"], *report["keys"], *report["deployments"]]
    for row, expected in zip(rows[1:], json_rows, strict=True):
        assert (row["date"], row["provider"], row["model"], row["key_id"], row["deployment"]) == (
            expected["date"],
            expected.get("provider", ""),
            expected.get("model", ""),
            expected.get("key_id", ""),
            expected.get("deployment", ""),
        )
        for name in NUMBER_COLUMNS:
            if name != "cache_hit_rate":
                assert float(row[name]) == pytest.approx(expected.get(name, 0), rel=1e-12), name
    assert sum(float(row["cost_usd"]) for row in rows if row["group"] == "model") == pytest.approx(
        report["totals"]["cost_usd"]
    )


def test_an_unknown_format_is_a_400_naming_the_parameter(local_stack):
    tenant = unique()
    with api_key_for(local_stack, tenant) as key, httpx.Client(base_url=local_stack.api_url, timeout=30) as http:
        answer = http.get("/v1/usage", params={"format": "xml"}, headers={"x-api-key": key})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "invalid_request" and error["details"]["param"] == "format"
    assert "csv" in error["message"]
