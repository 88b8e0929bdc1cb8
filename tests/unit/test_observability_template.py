"""The dashboard, alarms, log group and saved queries in template.yaml, offline (what they point at).
Whether the code emits what they name is tests/integration/test_dashboard_metrics.py."""

from __future__ import annotations

import re
from typing import Any

import pytest

from llm_gateway.catalog import default_catalog
from tests.support.dashboard import (
    NAMESPACE,
    TEMPLATE_PATH,
    alarm_metrics,
    dashboard_body,
    load_template,
    resources_of,
    widget_metrics,
)

MARKER = re.compile(r"^@(ref|getatt):([A-Za-z0-9:]+)(?:\.(\w+))?$")


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def target(value: Any) -> tuple[str, str | None]:
    """(logical id or pseudo parameter, attribute) of a dimension value: a dashboard marker or an intrinsic."""
    if isinstance(value, str) and (m := MARKER.match(value)):
        return m.group(2), m.group(3)
    if isinstance(value, dict) and "Ref" in value:
        return value["Ref"], None
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        logical_id, attribute = value["Fn::GetAtt"]
        return logical_id, attribute
    raise AssertionError(f"an AWS metric's dimension must point at a resource: {value!r}")


def test_aws_metrics_point_at_this_stacks_queues_and_api(template: dict[str, Any]) -> None:
    named = [*widget_metrics(dashboard_body(template)), *alarm_metrics(template)]
    aws = [m for m in named if m.namespace.startswith("AWS/")]
    assert {m.namespace for m in aws} == {"AWS/SQS", "AWS/ApiGateway"}
    queues = set(resources_of(template, "AWS::SQS::Queue"))
    for metric in aws:
        values = dict(metric.values)
        if metric.namespace == "AWS/SQS":
            assert target(values["QueueName"]) in {(q, "QueueName") for q in queues}, metric.where
        else:  # SAM names the REST API after the stack (its OpenAPI info.title)
            assert target(values["ApiName"]) == ("AWS::StackName", None), metric.where
            assert target(values["Stage"]) == ("Stage", None), metric.where
            assert template["Resources"]["GatewayApi"]["Properties"]["StageName"] == {"Ref": "Stage"}
    sqs = {(m.name, target(dict(m.values)["QueueName"])[0]) for m in aws if m.namespace == "AWS/SQS"}
    assert {
        ("ApproximateNumberOfMessagesVisible", "RetryQueue"),
        ("ApproximateAgeOfOldestMessage", "RetryQueue"),
        ("ApproximateNumberOfMessagesVisible", "RetryDeadLetterQueue"),
    } <= sqs


def test_every_alarm_notifies_the_alerts_topic_and_ignores_missing_data(template: dict[str, Any]) -> None:
    alarms = resources_of(template, "AWS::CloudWatch::Alarm")
    assert len(alarms) >= 8
    for lid, alarm in alarms.items():
        p = alarm["Properties"]
        assert p["AlarmActions"] == [{"Ref": "AlertsTopic"}], lid
        assert p["OKActions"] == [{"Ref": "AlertsTopic"}], lid
        assert p["TreatMissingData"] == "notBreaching", lid
        periods = [m["MetricStat"]["Period"] for m in p.get("Metrics", []) if "MetricStat" in m] or [p["Period"]]
        for period in periods:  # CloudWatch: 10, 20, 30 or a multiple of 60; <= 1 day in all under an hour
            assert period % 60 == 0, lid
            limit = 86_400 if period < 3600 else 604_800
            assert period * p["EvaluationPeriods"] <= limit, lid
        assert len(p.get("Metrics", [])) <= 10, lid  # metric math alarms: 10 metrics at most


def test_one_error_rate_alarm_per_catalog_provider(template: dict[str, Any]) -> None:
    providers = {spec.provider for spec in default_catalog().models}
    alarmed = {
        dict(m.values)["Provider"]
        for m in alarm_metrics(template)
        if m.namespace == NAMESPACE and m.name == "ProviderErrors"
    }
    assert alarmed == providers


def test_the_spend_alarm_exists_only_with_its_parameter(template: dict[str, Any]) -> None:
    alarm = template["Resources"]["DailySpendAlarm"]
    assert alarm["Condition"] == "HasDailySpendAlarm"
    assert template["Conditions"]["HasDailySpendAlarm"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "DailySpendAlarmUsd"}, ""]}]
    }
    assert template["Parameters"]["DailySpendAlarmUsd"]["Default"] == ""
    p = alarm["Properties"]
    assert (p["Namespace"], p["MetricName"], p["Statistic"], p["Period"]) == (NAMESPACE, "CostUSD", "Sum", 86_400)
    assert p["Threshold"] == {"Ref": "DailySpendAlarmUsd"}


def test_functions_log_to_one_group_with_a_retention_that_the_saved_queries_read(template: dict[str, Any]) -> None:
    function_globals = template["Globals"]["Function"]
    assert function_globals["LoggingConfig"] == {"LogGroup": {"Ref": "GatewayLogGroup"}}
    functions = resources_of(template, "AWS::Serverless::Function")
    assert all("LoggingConfig" not in f["Properties"] for f in functions.values())
    group = template["Resources"]["GatewayLogGroup"]
    assert group["Type"] == "AWS::Logs::LogGroup"
    assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    queries = resources_of(template, "AWS::Logs::QueryDefinition")
    assert set(queries) == {"MostExpensiveTenantsQuery", "SlowestProviderCallsQuery", "ErrorsByCodeQuery"}
    for query in queries.values():
        assert query["Properties"]["LogGroupNames"] == [{"Ref": "GatewayLogGroup"}]


def test_tracing_is_one_parameter_for_functions_api_and_the_tracer(template: dict[str, Any]) -> None:
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env["POWERTOOLS_TRACE_DISABLED"] == {"Fn::If": ["TracingOn", "false", "true"]}
    assert template["Parameters"]["Tracing"]["AllowedValues"] == ["Active", "Disabled"]


def test_the_layout_comment_lists_the_observability_resources(template: dict[str, Any]) -> None:
    header = TEMPLATE_PATH.read_text().split("Parameters:", 1)[0]
    alarms = set(resources_of(template, "AWS::CloudWatch::Alarm"))
    named = {"GatewayLogGroup", "GatewayDashboard", *resources_of(template, "AWS::Logs::QueryDefinition")}
    for logical_id in named | (alarms - {lid for lid in alarms if lid.endswith("ErrorRateAlarm")}):
        assert logical_id in header, logical_id
    assert "<Provider>ErrorRateAlarm" in header
