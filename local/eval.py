"""Extraction quality on a golden set: ``python -m local.eval`` (or ``make eval``).

The golden set is a folder per schema (``tests/golden/extraction/<schema>/``) holding documents
(``.txt``, ``.md``, ``.html``, ``.pdf``) each with ``<name>.expected.json``, and optionally
``scoring.json`` (``{"ignore": ["dates[].label"]}``: free-text fields left out of the score).

Every document goes through the real ``extraction`` operation (native structured modes, validation,
reasks) with the cache bypassed, and the answers are scored field by field (see ``local.eval_scoring``):
precision and recall per schema, plus cost, asks and failures.

Providers: with a real key in the environment (``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``,
``GEMINI_API_KEY``) the real providers are used; otherwise (or with ``--simulate``) the local provider
simulator answers, whose deterministic placeholder values score near zero: that run checks the
plumbing, not a model. No AWS is used: the cache, ledger and budgets are off for the run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from local.eval_scoring import Counts, FieldCounts, merge, score, total

if TYPE_CHECKING:
    from local.simulator import ProviderSimulator

REPO_ROOT = Path(__file__).resolve().parent.parent
GOLDEN_DIR = REPO_ROOT / "tests" / "golden" / "extraction"
DOCUMENT_SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf")
REAL_KEY_VARS = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "gemini": "GEMINI_API_KEY"}
SIMULATED = {  # env var -> key in ProviderSimulator.base_urls()
    "OPENAI_BASE_URL": "openai",
    "ANTHROPIC_BASE_URL": "anthropic",
    "GEMINI_BASE_URL": "gemini",
    "OPENAI_COMPATIBLE_BASE_URL": "compat",
    "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": "bedrock",  # used only when a region turns Bedrock on
}
AWS_RESOURCE_VARS = ("CACHE_TABLE", "USAGE_TABLE", "RETRY_QUEUE_URL", "DOCUMENTS_BUCKET")
SIM_KEY = "sim-key"
DOCUMENT_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Case:
    schema: str
    name: str
    document: Path
    expected: dict[str, Any]
    ignore: tuple[str, ...] = ()


@dataclass
class CaseResult:
    case: Case
    fields: FieldCounts
    ok: bool
    error: str | None = None
    provider: str | None = None
    model: str | None = None
    cost_usd: float = 0.0
    asks: int = 0


@dataclass
class SchemaReport:
    schema: str
    cases: list[CaseResult] = field(default_factory=list)

    @property
    def counts(self) -> Counts:
        return total(c.fields for c in self.cases)

    @property
    def fields(self) -> FieldCounts:
        out: FieldCounts = {}
        for c in self.cases:
            merge(out, c.fields)
        return out

    def as_dict(self) -> dict[str, Any]:
        counts = self.counts
        return {
            "schema": self.schema,
            "documents": len(self.cases),
            "failed": sum(not c.ok for c in self.cases),
            "tp": counts.tp,
            "fp": counts.fp,
            "fn": counts.fn,
            "precision": round(counts.precision, 4),
            "recall": round(counts.recall, 4),
            "f1": round(counts.f1, 4),
            "cost_usd": round(sum(c.cost_usd for c in self.cases), 8),
            "asks": sum(c.asks for c in self.cases),
            "errors": {c.case.name: c.error for c in self.cases if c.error},
        }


# --------------------------------------------------------------------------- golden set


def load_cases(root: Path = GOLDEN_DIR, schemas: list[str] | None = None) -> list[Case]:
    """Every document with an ``.expected.json`` under ``root/<schema>/``, in a stable order."""
    cases: list[Case] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if schemas and folder.name not in schemas:
            continue
        scoring_file = folder / "scoring.json"
        ignore = tuple(json.loads(scoring_file.read_text())["ignore"]) if scoring_file.is_file() else ()
        for document in sorted(p for p in folder.iterdir() if p.suffix.lower() in DOCUMENT_SUFFIXES):
            expected_file = document.with_name(document.stem + ".expected.json")
            if not expected_file.is_file():
                raise FileNotFoundError(f"{document} has no {expected_file.name}")
            expected = json.loads(expected_file.read_text(encoding="utf-8"))
            cases.append(Case(folder.name, document.stem, document, expected, ignore))
    return cases


# --------------------------------------------------------------------------- running


def run_case(case: Case, *, model: str | None = None, tier: str | None = None) -> CaseResult:
    """One extraction through the real operation (this process's gateway and environment)."""
    from llm_gateway import wiring
    from llm_gateway.documents.loading import document_text
    from llm_gateway.errors import GatewayError
    from llm_gateway.interfaces import RequestContext
    from llm_gateway.operations.extraction import run_extraction
    from llm_gateway.routing.deadline import Deadline
    from llm_gateway.runtime import run_sync

    payload: dict[str, Any] = {"schema": case.schema, "cache": {"no_cache": True, "no_store": True}}
    if model:
        payload["model"] = model
    if tier:
        payload["tier"] = tier
    ctx = RequestContext(
        tenant="eval", request_id=uuid.uuid4().hex, deadline=Deadline(DOCUMENT_TIMEOUT_S), operation="extraction"
    )
    try:
        raw = case.document.read_bytes()
        payload["text"] = document_text(raw, name=case.document.name).text
        result = run_sync(run_extraction(payload, ctx, wiring.services()))
    except GatewayError as err:
        spent = round(sum(a.cost_usd for a in err.attempts), 10)
        fields = score(case.expected, None, ignore=case.ignore)
        return CaseResult(case, fields, ok=False, error=f"{err.code}: {err.message}", cost_usd=spent)
    return CaseResult(
        case,
        score(case.expected, result["data"], ignore=case.ignore),
        ok=True,
        provider=result["provider"],
        model=result["model"],
        cost_usd=result["cost_usd"],
        asks=result["asks"],
    )


def run_eval(cases: list[Case], *, model: str | None = None, tier: str | None = None) -> list[SchemaReport]:
    reports: dict[str, SchemaReport] = {}
    for case in cases:
        reports.setdefault(case.schema, SchemaReport(case.schema)).cases.append(run_case(case, model=model, tier=tier))
    return list(reports.values())


@contextmanager
def provider_environment(simulate: bool, simulator: ProviderSimulator | None = None) -> Iterator[str]:
    """Point the gateway at a simulator (ours, or the one given) or at the real providers, with no AWS
    resources, for the duration; yields a label. The environment is restored afterwards."""
    from llm_gateway import wiring

    saved = dict(os.environ)
    owned = None
    try:
        for name in AWS_RESOURCE_VARS:
            os.environ.pop(name, None)
        if simulate:
            if simulator is None:
                from local.simulator import ProviderSimulator

                simulator = owned = ProviderSimulator(host="127.0.0.1", port=0).start()
            urls = simulator.base_urls()
            for var, route in SIMULATED.items():
                os.environ[var] = urls[route]
            for var in REAL_KEY_VARS.values():
                os.environ[var] = SIM_KEY
            os.environ.pop("PROVIDER_KEYS_SECRET", None)
        wiring.reset()
        yield "simulator" if simulate else "real providers: " + ", ".join(real_providers())
    finally:
        if owned is not None:
            owned.stop()
        os.environ.clear()
        os.environ.update(saved)
        wiring.reset()


def real_providers() -> list[str]:
    return [p for p, var in REAL_KEY_VARS.items() if os.environ.get(var, SIM_KEY) not in ("", SIM_KEY)]


# --------------------------------------------------------------------------- output


def format_table(reports: list[SchemaReport], *, per_field: bool = False) -> str:
    header = f"{'schema':<10} {'docs':>4} {'failed':>6} {'tp':>4} {'fp':>4} {'fn':>4} {'precision':>9} {'recall':>6}"
    header += f" {'f1':>5} {'asks':>4} {'cost_usd':>10}"
    lines = [header, "-" * len(header)]
    for report in reports:
        d = report.as_dict()
        lines.append(
            f"{d['schema']:<10} {d['documents']:>4} {d['failed']:>6} {d['tp']:>4} {d['fp']:>4} {d['fn']:>4}"
            f" {d['precision']:>9.3f} {d['recall']:>6.3f} {d['f1']:>5.3f} {d['asks']:>4} {d['cost_usd']:>10.6f}"
        )
    everything = total(r.fields for r in reports)
    lines.append("-" * len(header))
    lines.append(
        f"{'all':<10} {sum(len(r.cases) for r in reports):>4} {sum(r.as_dict()['failed'] for r in reports):>6}"
        f" {everything.tp:>4} {everything.fp:>4} {everything.fn:>4} {everything.precision:>9.3f}"
        f" {everything.recall:>6.3f} {everything.f1:>5.3f}"
    )
    if per_field:
        for report in reports:
            lines += ["", f"{report.schema}: per field"]
            for path, c in sorted(report.fields.items()):
                lines.append(
                    f"  {path:<36} tp {c.tp:>3}  fp {c.fp:>3}  fn {c.fn:>3}  p {c.precision:.2f}  r {c.recall:.2f}"
                )
    for report in reports:
        for case in report.cases:
            if case.error:
                lines.append(f"failed: {report.schema}/{case.case.name}: {case.error}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("--golden", type=Path, default=GOLDEN_DIR, help="golden set folder")
    parser.add_argument("--schema", action="append", help="only this schema (repeatable)")
    route = parser.add_mutually_exclusive_group()
    route.add_argument("--model", help="catalog model id (default: the gateway's default tier)")
    route.add_argument("--tier", choices=["fast", "balanced", "best"])
    parser.add_argument("--simulate", action="store_true", help="use the provider simulator even if keys are set")
    parser.add_argument("--fields", action="store_true", help="also print per-field counts")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)

    cases = load_cases(args.golden, args.schema)
    if not cases:
        print(f"no golden documents under {args.golden}", file=sys.stderr)
        return 2
    simulate = args.simulate or not real_providers()
    started = time.perf_counter()
    with provider_environment(simulate) as label:
        reports = run_eval(cases, model=args.model, tier=args.tier)
    elapsed = time.perf_counter() - started
    if args.json:
        print(json.dumps({"providers": label, "seconds": round(elapsed, 2), "schemas": [r.as_dict() for r in reports]}))
    else:
        print(f"extraction eval: {len(cases)} documents, {label}, {elapsed:.1f}s\n")
        print(format_table(reports, per_field=args.fields))
    return 0


if __name__ == "__main__":
    sys.exit(main())
