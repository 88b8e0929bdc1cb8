"""Key management function: create, list, show, revoke and rotate gateway keys.

Its routes are authorized by IAM (``AWS_IAM`` in template.yaml: SigV4-signed calls allowed
``execute-api:Invoke`` on them), never by a gateway key. The secret of a new key is in the answer to
create or rotate and nowhere else: not in the table (only its SHA-256), not in any log line (events
and bodies are never logged; log lines carry the key id).
"""

from __future__ import annotations

import functools
import json
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from llm_gateway.errors import GatewayError
from llm_gateway.http import answers
from llm_gateway.http import framing as api
from llm_gateway.keys.admin import KeyAdmin, KeySpec, RotateSpec, admin_for, key_view, secret_view
from llm_gateway.observability.tracing import trace_handler
from llm_gateway.wiring import services

logger = Logger()
app = APIGatewayRestResolver()


@functools.cache
def _admin_for(keys_table: str | None, usage_table: str | None) -> KeyAdmin:
    return admin_for(keys_table, usage_table)


def admin() -> KeyAdmin:
    settings = services().settings
    return _admin_for(settings.keys_table, settings.usage_table)


def _body() -> Any:
    text = api.read_body(app.current_event.raw_event)
    return api.parse_json_body(text, max_bytes=64 * 1024) if text and text.strip() else {}


def _caller() -> str:
    identity = (app.current_event.raw_event.get("requestContext") or {}).get("identity") or {}
    return str(identity.get("userArn") or identity.get("caller") or "unknown")


@app.post("/v1/admin/keys")
def create_key() -> Response[str]:
    spec = api.validate(KeySpec, _body())
    secret, record = admin().create(spec)
    logger.info("key created", key_id=record.key_id, tenant=record.policy.tenant, by=_caller())
    return _json(201, secret_view(secret, record))


@app.get("/v1/admin/keys")
def list_keys() -> Response[str]:
    tenant = (app.current_event.query_string_parameters or {}).get("tenant") or None
    keys = [key_view(record) for record in admin().list_keys(tenant)]
    return _json(200, {"object": "list", "data": keys})


@app.get("/v1/admin/keys/<key_id>")
def show_key(key_id: str) -> Response[str]:
    return _json(200, key_view(admin().show(key_id)))


@app.delete("/v1/admin/keys/<key_id>")
def revoke_key(key_id: str) -> Response[str]:
    record = admin().revoke(key_id)
    logger.info("key revoked", key_id=key_id, by=_caller())
    return _json(200, key_view(record))


@app.post("/v1/admin/keys/<key_id>/rotate")
def rotate_key(key_id: str) -> Response[str]:
    grace = api.validate(RotateSpec, _body()).grace_seconds
    secret, record = admin().rotate(key_id, grace_seconds=grace)
    logger.info("key rotated", key_id=key_id, generation=record.generation, grace_seconds=grace, by=_caller())
    return _json(200, secret_view(secret, record))


@app.exception_handler(GatewayError)
def gateway_error(err: GatewayError) -> Response[str]:
    if err.http_status >= 500:
        logger.warning("key admin request failed", code=err.code)
    return _json(err.http_status, answers.error_body(err))  # the one documented error shape


@app.exception_handler(Exception)
def unexpected_error(err: Exception) -> Response[str]:
    api.log_unexpected(logger, err, log_prompts=services().settings.log_prompts)
    return _json(500, answers.error_body(answers.internal_error()))


@app.not_found
def not_found(_: Exception) -> Response[str]:
    event = app.current_event
    return _json(404, answers.error_body(answers.route_not_found(event.http_method, event.path)))


def _json(status: int, body: dict[str, Any]) -> Response[str]:
    headers = {"x-request-id": str(app.current_event.request_context.request_id or ""), "cache-control": "no-store"}
    text = json.dumps(body, separators=(",", ":"))
    return Response(status_code=status, content_type="application/json", body=text, headers=headers)


@trace_handler  # X-Ray when the Tracing parameter is on
@logger.inject_lambda_context(log_event=False, correlation_id_path=correlation_paths.API_GATEWAY_REST)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
