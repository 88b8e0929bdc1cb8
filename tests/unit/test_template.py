"""Security and structure properties of template.yaml (offline: parses the file, runs cfn-lint)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import cfn_yaml  # type: ignore[import-untyped]

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = REPO_ROOT / "template.yaml"

FUNCTIONS = {
    "CompletionFunction": "functions/completion/",
    "CompletionStreamFunction": "functions/completion/",  # the same code, run by the streaming runtime loop
    "ExtractionFunction": "functions/extraction/",
    "SummarizationFunction": "functions/summarization/",
}
API_ROUTES = {
    ("post", "/v1/chat/completions"): "CompletionStreamFunction",
    ("post", "/v1/completions"): "CompletionStreamFunction",
    ("post", "/v1/messages"): "CompletionStreamFunction",
    ("post", "/v1/messages/count_tokens"): "CompletionFunction",
    ("get", "/v1/usage"): "CompletionFunction",
    ("get", "/v1/models"): "CompletionFunction",
    ("get", "/v1/models/{model}"): "CompletionFunction",
    ("get", "/v1/models/{model}/{name}"): "CompletionFunction",
    ("post", "/v1/embeddings"): "CompletionFunction",
    ("post", "/v1/extractions"): "ExtractionFunction",
    ("post", "/v1/summaries"): "SummarizationFunction",
    ("post", "/v1/jobs"): "JobsFunction",
    ("get", "/v1/jobs/{job_id}"): "JobsFunction",
    ("get", "/v1/openapi.json"): "JobsFunction",
}
TRACING_MODE = {"Fn::If": ["TracingOn", "Active", "PassThrough"]}
# Errors API Gateway answers itself: response type -> (status, or None to keep API Gateway's, code).
GATEWAY_RESPONSES = {
    "MISSING_AUTHENTICATION_TOKEN": ("404", "route_not_found"),  # an unknown path or method
    "RESOURCE_NOT_FOUND": ("404", "route_not_found"),
    "THROTTLED": ("429", "rate_limited"),
    "QUOTA_EXCEEDED": ("429", "quota_exceeded"),
    "REQUEST_TOO_LARGE": ("413", "payload_too_large"),
    "INTEGRATION_TIMEOUT": ("504", "gateway_timeout"),
    "DEFAULT_4XX": (None, "request_refused"),
    "DEFAULT_5XX": (None, "internal_error"),
}
# Key management: IAM-authorized (SigV4), never a gateway key.
ADMIN_ROUTES = {
    ("post", "/v1/admin/keys"): "KeysAdminFunction",
    ("get", "/v1/admin/keys"): "KeysAdminFunction",
    ("get", "/v1/admin/keys/{key_id}"): "KeysAdminFunction",
    ("delete", "/v1/admin/keys/{key_id}"): "KeysAdminFunction",
    ("post", "/v1/admin/keys/{key_id}/rotate"): "KeysAdminFunction",
}
# Functions behind gateway keys: they verify keys and count rate limits (KeysVerifyPolicy).
KEY_VERIFIERS = {
    "CompletionFunction",
    "CompletionStreamFunction",
    "ExtractionFunction",
    "SummarizationFunction",
    "JobsFunction",
}
# Functions that queue async jobs (Prefer: respond-async, deferral): JobsSubmitPolicy on JobsTable and jobs/*.
# CompletionFunction no longer serves the completion routes: models, usage and direct invocations queue none.
JOB_SUBMITTERS = {"CompletionStreamFunction", "ExtractionFunction", "SummarizationFunction"}
# Routes API Gateway streams (SAM: ResponseTransferMode RESPONSE_STREAM) and the function's exec wrapper.
STREAMING_ROUTES = {("post", "/v1/chat/completions"), ("post", "/v1/completions"), ("post", "/v1/messages")}
STREAM_WRAPPER = "/opt/python/llm_gateway/stream_runtime/wrapper"
S3_PREFIXES = {"ExtractionFunction": "incoming/extract/", "SummarizationFunction": "incoming/summarize/"}

# Allow statements whose actions AWS only authorizes on Resource "*" (X-Ray write access comes from
# the AWS managed policy SAM attaches for `Tracing: Active`, except on RetryWorkerRole, an explicit
# role); add an action here only with a reason.
WILDCARD_RESOURCE_ACTIONS = frozenset(
    {
        "xray:PutTraceSegments",  # X-Ray has no resource-level permissions
        "xray:PutTelemetryRecords",
        "xray:GetSamplingRules",
        "xray:GetSamplingTargets",
        "states:SendTaskSuccess",  # task-token callbacks name no resource (the retry worker)
        "states:SendTaskFailure",
    }
)

# Pseudo-parameter form of the documents bucket name (see DocumentsBucket in template.yaml).
BUCKET_NAME_SUB = "${AWS::StackName}-documents-${AWS::AccountId}-${AWS::Region}"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    loaded = cfn_yaml.load(str(TEMPLATE_PATH))
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def resources(template: dict[str, Any]) -> dict[str, Any]:
    res = template["Resources"]
    assert isinstance(res, dict)
    return res


def props(resources: dict[str, Any], logical_id: str) -> dict[str, Any]:
    p = resources[logical_id].get("Properties", {})
    assert isinstance(p, dict)
    return p


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def references(node: Any) -> set[str]:
    """Logical IDs referenced through Ref, Fn::GetAtt or Fn::Sub anywhere under ``node``."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref" and isinstance(value, str):
                found.add(value)
            elif key == "Fn::GetAtt":
                target = value[0] if isinstance(value, list) else str(value).split(".")[0]
                found.add(str(target))
            elif key == "Fn::Sub":
                text = value[0] if isinstance(value, list) else value
                if isinstance(text, str):
                    found |= {m.split(".")[0] for m in re.findall(r"\$\{([^!}][^}]*)\}", text)}
                if isinstance(value, list) and len(value) > 1:
                    found |= references(value[1])
            else:
                found |= references(value)
    elif isinstance(node, list):
        for item in node:
            found |= references(item)
    return {f for f in found if not f.startswith("AWS::")}


