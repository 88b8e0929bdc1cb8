"""Field-level scoring of extracted JSON against expected JSON (pure functions; used by ``local.eval``).

Every scalar leaf is a field, named by its path with list positions folded (``line_items[].amount``):

* true positive: the prediction has the expected value (after normalisation);
* false positive: the prediction states a value that is wrong or not expected at all;
* false negative: an expected value the prediction does not state correctly.

A wrong value is therefore both a false positive and a false negative. ``null``, ``""`` and missing
mean "not stated". Lists are compared as multisets: scalars by equality, objects by pairing each
predicted item with the most similar expected item. Strings compare case- and space-insensitively,
ignoring surrounding punctuation; numbers (and numeric strings against numbers) within half a cent.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

_SPACES = re.compile(r"\s+")
_EDGE_PUNCTUATION = " \t\n.,;:!?\"'"
_NUMBER_NOISE = re.compile(r"[,\s]|^[$€£¥]|(?<=\d)[$€£¥]$")


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def precision(self) -> float:
        """Of the values stated, the share that are right (1.0 when nothing was stated)."""
        stated = self.tp + self.fp
        return self.tp / stated if stated else 1.0

    @property
    def recall(self) -> float:
        """Of the values expected, the share found (1.0 when nothing was expected)."""
        expected = self.tp + self.fn
        return self.tp / expected if expected else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


FieldCounts = dict[str, Counts]


def score(expected: Any, predicted: Any, *, ignore: Iterable[str] = ()) -> FieldCounts:
    """Counts per field path for one document. ``predicted=None`` (a failed extraction) finds nothing."""
    counts: FieldCounts = {}
    _score(expected, predicted, "", counts)
    skipped = set(ignore)
    return {path: c for path, c in counts.items() if path not in skipped}


def total(counts: Iterable[FieldCounts] | FieldCounts) -> Counts:
    """Micro-average: all fields of all documents pooled."""
    items = [counts] if isinstance(counts, Mapping) else list(counts)
    out = Counts()
    for per_field in items:
        for c in per_field.values():
            out = out + c
    return out


def merge(into: FieldCounts, more: FieldCounts) -> FieldCounts:
    for path, c in more.items():
        into[path] = into.get(path, Counts()) + c
    return into


def _score(expected: Any, predicted: Any, path: str, out: FieldCounts) -> None:
    if isinstance(expected, dict) or isinstance(predicted, dict):
        exp = expected if isinstance(expected, dict) else {}
        pred = predicted if isinstance(predicted, dict) else {}
        # A value where an object belongs (or the other way round) is wrong as a whole.
        _add(
            out,
            path or "(root)",
            Counts(fp=int(not pred and _stated(predicted)), fn=int(not exp and _stated(expected))),
        )
        for key in dict.fromkeys([*exp, *pred]):
            _score(exp.get(key), pred.get(key), f"{path}.{key}" if path else str(key), out)
    elif isinstance(expected, list) or isinstance(predicted, list):
        _score_list(_as_list(expected), _as_list(predicted), f"{path}[]", out)
    else:
        _add(out, path or "(root)", _compare_scalars(expected, predicted))


def _score_list(expected: list[Any], predicted: list[Any], path: str, out: FieldCounts) -> None:
    if all(not isinstance(v, dict | list) for v in [*expected, *predicted]):
        remaining = [e for e in expected if _stated(e)]
        counts = Counts()
        for value in (p for p in predicted if _stated(p)):
            match = next((i for i, e in enumerate(remaining) if _equal(e, value)), None)
            if match is None:
                counts.fp += 1
            else:
                counts.tp += 1
                remaining.pop(match)
        counts.fn += len(remaining)
        _add(out, path, counts)
        return
    for exp_item, pred_item in _pair(expected, predicted):
        _score(exp_item, pred_item, path, out)


def _pair(expected: list[Any], predicted: list[Any]) -> list[tuple[Any, Any]]:
    """Greedy best-first pairing by the number of matching fields; the unpaired pair with None."""
    candidates = []
    for i, exp in enumerate(expected):
        for j, pred in enumerate(predicted):
            similarity = total(score(exp, pred)).tp
            if similarity:
                candidates.append((-similarity, i, j))
    pairs: list[tuple[Any, Any]] = []
    used_e: set[int] = set()
    used_p: set[int] = set()
    for _, i, j in sorted(candidates):
        if i not in used_e and j not in used_p:
            used_e.add(i)
            used_p.add(j)
            pairs.append((expected[i], predicted[j]))
    pairs += [(e, None) for i, e in enumerate(expected) if i not in used_e]
    pairs += [(None, p) for j, p in enumerate(predicted) if j not in used_p]
    return pairs


def _compare_scalars(expected: Any, predicted: Any) -> Counts:
    e, p = _stated(expected), _stated(predicted)
    if e and p and _equal(expected, predicted):
        return Counts(tp=1)
    return Counts(fp=int(p), fn=int(e))


def _stated(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, list | dict):
        return bool(value)
    return True


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    x, y = _number(a), _number(b)
    if x is not None and y is not None and (not isinstance(a, str) or not isinstance(b, str)):
        return math.isclose(x, y, rel_tol=1e-9, abs_tol=0.005)
    return _text(a) == _text(b)


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(_NUMBER_NOISE.sub("", value.strip()))
        except ValueError:
            return None
    return None


def _text(value: Any) -> str:
    return _SPACES.sub(" ", str(value)).strip(_EDGE_PUNCTUATION).casefold()


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    return [] if value is None else [value]


def _add(out: FieldCounts, path: str, counts: Counts) -> None:
    if counts.tp or counts.fp or counts.fn:
        out[path] = out.get(path, Counts()) + counts
