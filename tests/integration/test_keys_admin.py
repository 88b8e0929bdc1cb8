"""The key management function through its Lambda handler (API Gateway proxy events, as API Gateway
sends them after IAM authorization), over the local stack's moto server: create, list, show, revoke,
rotate; the secret is in the create/rotate answer only, never in the table or the logs."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import pytest

from llm_gateway.config import Settings
from llm_gateway.errors import InvalidApiKeyError
from llm_gateway.keys import KeyService
from tests.support.accounting import unique

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_real_aws")]

ADMIN_ARN = "arn:aws:iam::123456789012:user/ops"


def event(method: str, path: str, body: Any = None, query: dict[str, str] | None = None) -> dict[str, Any]:
    resource = path
    params = None
    parts = path.split("/")
    if len(parts) >= 5:  # /v1/admin/keys/<id>[/rotate]
        params = {"key_id": parts[4]}
        resource = "/".join([*parts[:4], "{key_id}", *parts[5:]])
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": {"content-type": "application/json"},
        "multiValueHeaders": {"content-type": ["application/json"]},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": {k: [v] for k, v in (query or {}).items()} or None,
        "pathParameters": params,
        "requestContext": {
            "resourcePath": resource,
            "httpMethod": method,
            "path": f"/prod{path}",
            "stage": "prod",
            "requestId": str(uuid.uuid4()),
            "identity": {"userArn": ADMIN_ARN, "caller": "AIDAEXAMPLE", "sourceIp": "127.0.0.1"},
        },
        "body": json.dumps(body) if body is not None else None,
        "isBase64Encoded": False,
    }


def call(local_stack: Any, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, dict[str, Any]]:
    response = local_stack.invoke("KeysAdminFunction", event(method, path, body, **kw))
    assert response["multiValueHeaders"]["cache-control"] == ["no-store"]
    return response["statusCode"], json.loads(response["body"])


def keys_service(local_stack: Any) -> KeyService:
    return KeyService(Settings(keys_table=local_stack.physical["KeysTable"]))


def test_create_list_show_revoke_rotate_through_the_handler(local_stack, caplog, capsys) -> None:
    caplog.set_level(logging.DEBUG)
    tenant = unique()
    status, created = call(
        local_stack,
        "POST",
        "/v1/admin/keys",
        {
            "tenant": tenant,
            "name": "ci",
            "allowed_models": ["tier:fast", "gpt-4o-mini*"],
            "requests_per_minute": 60,
            "tokens_per_minute": 100_000,
            "budget": {"limit_usd": 5, "window": "month"},
            "metadata": {"team": "search"},
        },
    )
    assert status == 201
    secret, key_id = created["key"], created["id"]
    assert created["status"] == "active" and created["tenant"] == tenant
    assert created["budget"] == {"limit_usd": 5.0, "window": "month"}
    verified = keys_service(local_stack).authenticate({"Authorization": f"Bearer {secret}"})
    assert verified.tenant == tenant and verified.policy.allowed == ("tier:fast", "gpt-4o-mini*")
    assert verified.context_tags() == {"key_id": key_id, "key_budget": f"key:{key_id}"}

    status, shown = call(local_stack, "GET", f"/v1/admin/keys/{key_id}")
    assert status == 200 and shown["id"] == key_id and "key" not in shown
    status, listed = call(local_stack, "GET", "/v1/admin/keys", query={"tenant": tenant})
    assert status == 200 and [k["id"] for k in listed["data"]] == [key_id]

    status, rotated = call(local_stack, "POST", f"/v1/admin/keys/{key_id}/rotate", {})
    assert status == 200 and rotated["id"] == key_id and rotated["generation"] == 2
    new_secret = rotated["key"]
    with pytest.raises(InvalidApiKeyError):  # no grace period: the old secret stops at once
        keys_service(local_stack).authenticate({"x-api-key": secret})
    assert keys_service(local_stack).authenticate({"x-api-key": new_secret}).key_id == key_id

    status, revoked = call(local_stack, "DELETE", f"/v1/admin/keys/{key_id}")
    assert status == 200 and revoked["status"] == "revoked"
    with pytest.raises(InvalidApiKeyError):
        keys_service(local_stack).authenticate({"x-api-key": new_secret})

    table = local_stack.client("dynamodb").scan(TableName=local_stack.physical["KeysTable"])["Items"]
    logged = caplog.text + "".join(capsys.readouterr())
    for text in (json.dumps(table), logged):
        assert secret not in text and new_secret not in text
    assert "key created" in logged and key_id in logged  # logged, by id


def test_bad_input_is_a_4xx_with_a_code(local_stack) -> None:
    status, body = call(local_stack, "POST", "/v1/admin/keys", {"name": "no tenant"})
    assert status == 400 and body["error"]["code"] == "invalid_request"
    assert body["error"]["details"]["param"] == "tenant"
    status, body = call(local_stack, "POST", "/v1/admin/keys", {"tenant": "t", "allowed_models": ["gpt 4"]})
    assert status == 400 and body["error"]["details"]["param"].startswith("allowed_models")
    status, body = call(local_stack, "POST", "/v1/admin/keys", {"tenant": "key:x"})
    assert status == 400
    status, body = call(local_stack, "POST", "/v1/admin/keys", {"tenant": "t", "expires_at": "2001-01-01T00:00:00Z"})
    assert status == 400 and body["error"]["details"]["param"] == "expires_at"
    status, body = call(local_stack, "GET", "/v1/admin/keys/key_doesnotexist")
    assert status == 404 and body["error"]["code"] == "key_not_found"
    status, body = call(local_stack, "DELETE", "/v1/admin/keys/key_doesnotexist")
    assert status == 404
    status, body = call(local_stack, "POST", "/v1/admin/keys/key_doesnotexist/rotate", {"grace_seconds": "soon"})
    assert status == 400 and body["error"]["details"]["param"] == "grace_seconds"
