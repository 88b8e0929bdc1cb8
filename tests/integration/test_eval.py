"""The extraction eval end to end over the provider simulator: scripted answers give known scores."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from local.eval import GOLDEN_DIR, REPO_ROOT, load_cases, provider_environment, run_eval
from local.simulator import ProviderSimulator

pytestmark = pytest.mark.integration


def test_expected_answers_score_perfectly_and_one_wrong_field_costs_one_fp_and_one_fn(
    simulator: ProviderSimulator,
) -> None:
    cases = load_cases(GOLDEN_DIR)
    answers = [dict(case.expected) for case in cases]
    wrong = next(i for i, case in enumerate(cases) if case.schema == "invoice")
    answers[wrong]["total"] = 1.0
    simulator.script("*", [json.dumps(answer) for answer in answers])
    with provider_environment(simulate=True, simulator=simulator):
        reports = {r.schema: r.as_dict() for r in run_eval(cases, model="gpt-4o-mini")}
    assert set(reports) == {"contact", "entities", "invoice"}
    for name in ("contact", "entities"):
        assert (reports[name]["precision"], reports[name]["recall"], reports[name]["failed"]) == (1.0, 1.0, 0)
        assert reports[name]["fp"] == reports[name]["fn"] == 0 and reports[name]["tp"] > 0
    assert (reports["invoice"]["fp"], reports["invoice"]["fn"]) == (1, 1)
    assert reports["invoice"]["precision"] < 1.0 and reports["invoice"]["cost_usd"] > 0
    assert all(r["asks"] == r["documents"] for r in reports.values())
    assert len(simulator.calls("openai")) == len(cases)  # one ask each, the cache bypassed


def test_a_failed_extraction_counts_as_nothing_found(simulator: ProviderSimulator) -> None:
    cases = load_cases(GOLDEN_DIR, ["contact"])[:1]
    simulator.script("*", ["not json"] * 3)
    with provider_environment(simulate=True, simulator=simulator):
        (report,) = run_eval(cases, model="gpt-4o-mini")
    summary = report.as_dict()
    assert summary["failed"] == 1 and summary["tp"] == 0 and summary["fn"] > 0 and summary["recall"] == 0.0
    assert "extraction_failed" in summary["errors"][cases[0].name]


def test_eval_command_runs_against_its_own_simulator() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "local.eval", "--simulate", "--json", "--schema", "contact"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["providers"] == "simulator"
    (contact,) = report["schemas"]
    assert contact["schema"] == "contact" and contact["documents"] == 3 and contact["failed"] == 0
    assert 0.0 <= contact["precision"] <= 1.0 and 0.0 <= contact["recall"] <= 1.0
