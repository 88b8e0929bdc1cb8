"""The extraction eval's field-level scoring, and the golden set's own consistency."""

from __future__ import annotations

import pytest

from llm_gateway.structured.schemas import named_schema, validation_problems
from local.eval import GOLDEN_DIR, load_cases
from local.eval_scoring import Counts, score, total

INVOICE = {
    "number": "2026-0042",
    "total": 213.84,
    "buyer": {"name": "Globex Corporation", "tax_id": None},
    "items": [
        {"description": "Blue widget", "amount": 59.70},
        {"description": "Installation", "amount": 120.0},
    ],
    "emails": ["a@x.example", "b@x.example"],
}


def test_a_perfect_answer_scores_every_stated_field_as_true_positive() -> None:
    fields = score(INVOICE, INVOICE)
    assert total(fields) == Counts(tp=9)
    assert set(fields) == {"number", "total", "buyer.name", "items[].description", "items[].amount", "emails[]"}
    assert fields["emails[]"] == Counts(tp=2)


def test_a_failed_extraction_finds_nothing() -> None:
    assert total(score(INVOICE, None)) == Counts(fn=9)
    assert total(score(INVOICE, None)).precision == 1.0 and total(score(INVOICE, None)).recall == 0.0


def test_wrong_values_are_false_positive_and_negative_and_extras_are_false_positives() -> None:
    predicted = {**INVOICE, "total": 213.0, "buyer": {"name": "Globex Corporation", "tax_id": "US-1"}}
    fields = score(INVOICE, predicted)
    assert fields["total"] == Counts(fp=1, fn=1)
    assert fields["buyer.tax_id"] == Counts(fp=1)  # stated where nothing was expected
    assert total(fields) == Counts(tp=8, fp=2, fn=1)


def test_missing_values_are_false_negatives_only() -> None:
    predicted = {**INVOICE, "number": None, "emails": ["b@x.example"]}
    fields = score(INVOICE, predicted)
    assert fields["number"] == Counts(fn=1)
    assert fields["emails[]"] == Counts(tp=1, fn=1)


def test_normalisation_of_text_and_numbers() -> None:
    expected = {"name": "Acme Widgets GmbH", "amount": 1260.0, "qty": 3, "code": "007"}
    predicted = {"name": "  acme   widgets gmbh. ", "amount": "1,260.00", "qty": 3.0, "code": "7"}
    fields = score(expected, predicted)
    assert fields["name"] == fields["amount"] == fields["qty"] == Counts(tp=1)
    assert fields["code"] == Counts(fp=1, fn=1)  # two strings are compared as text, not as numbers
    assert score({"v": True}, {"v": 1})["v"] == Counts(fp=1, fn=1)


def test_lists_of_objects_are_paired_by_similarity_not_position() -> None:
    predicted = {
        **INVOICE,
        "items": [
            {"description": "Installation", "amount": 120.0},
            {"description": "Blue widget", "amount": 59.0},
            {"description": "Shipping", "amount": 5.0},
        ],
    }
    fields = score(INVOICE, predicted)
    assert fields["items[].description"] == Counts(tp=2, fp=1)
    assert fields["items[].amount"] == Counts(tp=1, fp=2, fn=1)


def test_type_mismatches_and_ignored_paths() -> None:
    assert total(score({"buyer": {"name": "A"}}, {"buyer": "A"})) == Counts(fp=1, fn=1)
    fields = score({"d": [{"date": "2026-01-01", "label": "x"}]}, {"d": [{"date": "2026-01-01", "label": "y"}]})
    assert fields["d[].label"] == Counts(fp=1, fn=1)
    assert total(
        score({"d": [{"date": "2026-01-01", "label": "x"}]}, {"d": [{"date": "2026-01-01"}]}, ignore=["d[].label"])
    ) == Counts(tp=1)


def test_precision_recall_f1() -> None:
    c = Counts(tp=6, fp=2, fn=4)
    assert (c.precision, c.recall) == (0.75, 0.6)
    assert c.f1 == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert Counts().f1 == 1.0  # nothing expected, nothing stated: perfect


def test_golden_set_is_complete_and_valid_against_its_schemas() -> None:
    cases = load_cases(GOLDEN_DIR)
    by_schema: dict[str, int] = {}
    for case in cases:
        by_schema[case.schema] = by_schema.get(case.schema, 0) + 1
        assert validation_problems(named_schema(case.schema), case.expected) == [], case.name
        assert case.document.read_text(encoding="utf-8").strip()
    assert {name: n >= 3 for name, n in by_schema.items()} == {"contact": True, "entities": True, "invoice": True}
