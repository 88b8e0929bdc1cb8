"""The one HTTP edge, route by route over the local stack: the same error shape, request ids, not-found
answer, deadline and ``Prefer`` flow on every route of every function, and the log lines of every
function carry the request id and Lambda context."""

from __future__ import annotations

import io
import json
import logging
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from llm_gateway.http import framing, openapi
from local.simulator import ProviderSimulator
from local.stack import LocalStack

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_real_aws")]

KEY = "key-a"  # tests/conftest.py: key-a -> tenant-a
CHAT = "/v1/chat/completions"
USER = {"role": "user", "content": "hi"}
# A refused body must reach no provider. Other tests' queued jobs may still call the shared simulator while
# this runs, so the refused bodies carry a marker and only calls carrying it count.
REFUSED_MARKER = "edge-refused-body-7f3a"
REFUSED_USER = {"role": "user", "content": REFUSED_MARKER}
# Every POST route with a body its model refuses, and the parameter the 400 must name.
BAD_BODIES: dict[str, tuple[dict[str, Any], str]] = {
    CHAT: ({"model": "gpt-4o-mini", "messages": [REFUSED_USER], "temperature": "warm"}, "temperature"),
    "/v1/completions": ({"messages": [REFUSED_USER], "max_tokens": "many"}, "max_tokens"),
    "/v1/extractions": ({"text": REFUSED_MARKER, "schema": "entities", "max_reasks": 99}, "max_reasks"),
    "/v1/summaries": ({"text": REFUSED_MARKER, "style": "haiku"}, "style"),
    "/v1/jobs": ({"operation": "completion", "input": "not an object"}, "input"),
}
FUNCTIONS = ("completion", "extraction", "summarization", "jobs")
GOOD_BODIES: dict[str, dict[str, Any]] = {
    CHAT: {"model": "gpt-4o-mini", "messages": [USER], "temperature": 0},
    "/v1/completions": {"model": "gpt-4o-mini", "messages": [USER], "temperature": 0},
    "/v1/extractions": {"text": "Ada Lovelace, born 1815.", "schema": "entities"},
}


@pytest.fixture
def api(local_stack: LocalStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=local_stack.api_url, headers={"x-api-key": KEY}, timeout=60) as client:
        yield client


def assert_error_shape(response: httpx.Response, *, openai_style: bool) -> dict[str, Any]:
    error = response.json()["error"]
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["retryable"], bool)
    if openai_style:
        assert {"type", "param"} <= set(error)
    else:
        assert "type" not in error and "param" not in error
    # The function's request id is the one API Gateway gave the request.
    assert response.headers["x-request-id"] == response.headers["x-amzn-RequestId"]
    return error


@pytest.mark.parametrize("route", sorted(BAD_BODIES))
def test_every_post_route_refuses_a_bad_body_in_the_one_shape(
    api: httpx.Client, simulator: ProviderSimulator, route: str
) -> None:
    body, param = BAD_BODIES[route]
    response = api.post(route, json=body)
    assert response.status_code == 400, response.text
    error = assert_error_shape(response, openai_style=route == CHAT)
    assert error["code"] == "invalid_request" and error["retryable"] is False
    assert (error["param"] if route == CHAT else error["details"]["param"]) == param
    assert [call for call in simulator.calls() if REFUSED_MARKER in json.dumps(call)] == []


def test_the_get_routes_answer_errors_in_the_one_shape(api: httpx.Client) -> None:
    usage = api.get("/v1/usage", params={"from": "yesterday"})
    assert usage.status_code == 400
    assert assert_error_shape(usage, openai_style=False)["details"]["param"] == "from"
    job = api.get(f"/v1/jobs/job_{uuid.uuid4().hex}")
    assert job.status_code == 404
    assert assert_error_shape(job, openai_style=False)["code"] == "job_not_found"


@pytest.mark.parametrize("function", FUNCTIONS)
def test_a_path_a_function_does_not_serve_is_a_404_route_not_found(local_stack: LocalStack, function: str) -> None:
    event = {
        "resource": "/v1/nowhere",
        "path": "/v1/nowhere",
        "httpMethod": "DELETE",
        "headers": {},
        "multiValueHeaders": {},
        "queryStringParameters": None,
        "body": None,
        "isBase64Encoded": False,
        "requestContext": {"requestId": "req-404", "identity": {"apiKeyId": "tenant-a"}, "stage": "prod"},
    }
    answer = local_stack.invoke(function, event)
    assert answer["statusCode"] == 404
    error = json.loads(answer["body"])["error"]
    assert (error["code"], error["retryable"]) == ("route_not_found", False)
    assert "DELETE /v1/nowhere" in error["message"]
    assert answer["multiValueHeaders"]["x-request-id"] == ["req-404"]


