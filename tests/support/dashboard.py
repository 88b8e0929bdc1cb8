"""What template.yaml's dashboard, alarms and saved queries name, and what the code's EMF documents emit.

``named_metrics`` reads every widget and alarm into ``NamedMetric``s; ``emitted`` reads EMF documents out
of captured stdout; ``query_fields`` the fields a Logs Insights query reads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cfnlint.decode import cfn_yaml  # type: ignore[import-untyped]

TEMPLATE_PATH = Path(__file__).resolve().parents[2] / "template.yaml"
NAMESPACE = "LLMGateway"
_SUB = re.compile(r"\$\{([A-Za-z0-9:]+)(?:\.([A-Za-z]+))?\}")
_SEARCH = re.compile(r"SEARCH\('\{([^}]*)\}\s+MetricName=\"([A-Za-z0-9]+)\"'")
_INSIGHTS_WORDS = {
    "filter", "stats", "sum", "count", "avg", "max", "min", "by", "as", "sort", "desc", "asc", "limit",
    "display", "fields", "and", "or", "not", "ispresent", "in", "like",
}  # fmt: skip


@dataclass(frozen=True)
class NamedMetric:
    where: str  # widget title or alarm logical id
    namespace: str
    name: str
    dimensions: frozenset[str]
    values: tuple[tuple[str, Any], ...] = ()  # dimension values, when given (not for SEARCH)
    search: bool = False


def load_template() -> dict[str, Any]:
    loaded = cfn_yaml.load(str(TEMPLATE_PATH))
    assert isinstance(loaded, dict)
    return json.loads(json.dumps(loaded))  # plain dicts and strings


def resources_of(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {lid: r for lid, r in template["Resources"].items() if r["Type"] == kind}


def dashboard_body(template: dict[str, Any], logical_id: str = "GatewayDashboard") -> dict[str, Any]:
    """The dashboard's JSON, its ``${...}`` references kept as ``{"Ref": X}`` / ``{"Fn::GetAtt": [X, A]}``
    markers (strings ``@ref:X`` / ``@getatt:X.A``) so that tests can check what they point at."""
    sub = template["Resources"][logical_id]["Properties"]["DashboardBody"]["Fn::Sub"]
    assert isinstance(sub, str), "DashboardBody is a Fn::Sub of the JSON text"

    def marker(m: re.Match[str]) -> str:
        return f"@getatt:{m.group(1)}.{m.group(2)}" if m.group(2) else f"@ref:{m.group(1)}"

    body: dict[str, Any] = json.loads(_SUB.sub(marker, sub))
    return body


def widget_metrics(body: dict[str, Any]) -> Iterator[NamedMetric]:
    for widget in body["widgets"]:
        title = widget["properties"].get("title", "")
        for entry in widget["properties"].get("metrics", []):
            if isinstance(entry[0], dict):  # an expression
                expression = entry[0]["expression"]
                for dims, name in _SEARCH.findall(expression):
                    namespace, *keys = [part.strip() for part in dims.split(",")]
                    yield NamedMetric(title, namespace, name, frozenset(keys), search=True)
                continue
            fields = [e for e in entry if not isinstance(e, dict)]
            namespace, name, *pairs = fields
            values = tuple(zip(pairs[::2], pairs[1::2], strict=True))
            yield NamedMetric(title, namespace, name, frozenset(k for k, _ in values), values)


def alarm_metrics(template: dict[str, Any]) -> Iterator[NamedMetric]:
    for lid, alarm in resources_of(template, "AWS::CloudWatch::Alarm").items():
        p = alarm["Properties"]
        stats = [m["MetricStat"]["Metric"] for m in p.get("Metrics", []) if "MetricStat" in m]
        if "MetricName" in p:
            stats.append({"Namespace": p["Namespace"], "MetricName": p["MetricName"], "Dimensions": p["Dimensions"]})
        for metric in stats:
            values = tuple((d["Name"], d["Value"]) for d in metric.get("Dimensions", []))
            yield NamedMetric(lid, metric["Namespace"], metric["MetricName"], frozenset(k for k, _ in values), values)


def emitted(lines: Iterable[str]) -> list[dict[str, Any]]:
    """Every EMF document among ``lines`` (one JSON object a line, with ``_aws.CloudWatchMetrics``)."""
    documents = []
    for line in lines:
        if '"_aws"' not in line:
            continue
        start = line.find("{")
        try:
            document = json.loads(line[start:])
        except ValueError:
            continue
        if isinstance(document, dict) and "CloudWatchMetrics" in document.get("_aws", {}):
            documents.append(document)
    return documents


def emitted_pairs(documents: Iterable[dict[str, Any]]) -> dict[tuple[str, str, frozenset[str]], list[dict[str, Any]]]:
    """(namespace, metric, dimension keys) -> the documents that emitted it."""
    found: dict[tuple[str, str, frozenset[str]], list[dict[str, Any]]] = {}
    for document in documents:
        for directive in document["_aws"]["CloudWatchMetrics"]:
            for dimension_set in directive["Dimensions"]:
                for metric in directive["Metrics"]:
                    key = (directive["Namespace"], metric["Name"], frozenset(dimension_set))
                    found.setdefault(key, []).append(document)
    return found


def query_fields(query: str) -> tuple[str | None, set[str]]:
    """(the ``record`` kind the query filters on, the log fields it reads): aliases, functions, keywords,
    string literals and Logs Insights' own @fields left out."""
    record = re.search(r'record\s*=\s*"([a-z_]+)"', query)
    text = re.sub(r'"[^"]*"', " ", query)
    aliases = set(re.findall(r"\bas\s+([A-Za-z_][\w]*)", text))
    words = set(re.findall(r"(?<![@\w.])([A-Za-z_][\w.]*)", text))
    return (record.group(1) if record else None), {
        w for w in words if w.lower() not in _INSIGHTS_WORDS and w not in aliases and not w.isdigit()
    }
