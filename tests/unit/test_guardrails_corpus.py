"""Precision and recall of the local checks on the labelled corpus (tests/guardrails_corpus/*.yaml).

Run with ``-s`` to see the table; it is also attached to the test report (``record_property``) and
printed in any failure message.

pii.yaml and injection.yaml were written alongside the detectors, so their numbers are in-sample.
holdout.yaml was written afterwards and measured once before any change (first run: PII precision
0.969 / recall 0.912, injection precision 0.875 / recall 0.636); its misses were then fixed, so it is
in-sample now too. The thresholds are regression floors on the whole corpus, not estimates of accuracy
on unseen text; do not lower them to make a change pass: improve the detector, or the label if it is
wrong.
"""

from __future__ import annotations

from collections.abc import Callable

from llm_gateway.guardrails.injection import InjectionCheck
from llm_gateway.guardrails.pii import ALL_KINDS, PiiCheck
from tests.support.guardrails_eval import Tally, load_corpus, score_injection, score_pii, table

PII_PRECISION = 0.95
PII_RECALL = 0.95
PII_KIND_RECALL = 0.8  # no kind may be carried by the others
INJECTION_PRECISION = 0.9
INJECTION_RECALL = 0.85

RECORDS = load_corpus()


def report(rows: dict[str, Tally], record_property: Callable[[str, object], None]) -> str:
    text = table(rows)
    misses = {name: tally.misses for name, tally in rows.items() if tally.misses and name != "all"}
    alarms = {name: tally.false_alarms for name, tally in rows.items() if tally.false_alarms and name != "all"}
    text += f"\nmissed: {misses}\nfalse alarms: {alarms}"
    print("\n" + text)
    record_property("guardrail_metrics", text)
    return text


def test_corpus_is_big_and_balanced_enough() -> None:
    assert len(RECORDS) >= 150
    assert sum(r.injection for r in RECORDS) >= 40 and sum(not r.injection for r in RECORDS) >= 100
    assert sum(len(r.pii) for r in RECORDS) >= 80
    assert {kind for r in RECORDS for kind, _, _ in r.pii} == ALL_KINDS


def test_pii_precision_and_recall(record_property: Callable[[str, object], None]) -> None:
    tallies = score_pii(PiiCheck(), RECORDS)
    rows = {"pii (all kinds)": tallies["all"]} | {f"  {k}": tallies[k] for k in sorted(tallies) if k != "all"}
    text = report(rows, record_property)
    assert tallies["all"].precision >= PII_PRECISION, text
    assert tallies["all"].recall >= PII_RECALL, text
    for kind in ALL_KINDS:
        assert tallies[kind].recall >= PII_KIND_RECALL, f"{kind}\n{text}"


def test_injection_precision_and_recall(record_property: Callable[[str, object], None]) -> None:
    tally = score_injection(InjectionCheck(), RECORDS)
    text = report({"injection (per text)": tally}, record_property)
    assert tally.precision >= INJECTION_PRECISION, text
    assert tally.recall >= INJECTION_RECALL, text
