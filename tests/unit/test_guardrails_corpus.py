"""Precision and recall of the local checks on the labelled corpus (tests/guardrails_corpus/*.yaml).

Run with ``-s`` to see the table; it is also attached to the test report (``record_property``) and
printed in any failure message.

pii.yaml and injection.yaml were written alongside the detectors; the holdout*.yaml files were
written blind, measured once, then used to fix misses (first runs in tests/guardrails_corpus/README.md).
So the thresholds on those files are regression floors on in-sample text, not accuracy estimates; do not
lower them to make a change pass: improve the detector, or the label if it is wrong. unseen.yaml has
never been tuned on: test_unseen_texts reports it apart, with floors from its only measurement.
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

# Floors on unseen.yaml: its first (and only) measurement, rounded down. They catch regressions on text
# nobody tuned for; raising them means writing a new unseen file, not fixing detectors against this one.
UNSEEN_PII_PRECISION = 0.95  # measured 0.950 (19 TP, 1 FP)
UNSEEN_PII_RECALL = 0.95  # measured 1.000
UNSEEN_INJECTION_PRECISION = 0.9  # measured 1.000 (0 FP in 29 clean texts)
UNSEEN_INJECTION_RECALL = 0.3  # measured 0.300 (3 of 10 attacks): the heuristics' honest reach

RECORDS = load_corpus()
UNSEEN = load_corpus(unseen=True)


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


def test_unseen_texts(record_property: Callable[[str, object], None]) -> None:
    pii = score_pii(PiiCheck(), UNSEEN)["all"]
    injection = score_injection(InjectionCheck(), UNSEEN)
    text = report({"unseen: pii (all kinds)": pii, "unseen: injection (per text)": injection}, record_property)
    assert len(UNSEEN) >= 35, text
    assert pii.precision >= UNSEEN_PII_PRECISION and pii.recall >= UNSEEN_PII_RECALL, text
    assert injection.precision >= UNSEEN_INJECTION_PRECISION and injection.recall >= UNSEEN_INJECTION_RECALL, text
