"""``make report`` over the local stack: a short workload through the bridge, then the report: its numbers
match the ledger's records, the PNG is a real PNG of a sane size, and the HTML page embeds that PNG."""

from __future__ import annotations

import base64
import io
import re
import struct
from collections import defaultdict
from datetime import UTC, datetime

import httpx
import pytest

from llm_gateway import aws
from llm_gateway.accounting.money import to_pusd, to_usd
from llm_gateway.accounting.usage_reports import report_range
from local import report
from local.report_data import collect
from tests.support.accounting import api_key_for, ledger_items, unique

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_real_aws")]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def workload(stack, tenant: str, calls: list[tuple[str, str, float | None]]) -> None:
    with api_key_for(stack, tenant) as key, httpx.Client(base_url=stack.api_url, timeout=30) as http:
        for model, prompt, temperature in calls:
            body = {"model": model, "fallback": [], "messages": [{"role": "user", "content": prompt}]}
            if temperature is not None:
                body["temperature"] = temperature
            answer = http.post("/v1/completions", json=body, headers={"x-api-key": key})
            assert answer.status_code == 200, answer.text


@pytest.fixture
def tenants(local_stack, simulator):
    first, second = unique(), unique()
    cached = f"the same question {unique('q')}"
    workload(
        local_stack,
        first,
        [
            ("gpt-4o-mini", "one", None),
            ("gpt-4o-mini", cached, 0.0),
            ("gpt-4o-mini", cached, 0.0),  # a cache hit: counted, with what it saved
            ("claude-3-5-haiku-latest", "two " * 50, None),
        ],
    )
    workload(local_stack, second, [("gemini-2.0-flash", "three", None), ("gpt-4o-mini", "four", None)])
    return [first, second]


def ledger_totals(stack, tenants: list[str]):
    """What the report must show, summed from the ledger's own records (one per attempt or cache hit), in
    pico-dollars as the aggregates are: the report's numbers must be these, exactly."""
    cost_by_model: dict[str, int] = defaultdict(int)
    requests = hits = saved = 0
    cost_by_tenant: dict[str, int] = defaultdict(int)
    for tenant in tenants:
        for record in ledger_items(stack, tenant):
            cost = to_pusd(record.get("cost_usd", {}).get("N", "0"))
            model = f"{record['provider']['S']}/{record['model']['S']}"
            cost_by_model[model] += cost
            cost_by_tenant[tenant] += cost
            outcome = record["outcome"]["S"]
            requests += outcome in ("success", "cache_hit")
            hits += outcome == "cache_hit"
            saved += to_pusd(record.get("saved_usd", {}).get("N", "0"))
    return cost_by_model, requests, hits, saved, cost_by_tenant


def test_report_numbers_match_the_ledger(local_stack, tenants):
    today = datetime.now(UTC).date().isoformat()
    first, last = report_range(None, None)
    data = collect(aws.dynamodb(), local_stack.physical["UsageTable"], first, last, tenants=tenants)
    cost_by_model, requests, hits, saved, cost_by_tenant = ledger_totals(local_stack, tenants)

    assert len(cost_by_model) == 3 and hits == 1 and saved > 0
    assert set(data.cost_by_day_model) == set(cost_by_model)
    for model, cost in cost_by_model.items():
        assert data.cost_by_day_model[model] == {today: to_usd(cost)}, model
    day = data.by_day[today]
    assert (day.requests, day.cache_hits) == (requests, hits) == (6, 1)
    assert day.cache_hit_rate == pytest.approx(1 / 6)
    assert day.saved_pusd == saved
    assert {name: t.cost_pusd for name, t in data.tenants.items()} == dict(cost_by_tenant)
    assert [name for name, _ in data.top_tenants()] == sorted(tenants, key=lambda t: -cost_by_tenant[t])

    everyone = collect(aws.dynamodb(), local_stack.physical["UsageTable"], first, last)  # the Scan path
    for tenant in tenants:
        assert everyone.tenants[tenant] == data.tenants[tenant]
    assert everyone.totals.requests >= data.totals.requests


def test_make_report_writes_a_png_and_an_html_page_with_the_same_charts(local_stack, tenants, tmp_path, capsys):
    args = ["--out-dir", str(tmp_path), *(arg for tenant in tenants for arg in ("--tenant", tenant))]
    assert report.main(args) == 0
    printed = capsys.readouterr().out
    png_path, html_path = tmp_path / "usage-report.png", tmp_path / "usage-report.html"
    assert str(png_path) in printed and str(html_path) in printed and "6 requests" in printed

    png = png_path.read_bytes()
    assert png.startswith(PNG_SIGNATURE)
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk comes first
    assert (width, height) == (1400, 900)
    assert 20_000 < len(png) < 3_000_000
    from PIL import Image

    with Image.open(io.BytesIO(png)) as picture:
        picture.verify()  # decodes: every chunk's CRC checks

    page = html_path.read_text()
    [embedded] = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert base64.b64decode(embedded) == png  # the same charts, byte for byte
    for tenant in tenants:
        assert tenant in page
    assert "Cost per day by model" in page and "Top tenants" in page


def test_report_without_a_target_says_so(monkeypatch, tmp_path, capsys):
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LOCAL_STATE_FILE", str(tmp_path / "absent.json"))
    assert report.main(["--out-dir", str(tmp_path)]) == 2
    assert "no local stack is running" in capsys.readouterr().err
    assert not list(tmp_path.glob("usage-report.*"))
