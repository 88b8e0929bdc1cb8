"""Scoring the local guardrail checks against the labelled corpus in tests/guardrails_corpus/.

PII is scored per entity: a finding is a true positive only when its kind and its exact span match a
labelled [kind, substring]; anything else it reports is a false positive, anything labelled it misses a
false negative. Injection is scored per text (the check reports a text or it does not).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llm_gateway.guardrails.findings import Check

CORPUS_DIR = Path(__file__).resolve().parent.parent / "guardrails_corpus"
# Written blind after all tuning and never used to change a detector (see its header).
UNSEEN_FILE = "unseen.yaml"


@dataclass(frozen=True)
class Record:
    id: str
    text: str
    pii: tuple[tuple[str, int, int], ...]  # (kind, start, end) located in text
    injection: bool


def load_corpus(*, unseen: bool = False) -> list[Record]:
    """The tuned files, or (``unseen=True``) only the never-tuned-on one."""
    records = []
    for path in sorted(CORPUS_DIR.glob("*.yaml")):
        if (path.name == UNSEEN_FILE) != unseen:
            continue
        raw: list[dict[str, Any]] = yaml.safe_load(path.read_text(encoding="utf-8"))
        for item in raw:
            text = item["text"]
            spans: list[tuple[str, int, int]] = []
            for kind, value in item.get("pii") or []:
                if not isinstance(value, str):  # YAML reads a bare +4915112345678 as a number: quote it
                    raise ValueError(f"{path.name}:{item['id']}: quote the labelled value {kind}")
                start = text.find(value)
                while start >= 0 and any(s == start for _, s, _ in spans):
                    start = text.find(value, start + 1)
                if start < 0:
                    raise ValueError(f"{path.name}:{item['id']}: labelled value not in the text")
                spans.append((kind, start, start + len(value)))
            records.append(Record(item["id"], text, tuple(spans), bool(item.get("injection", False))))
    return records


@dataclass
class Tally:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    misses: list[str] = field(default_factory=list)  # "id: kind" of false negatives, for the report
    false_alarms: list[str] = field(default_factory=list)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


def score_pii(check: Check, records: list[Record]) -> dict[str, Tally]:
    """Tallies per kind, plus "all" over every kind."""
    tallies: dict[str, Tally] = {"all": Tally()}
    for record in records:
        expected = Counter(record.pii)
        found = Counter((f.kind, f.start, f.end) for f in check.scan(record.text))
        for key in expected | found:
            kind = key[0]
            hit = min(expected[key], found[key])
            for tally in (tallies.setdefault(kind, Tally()), tallies["all"]):
                tally.tp += hit
                tally.fn += expected[key] - hit
                tally.fp += found[key] - hit
                tally.misses += [f"{record.id}: {kind}"] * (expected[key] - hit)
                tally.false_alarms += [f"{record.id}: {kind}"] * (found[key] - hit)
    return tallies


def score_injection(check: Check, records: list[Record]) -> Tally:
    tally = Tally()
    for record in records:
        flagged = bool(check.scan(record.text))
        if flagged and record.injection:
            tally.tp += 1
        elif flagged:
            tally.fp += 1
            tally.false_alarms.append(record.id)
        elif record.injection:
            tally.fn += 1
            tally.misses.append(record.id)
    return tally


def table(rows: dict[str, Tally]) -> str:
    lines = [f"{'check / kind':<28} {'TP':>4} {'FP':>4} {'FN':>4} {'precision':>10} {'recall':>8}"]
    for name, tally in rows.items():
        lines.append(
            f"{name:<28} {tally.tp:>4} {tally.fp:>4} {tally.fn:>4} {tally.precision:>10.3f} {tally.recall:>8.3f}"
        )
    return "\n".join(lines)