def policy_documents(resources: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every identity-based policy document in the template, with its owner's logical id."""
    for logical_id, resource in resources.items():
        rtype = resource.get("Type")
        p = resource.get("Properties", {})
        if rtype in ("AWS::IAM::ManagedPolicy", "AWS::IAM::Policy"):
            yield logical_id, p["PolicyDocument"]
        elif rtype == "AWS::IAM::Role":
            for policy in p.get("Policies", []):
                yield logical_id, policy["PolicyDocument"]
        elif rtype == "AWS::Serverless::Function":
            for entry in as_list(p.get("Policies", [])):
                if isinstance(entry, dict) and "Statement" in entry:
                    yield logical_id, entry


def statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    """A document's statements, a conditional one (``Fn::If``) counted with each branch that is one."""
    found: list[dict[str, Any]] = []
    for statement in as_list(document["Statement"]):
        if set(statement) == {"Fn::If"}:
            found += [branch for branch in statement["Fn::If"][1:] if isinstance(branch, dict) and "Effect" in branch]
        else:
            found.append(statement)
    return found


def allow_statements(resources: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for owner, document in policy_documents(resources):
        for statement in statements(document):
            if statement.get("Effect") == "Allow":
                yield owner, statement


def test_template_parses_with_sam_transform(template: dict[str, Any]) -> None:
    assert template["Transform"] == "AWS::Serverless-2016-10-31"


# ---------------------------------------------------------------------------- functions and API


def test_functions_declared_with_code_and_handler(resources: dict[str, Any]) -> None:
    for logical_id, code_uri in FUNCTIONS.items():
        assert resources[logical_id]["Type"] == "AWS::Serverless::Function"
        p = props(resources, logical_id)
        assert p["CodeUri"] == code_uri
        assert p["Handler"] == "app.lambda_handler"


def test_every_function_uses_python312_x86_and_the_layer(template: dict[str, Any], resources: dict[str, Any]) -> None:
    globals_fn = template.get("Globals", {}).get("Function", {})
    functions = [lid for lid, r in resources.items() if r["Type"] == "AWS::Serverless::Function"]
    assert set(FUNCTIONS) <= set(functions)
    for logical_id in functions:
        p = props(resources, logical_id)
        assert p.get("Runtime", globals_fn.get("Runtime")) == "python3.12", logical_id
        assert p.get("Architectures", globals_fn.get("Architectures")) == ["x86_64"], logical_id
        # SAM appends function-level Layers to the global ones.
        layers = [*globals_fn.get("Layers", []), *p.get("Layers", [])]
        assert {"Ref": "GatewayLayer"} in layers, logical_id
        # X-Ray follows the Tracing parameter (Active by default); PassThrough samples nothing of its own.
        assert p.get("Tracing", globals_fn.get("Tracing")) == TRACING_MODE, logical_id
    assert template["Parameters"]["Tracing"]["Default"] == "Active"
    assert template["Conditions"]["TracingOn"] == {"Fn::Equals": [{"Ref": "Tracing"}, "Active"]}
    # The harness and the Lambda timeout / queue visibility relation rely on these globals.
    assert globals_fn["Timeout"] == 60
    assert globals_fn["MemorySize"] == 1024


def test_layer_is_prebuilt_for_python312(resources: dict[str, Any]) -> None:
    layer = resources["GatewayLayer"]
    assert layer["Type"] == "AWS::Serverless::LayerVersion"
    assert layer["Properties"]["ContentUri"] == ".build/layer"
    assert layer["Properties"]["CompatibleRuntimes"] == ["python3.12"]
    assert layer["Properties"]["CompatibleArchitectures"] == ["x86_64"]
    assert "BuildMethod" not in layer.get("Metadata", {})


def test_global_environment(template: dict[str, Any]) -> None:
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env["POWERTOOLS_SERVICE_NAME"] == "llm-gateway"
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == "LLMGateway"
    assert env["CACHE_TABLE"] == {"Ref": "CacheTable"}
    assert env["USAGE_TABLE"] == {"Ref": "UsageTable"}
    assert env["QUOTA_TABLE"] == {"Ref": "QuotaTable"}
    assert env["RETRY_QUEUE_URL"] == {"Ref": "RetryQueue"}
    assert env["PROVIDER_KEYS_SECRET"] == {"Ref": "ProviderKeysSecret"}
    assert env["DOCUMENTS_BUCKET"] == {"Fn::Sub": BUCKET_NAME_SUB}
    assert env["GATEWAY_SHARED_DIR"] == "/opt/python/llm_gateway/_shared"


def test_gateway_keys_are_checked_by_the_functions_not_by_api_gateway(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    api = props(resources, "GatewayApi")
    assert resources["GatewayApi"]["Type"] == "AWS::Serverless::Api"
    # API Gateway's own key check reads x-api-key only and would refuse `Authorization: Bearer`.
    assert api["Auth"] == {"ApiKeyRequired": False}
    assert not any(r["Type"].startswith("AWS::ApiGateway::UsagePlan") for r in resources.values())
    assert not any(
        r["Type"] == "AWS::ApiGateway::GatewayResponse" and r["Properties"]["ResponseType"] == "INVALID_API_KEY"
        for r in resources.values()
    )
    assert api["TracingEnabled"] == {"Fn::If": ["TracingOn", True, False]}  # the Tracing parameter
    # Stage throttling still bounds unauthenticated floods.
    stage = [s for s in api["MethodSettings"] if s["ResourcePath"] == "/*" and s["HttpMethod"] == "*"]
    assert stage and all(s["ThrottlingRateLimit"] > 0 and s["ThrottlingBurstLimit"] > 0 for s in stage)
    # Every function behind the API's gateway routes has the keys table (the edge fails closed without).
    assert template["Globals"]["Function"]["Environment"]["Variables"]["KEYS_TABLE"] == {"Ref": "KeysTable"}


def test_api_routes_map_to_functions_with_no_api_gateway_auth(resources: dict[str, Any]) -> None:
    routes: dict[tuple[str, str], str] = {}
    for logical_id, resource in resources.items():
        if resource["Type"] != "AWS::Serverless::Function" or logical_id == "KeysAdminFunction":
            continue
        for event in resource["Properties"].get("Events", {}).values():
            if event["Type"] != "Api":
                continue
            ep = event["Properties"]
            # Without RestApiId SAM would create an implicit API without the stage's throttling.
            assert ep.get("RestApiId") == {"Ref": "GatewayApi"}, logical_id
            assert "Auth" not in ep, logical_id  # the function's edge checks the gateway key
            routes[(ep["Method"].lower(), ep["Path"])] = logical_id
    assert routes == API_ROUTES


def test_every_streaming_route_is_served_by_a_function_that_runs_the_streaming_runtime(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    streaming: dict[tuple[str, str], str] = {}
    for logical_id, resource in resources.items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        for event in resource["Properties"].get("Events", {}).values():
            ep = event["Properties"] if event["Type"] == "Api" else {}
            if "ResponseTransferMode" in ep:
                # SAM's spelling: it passes any other value through unchecked and deploys the route buffered.
                assert ep["ResponseTransferMode"] == "RESPONSE_STREAM", logical_id
                assert ep["TimeoutInMillis"] == 900_000  # a streamed answer may last API Gateway's 15 minutes
                streaming[(ep["Method"].lower(), ep["Path"])] = logical_id
    assert set(streaming) == STREAMING_ROUTES
    assert "AWS_LAMBDA_EXEC_WRAPPER" not in template["Globals"]["Function"]["Environment"]["Variables"]
    for logical_id, resource in resources.items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        p = props(resources, logical_id)
        wrapper = ((p.get("Environment") or {}).get("Variables") or {}).get("AWS_LAMBDA_EXEC_WRAPPER")
        if logical_id in streaming.values():
            assert wrapper == STREAM_WRAPPER, logical_id
            assert p.get("Runtime", template["Globals"]["Function"]["Runtime"]) == "python3.12"
            assert p["Timeout"] == 900
        else:
            assert wrapper is None, logical_id  # buffered functions keep the managed runtime's loop
    # The wrapper is in the layer's source where the build copies it to /opt/python/...
    source = REPO_ROOT / "layers" / "gateway" / STREAM_WRAPPER.removeprefix("/opt/python/")
    assert source.is_file() and os.access(source, os.X_OK)


def test_sam_deploys_the_streaming_routes_as_streaming_integrations(template: dict[str, Any]) -> None:
    """What SAM's transform makes of the Api events: the streaming routes get API Gateway's
    ``responseTransferMode: STREAM`` and Lambda's response-streaming invocation URI, the others stay buffered."""
    from samtranslator.translator.transform import transform  # type: ignore[import-untyped]

    document = json.loads(json.dumps(template))
    for resource in document["Resources"].values():
        p = resource.get("Properties") or {}
        for key in ("CodeUri", "ContentUri"):
            if key in p:
                p[key] = "s3://bucket/key"  # sam package's job; the transform wants S3 locations

    class NoManagedPolicies:
        def load(self) -> dict[str, str]:
            return {}

    translated = transform(document, {"BedrockModelArns": ""}, NoManagedPolicies())
    paths = translated["Resources"]["GatewayApi"]["Properties"]["Body"]["paths"]
    for (method, path), function in API_ROUTES.items():
        integration = paths[path][method]["x-amazon-apigateway-integration"]
        uri = json.dumps(integration["uri"])
        if (method, path) in STREAMING_ROUTES:
            assert integration["responseTransferMode"] == "STREAM", path
            assert f"/2021-11-15/functions/${{{function}.Arn}}/response-streaming-invocations" in uri, uri
        else:
            assert "responseTransferMode" not in integration, path
            assert uri.endswith('/invocations"}'), uri


def test_key_management_routes_are_iam_authorized_never_by_a_gateway_key(resources: dict[str, Any]) -> None:
    routes: dict[tuple[str, str], str] = {}
    for event in props(resources, "KeysAdminFunction")["Events"].values():
        assert event["Type"] == "Api"
        ep = event["Properties"]
        assert ep.get("RestApiId") == {"Ref": "GatewayApi"}
        # No ApiKeyRequired: SAM refuses a method-level one when the API sets none (its false is none).
        assert ep["Auth"] == {"Authorizer": "AWS_IAM"}
        routes[(ep["Method"].lower(), ep["Path"])] = "KeysAdminFunction"
    assert routes == ADMIN_ROUTES
    admin = props(resources, "KeysAdminFunction")
    assert admin["CodeUri"] == "functions/keys_admin/"
    assert admin["Handler"] == "app.lambda_handler"


def test_keys_table_stores_hashes_by_partition_key_with_an_id_index(resources: dict[str, Any]) -> None:
    table = props(resources, "KeysTable")
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert table["SSESpecification"]["SSEEnabled"] is True
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    # Rate counters expire by TTL; key records use key_expires_at, which TTL never touches.
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    [index] = table["GlobalSecondaryIndexes"]
    assert index["IndexName"] == "KeyIdIndex"
    assert index["KeySchema"] == [{"AttributeName": "key_id", "KeyType": "HASH"}]
    assert resources["KeysTable"]["DeletionPolicy"] == "Retain"


def test_keys_permissions_are_least_privilege(template: dict[str, Any], resources: dict[str, Any]) -> None:
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env["KEYS_TABLE"] == {"Ref": "KeysTable"}
    assert 0 < float(env["GATEWAY_KEY_CACHE_TTL"]) <= 60
    verify = props(resources, "KeysVerifyPolicy")["PolicyDocument"]["Statement"]
    assert [(sorted(as_list(s["Action"])), s["Resource"]) for s in verify] == [
        (["dynamodb:GetItem", "dynamodb:UpdateItem"], {"Fn::GetAtt": ["KeysTable", "Arn"]})
    ]
    for logical_id, resource in resources.items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        attached = {"Ref": "KeysVerifyPolicy"} in as_list(props(resources, logical_id).get("Policies", []))
        assert attached == (logical_id in KEY_VERIFIERS), logical_id
    # The admin function: the keys table and its index, and key budgets in the usage table; nothing else.
    grants = _function_grants(resources, "KeysAdminFunction")
    by_action: dict[str, set[str]] = {}
    for statement in grants:
        for action in as_list(statement["Action"]):
            by_action.setdefault(action, set()).update(references(statement["Resource"]))
    assert by_action == {
        "dynamodb:GetItem": {"KeysTable", "UsageTable"},
        "dynamodb:PutItem": {"KeysTable", "UsageTable"},
        "dynamodb:UpdateItem": {"KeysTable"},
        "dynamodb:Query": {"KeysTable"},
        "dynamodb:Scan": {"KeysTable"},
    }
    index_arns = [r for s in grants for r in as_list(s["Resource"]) if isinstance(r, dict) and "Fn::Sub" in r]
    assert index_arns == [{"Fn::Sub": "${KeysTable.Arn}/index/KeyIdIndex"}]


def test_api_gateway_errors_use_the_gateway_error_shape(resources: dict[str, Any]) -> None:
    found: dict[str, tuple[str | None, str]] = {}
    for logical_id, resource in resources.items():
        if resource["Type"] != "AWS::ApiGateway::GatewayResponse":
            continue
        p = resource["Properties"]
        assert p["RestApiId"] == {"Ref": "GatewayApi"}, logical_id
        template = p["ResponseTemplates"]["application/json"]
        # $context variables are substituted by API Gateway (messageString comes quoted).
        text = template.replace("$context.error.messageString", '"Forbidden"')
        text = re.sub(r"\$context\.[A-Za-z.]+", "x", text)
        error = json.loads(text)["error"]
        assert isinstance(error["code"], str) and isinstance(error["message"], str) and error["message"], logical_id
        assert isinstance(error["retryable"], bool), logical_id
        found[p["ResponseType"]] = (p.get("StatusCode"), error["code"])
    assert found == GATEWAY_RESPONSES
    throttled = next(r for r in resources.values() if r["Properties"].get("ResponseType") == "THROTTLED")
    assert throttled["Properties"]["ResponseParameters"]["gatewayresponse.header.Retry-After"] == "'1'"


def test_s3_events_use_prefixes_outside_results(resources: dict[str, Any]) -> None:
    for logical_id, prefix in S3_PREFIXES.items():
        events = [e for e in props(resources, logical_id)["Events"].values() if e["Type"] == "S3"]
        assert len(events) == 1
        ep = events[0]["Properties"]
        assert ep["Bucket"] == {"Ref": "DocumentsBucket"}
        rules = ep["Filter"]["S3Key"]["Rules"]
        assert {"Name": "prefix", "Value": prefix} in rules
        # Outputs go to results/: a trigger there would make the functions call themselves.
        assert not prefix.startswith("results/")


# ---------------------------------------------------------------------------- storage


def test_documents_bucket_is_private_encrypted_and_versioned(resources: dict[str, Any]) -> None:
    bucket = props(resources, "DocumentsBucket")
    block = bucket["PublicAccessBlockConfiguration"]
    for flag in ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"):
        assert block[flag] is True, flag
    rules = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rules
    assert all(r["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms") for r in rules)
    assert bucket["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    assert bucket["VersioningConfiguration"]["Status"] == "Enabled"
    assert bucket["BucketName"] == {"Fn::Sub": BUCKET_NAME_SUB}


def test_documents_bucket_policy_denies_insecure_transport(resources: dict[str, Any]) -> None:
    policy = props(resources, "DocumentsBucketPolicy")
    assert policy["Bucket"] == {"Ref": "DocumentsBucket"}
    denies = [
        s
        for s in as_list(policy["PolicyDocument"]["Statement"])
        if s["Effect"] == "Deny"
        and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") in ("false", False)
    ]
    assert len(denies) == 1
    deny = denies[0]
    assert deny["Principal"] in ("*", {"AWS": "*"})
    assert as_list(deny["Action"]) in (["s3:*"], ["*"])
    assert {"Fn::GetAtt": ["DocumentsBucket", "Arn"]} in as_list(deny["Resource"])
    assert {"Fn::Sub": "${DocumentsBucket.Arn}/*"} in as_list(deny["Resource"])


def test_tables_are_encrypted_on_demand_with_ttl(resources: dict[str, Any]) -> None:
    for logical_id in ("CacheTable", "UsageTable", "QuotaTable"):
        table = props(resources, logical_id)
        assert table["SSESpecification"]["SSEEnabled"] is True, logical_id
        assert table["BillingMode"] == "PAY_PER_REQUEST", logical_id
        assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    cache = props(resources, "CacheTable")
    assert cache["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    usage = props(resources, "UsageTable")
    assert usage["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert usage["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True


def test_retry_queue_redrives_to_the_dead_letter_queue(template: dict[str, Any], resources: dict[str, Any]) -> None:
    queue = props(resources, "RetryQueue")
    dlq = props(resources, "RetryDeadLetterQueue")
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["RetryDeadLetterQueue", "Arn"]}
    assert 1 <= queue["RedrivePolicy"]["maxReceiveCount"] <= 10
    assert queue["VisibilityTimeout"] >= 6 * template["Globals"]["Function"]["Timeout"]
    assert queue["SqsManagedSseEnabled"] is True
    assert dlq["SqsManagedSseEnabled"] is True
    assert dlq["MessageRetentionPeriod"] == 14 * 24 * 3600
    assert dlq["MessageRetentionPeriod"] > queue["MessageRetentionPeriod"]


def test_provider_keys_secret_is_a_placeholder(resources: dict[str, Any]) -> None:
    secret = props(resources, "ProviderKeysSecret")
    assert resources["ProviderKeysSecret"]["Type"] == "AWS::SecretsManager::Secret"
    assert secret["SecretString"] == '{"openai":"","anthropic":"","gemini":""}'
    assert secret["Description"]


# ---------------------------------------------------------------------------- IAM


def test_no_wildcard_actions_in_allow_statements(resources: dict[str, Any]) -> None:
    statements = list(allow_statements(resources))
    assert statements, "expected IAM statements in the template"
    for owner, statement in statements:
        assert "NotAction" not in statement, owner
        for action in as_list(statement["Action"]):
            assert isinstance(action, str), (owner, action)
            assert action != "*" and not action.endswith(":*"), (owner, statement.get("Sid"), action)


def test_no_wildcard_resources_in_allow_statements(resources: dict[str, Any]) -> None:
    for owner, statement in allow_statements(resources):
        assert "NotResource" not in statement, owner
        for resource in as_list(statement["Resource"]):
            if resource == "*":
                actions = set(as_list(statement["Action"]))
                assert actions <= WILDCARD_RESOURCE_ACTIONS, (owner, statement.get("Sid"), actions)
            else:
                # A trailing "/*" under a named path is fine (objects under a prefix); any other
                # wildcard (a whole service, every bucket, every table) is not.
                text = resource.get("Fn::Sub", resource) if isinstance(resource, dict) else resource
                if isinstance(text, list):
                    text = text[0]
                if isinstance(text, str):
                    assert "*" not in text.removesuffix("/*"), (owner, resource)
                    assert not text.endswith(":::/*"), (owner, resource)


def test_function_policies_are_scoped_to_this_stack(resources: dict[str, Any]) -> None:
    managed = {lid for lid, r in resources.items() if r["Type"] == "AWS::IAM::ManagedPolicy"}
    for logical_id in FUNCTIONS:
        for entry in as_list(props(resources, logical_id).get("Policies", [])):
            # Only this template's managed policies or inline statements: no AWS managed policies
            # (e.g. AmazonDynamoDBFullAccess) and no unscoped SAM policy templates.
            if isinstance(entry, dict) and set(entry) == {"Ref"}:
                assert entry["Ref"] in managed, (logical_id, entry)
            else:
                assert isinstance(entry, dict) and "Statement" in entry, (logical_id, entry)


def _function_grants(resources: dict[str, Any], logical_id: str) -> list[dict[str, Any]]:
    grants: list[dict[str, Any]] = []
    for entry in as_list(props(resources, logical_id).get("Policies", [])):
        document = props(resources, entry["Ref"])["PolicyDocument"] if "Ref" in entry else entry
        grants += [s for s in statements(document) if s["Effect"] == "Allow"]
    return grants


def test_function_permissions_are_least_privilege(resources: dict[str, Any]) -> None:
    for logical_id in FUNCTIONS:
        grants = _function_grants(resources, logical_id)
        targets = {
            action: references(statement["Resource"]) for statement in grants for action in as_list(statement["Action"])
        }
        tables = {"CacheTable", "UsageTable", "KeysTable", "QuotaTable"} | (
            {"JobsTable"} if logical_id in JOB_SUBMITTERS else set()
        )
        assert references([s["Resource"] for s in grants if "dynamodb" in str(s["Action"])]) == tables
        assert targets["sqs:SendMessage"] == {"RetryQueue"}
        # The provider-keys secret, and deployments' own secrets under the llm-gateway/ prefix only.
        secret_reads = [s["Resource"] for s in grants if "secretsmanager:GetSecretValue" in as_list(s["Action"])]
        assert secret_reads == [
            {"Ref": "ProviderKeysSecret"},
            {"Fn::Sub": "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:llm-gateway/*"},
        ], logical_id
        assert not any(a.startswith("dynamodb:") and "Scan" in a for a in targets), logical_id
        quota = [s for s in grants if references(s["Resource"]) == {"QuotaTable"}]
        assert [sorted(as_list(s["Action"])) for s in quota] == [["dynamodb:BatchGetItem", "dynamodb:UpdateItem"]]
        s3 = [s for s in grants if any(a.startswith("s3:") for a in as_list(s["Action"]))]
        # Cache entries too large for a DynamoDB item: read and write under cache/ only.
        cache_entries = [{"Fn::Sub": "arn:${AWS::Partition}:s3:::" + BUCKET_NAME_SUB + "/cache/*"}]
        [cache_s3] = [s for s in s3 if as_list(s["Resource"]) == cache_entries]
        assert sorted(as_list(cache_s3["Action"])) == ["s3:GetObject", "s3:PutObject"]
        s3.remove(cache_s3)
        job_bodies = [{"Fn::Sub": "arn:${AWS::Partition}:s3:::" + BUCKET_NAME_SUB + "/jobs/*"}]
        if logical_id in JOB_SUBMITTERS:  # job inputs too large for a job item: write-only, under jobs/
            [jobs_s3] = [s for s in s3 if as_list(s["Resource"]) == job_bodies]
            assert as_list(jobs_s3["Action"]) == ["s3:PutObject"]
            s3.remove(jobs_s3)
        if logical_id in ("CompletionFunction", "CompletionStreamFunction"):
            assert not s3
            continue
        by_action = {a: as_list(s["Resource"]) for s in s3 for a in as_list(s["Action"])}
        assert set(by_action) == {"s3:GetObject", "s3:PutObject"}, logical_id
        bucket_arn = "arn:${AWS::Partition}:s3:::" + BUCKET_NAME_SUB
        assert by_action["s3:GetObject"] == [{"Fn::Sub": bucket_arn + "/incoming/*"}]
        assert by_action["s3:PutObject"] == [
            {"Fn::Sub": bucket_arn + "/results/*"},
            {"Fn::Sub": bucket_arn + "/errors/*"},  # error records next to documents that failed
        ]


def test_no_circular_dependency_through_the_documents_bucket(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    """The bucket's notifications depend on the functions (SAM adds them and the invoke permissions),
    so nothing a function depends on may reference DocumentsBucket: they use its fixed name."""
    assert "DocumentsBucket" not in references(template["Globals"])
    for logical_id in FUNCTIONS:
        p = props(resources, logical_id)
        # The S3 event's own `Bucket: !Ref DocumentsBucket` is what SAM turns into the notification.
        depends = {k: v for k, v in p.items() if k != "Events"}
        depends["ApiEvents"] = [e for e in p.get("Events", {}).values() if e["Type"] != "S3"]
        depends["DependsOn"] = resources[logical_id].get("DependsOn", [])
        refs = references(depends) | set(as_list(depends["DependsOn"]))
        assert "DocumentsBucket" not in refs, logical_id
        for dep in refs & set(resources):
            assert "DocumentsBucket" not in references(resources[dep]), (logical_id, dep)


def test_outputs(template: dict[str, Any]) -> None:
    outputs = template["Outputs"]
    assert outputs["ApiUrl"]["Value"] == {
        "Fn::Sub": "https://${GatewayApi}.execute-api.${AWS::Region}.amazonaws.com/${Stage}"
    }
    assert "ApiKeyId" not in outputs  # no API Gateway key any more: `make keys ACTION=create` makes one
    for name in ("CacheTableName", "UsageTableName", "RetryQueueUrl", "DocumentsBucketName", "KeysTableName"):
        assert name in outputs


# ---------------------------------------------------------------------------- cfn-lint


def test_cfn_lint_reports_no_errors() -> None:
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    cmd = [str(cfn_lint)] if cfn_lint.exists() else [sys.executable, "-m", "cfnlint"]
    proc = subprocess.run(
        [*cmd, str(TEMPLATE_PATH)], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120, check=False
    )
    # cfn-lint's exit code is a bit mask: 2 errors, 4 warnings, 8 informational; 1 is a usage/fatal
    # error. Warnings are tolerated (justify them in template.yaml); errors are not.
    assert proc.returncode & 0b11 == 0, proc.stdout + proc.stderr


def test_bedrock_invoke_is_scoped_to_the_model_arns_parameter(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    """Bedrock needs no key: the role signs. It may invoke only the models the deployer lists, and the
    functions turn Bedrock on only when some are listed."""
    parameter = template["Parameters"]["BedrockModelArns"]
    assert parameter["Type"] == "CommaDelimitedList" and parameter["Default"] == ""
    pattern = re.compile(parameter["AllowedPattern"])
    for good in (
        "",
        "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-5-haiku-20241022-v1:0",
        "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.amazon.nova-lite-v1:0",
    ):
        assert pattern.fullmatch(good), good
    for bad in ("*", "arn:aws:bedrock:*:*:foundation-model/*", "arn:aws:bedrock:us-east-1::foundation-model/*"):
        assert not pattern.fullmatch(bad), bad
    assert template["Conditions"]["HasBedrockModels"] == {
        "Fn::Not": [{"Fn::Equals": [{"Fn::Join": ["", {"Ref": "BedrockModelArns"}]}, ""]}]
    }
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env["GATEWAY_BEDROCK_ENABLED"] == {"Fn::If": ["HasBedrockModels", "true", "false"]}
    assert env["BEDROCK_REGION"] == {"Ref": "BedrockRegion"}

    [(condition, granted, otherwise)] = [
        statement["Fn::If"]
        for statement in as_list(props(resources, "GatewayCorePolicy")["PolicyDocument"]["Statement"])
        if set(statement) == {"Fn::If"} and statement["Fn::If"][0] == "HasBedrockModels"
    ]
    assert condition == "HasBedrockModels" and otherwise == {"Ref": "AWS::NoValue"}
    assert granted["Effect"] == "Allow"
    assert sorted(granted["Action"]) == ["bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"]
    assert granted["Resource"] == {"Ref": "BedrockModelArns"}
    # No other statement anywhere grants a Bedrock action (ApplyGuardrail: its own test below).
    others = [
        (owner, s.get("Sid"))
        for owner, s in allow_statements(resources)
        if s is not granted
        and any(str(a).startswith("bedrock:") for a in as_list(s["Action"]))
        and as_list(s["Action"]) != ["bedrock:ApplyGuardrail"]
    ]
    assert others == []
    for logical_id in FUNCTIONS:  # every function that calls providers carries the grant
        assert {"Ref": "GatewayCorePolicy"} in as_list(props(resources, logical_id)["Policies"]), logical_id


def test_apply_guardrail_is_granted_on_the_configured_guardrail_only(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    """The "bedrock" guardrail check calls ApplyGuardrail: granted only when a guardrail id is set, and
    only on that guardrail's ARN; no other statement grants it."""
    parameter = template["Parameters"]["BedrockGuardrailId"]
    assert parameter["Default"] == "" and not re.fullmatch(parameter["AllowedPattern"], "*")
    assert template["Conditions"]["HasBedrockGuardrail"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "BedrockGuardrailId"}, ""]}]
    }
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env["GATEWAY_BEDROCK_GUARDRAIL_ID"] == {"Ref": "BedrockGuardrailId"}
    assert env["GATEWAY_GUARDRAILS"] == {"Ref": "Guardrails"}
    [(_, granted, otherwise)] = [
        statement["Fn::If"]
        for statement in as_list(props(resources, "GatewayCorePolicy")["PolicyDocument"]["Statement"])
        if set(statement) == {"Fn::If"} and statement["Fn::If"][0] == "HasBedrockGuardrail"
    ]
    assert otherwise == {"Ref": "AWS::NoValue"}
    assert as_list(granted["Action"]) == ["bedrock:ApplyGuardrail"]
    arn, names = granted["Resource"]["Fn::Sub"]
    assert arn.endswith(":guardrail/${BedrockGuardrailId}") and "*" not in arn
    assert names == {
        "GuardrailRegion": {"Fn::If": ["HasBedrockRegion", {"Ref": "BedrockRegion"}, {"Ref": "AWS::Region"}]}
    }
    appliers = [
        s.get("Sid") for _, s in allow_statements(resources) if "bedrock:ApplyGuardrail" in as_list(s["Action"])
    ]
    assert appliers == ["BedrockApplyGuardrail"]