@pytest.mark.parametrize("route", sorted(GOOD_BODIES))
def test_defer_on_failure_fires_within_api_gateways_29_s_on_every_operation_route(
    local_stack: LocalStack, api: httpx.Client, simulator: ProviderSimulator, route: str
) -> None:
    """The request arrived at API Gateway 25 s ago: every route has what is left of the 29 s (not the
    function's 60 s), so a provider that takes 10 s is given up on in time and the request is queued."""
    found = local_stack.routes.match("POST", route)
    assert found is not None
    lid = found.route.function_id
    real = local_stack._load_handler(lid)

    def arrived_25_s_ago(event: dict[str, Any], context: Any) -> Any:
        event["requestContext"]["requestTimeEpoch"] -= 25_000
        return real(event, context)

    local_stack.handler_overrides[lid] = arrived_25_s_ago
    simulator.add_fault("slow", delay_s=10)
    started = time.monotonic()
    body = {**GOOD_BODIES[route], "cache": {"no_cache": True}} if route != CHAT else GOOD_BODIES[route]
    response = api.post(route, json=body, headers={"Prefer": "defer-on-failure", "Cache-Control": "no-cache"})
    elapsed = time.monotonic() - started
    assert response.status_code == 202, response.text
    assert response.headers["Preference-Applied"] == "defer-on-failure"
    assert response.json()["object"] == "job" and response.json()["deferred_because"]["code"]
    assert elapsed < 9, elapsed  # within what was left of the 29 s, not after the provider's 10 s


def test_document_routes_take_bodies_up_to_the_lambda_payload_and_point_bigger_ones_to_s3(
    api: httpx.Client, simulator: ProviderSimulator
) -> None:
    """Over the chat routes' 1 MiB (which stays: see test_completion_http's oversized body), under 6 MB."""
    big = {"text": "Ada Lovelace, born 1815.", "schema": "entities", "metadata": {"note": "x" * 1_500_000}}
    accepted = api.post("/v1/extractions", json=big)
    assert accepted.status_code == 200, accepted.text[:300]
    assert accepted.json()["data"] is not None
    huge = {"text": "y" * 6_100_000, "schema": "entities"}
    refused = api.post("/v1/extractions", json=huge)
    assert refused.status_code == 413, refused.text[:300]
    error = assert_error_shape(refused, openai_style=False)
    assert error["code"] == "payload_too_large" and error["details"]["limit"] == 6_000_000
    assert '"s3"' in error["message"]


@pytest.mark.parametrize("function", ["completion", "extraction", "summarization"])
@pytest.mark.parametrize("tenant", [42, "", "x" * 300, "tab\there"])
def test_every_direct_invocation_validates_the_tenant_it_names(
    local_stack: LocalStack, simulator: ProviderSimulator, function: str, tenant: Any
) -> None:
    with pytest.raises(Exception) as raised:
        local_stack.invoke(function, {"tenant": tenant, "text": "Some text.", "schema": "entities"})
    assert type(raised.value).__name__ == "InvalidRequestError"
    error = json.loads(str(raised.value))
    assert error["details"]["param"] == "tenant" and error["retryable"] is False
    assert simulator.calls() == []


def test_the_openapi_document_is_served_by_the_api(api: httpx.Client) -> None:
    response = api.get("/v1/openapi.json")
    assert response.status_code == 200, response.text
    assert response.json() == openapi.document()
    assert response.headers["x-request-id"] == response.headers["x-amzn-RequestId"]


@pytest.mark.parametrize("function", FUNCTIONS)
def test_log_lines_of_every_function_and_of_the_layer_carry_the_request_id(
    local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch, function: str
) -> None:
    """The function's own lines and the layer's (``llm_gateway.*``) go through the function's Powertools
    handler, with the invocation's request id and Lambda context."""
    local_stack._load_handler(local_stack.function_id(function))  # loaded as on a cold start
    module = sys.modules[f"gateway_fn_{function}"]
    handler = module.logger.registered_handler
    assert handler in logging.getLogger("llm_gateway").handlers
    probe = logging.getLogger("llm_gateway.edge_probe")
    validate = framing.validate

    def logged_validate(*args: Any, **kwargs: Any) -> Any:  # every direct invocation validates its event
        probe.warning("layer line during the invocation")
        return validate(*args, **kwargs)

    monkeypatch.setattr(framing, "validate", logged_validate)
    context = local_stack.new_context(function)
    event: dict[str, Any] = {"tenant": f"t-logs-{function}", "junk": True}  # refused: InvalidRequestError
    if function == "jobs":
        event = {**event, "operation": "completion", "input": {"messages": [USER]}}
    buffer = io.StringIO()
    previous = handler.setStream(buffer)
    try:
        with pytest.raises(Exception) as raised:
            local_stack.invoke(function, event, context)
    finally:
        handler.setStream(previous)
    assert type(raised.value).__name__ == "InvalidRequestError"
    lines = [json.loads(line) for line in buffer.getvalue().splitlines() if line.startswith("{")]
    layer = [line for line in lines if line.get("message") == "layer line during the invocation"]
    assert layer, buffer.getvalue()
    for line in layer:
        assert line["function_request_id"] == context.aws_request_id
        assert line["function_name"] == context.function_name
