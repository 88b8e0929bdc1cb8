"""The OpenAPI document: a valid OpenAPI 3 document listing every route of every function, generated
from the same request models the functions validate with (offline: no AWS, no sockets)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from cfnlint.decode import cfn_yaml  # type: ignore[import-untyped]
from openapi_spec_validator import validate

from llm_gateway.http import openapi

REPO_ROOT = Path(__file__).resolve().parents[2]
HTTP_FUNCTIONS = ("completion", "extraction", "summarization", "jobs")
METHODS = ("get", "post", "put", "patch", "delete")
# Its from/to are read by hand (report_range checks them): Powertools' query params would cost the
# completion function's cold start ~10 ms. The document declares them; the test below checks the rest.
USAGE = ("get", "/v1/usage")


def template_routes() -> set[tuple[str, str]]:
    template = cfn_yaml.load(str(REPO_ROOT / "template.yaml"))
    routes = set()
    for resource in template["Resources"].values():
        for event in (resource.get("Properties") or {}).get("Events", {}).values():
            if event["Type"] == "Api":
                routes.add((event["Properties"]["Method"].lower(), event["Properties"]["Path"]))
    return routes


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    }


def load_function(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"openapi_test_{name}_app", REPO_ROOT / f"functions/{name}/app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return openapi.document()


def test_the_document_is_valid_openapi_3(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.")
    validate(document)  # raises on any violation of the OpenAPI 3 schema
    json.dumps(document)  # serves as JSON as it is


def test_the_document_lists_every_route_that_template_yaml_wires(document: dict[str, Any]) -> None:
    assert set(operations(document)) == template_routes()


def test_the_usage_route_documents_its_date_and_format_parameters(document: dict[str, Any]) -> None:
    [operation] = [op for route, op in operations(document).items() if route == USAGE]
    assert {p["name"]: p["in"] for p in operation["parameters"]} == {"from": "query", "to": "query", "format": "query"}
    assert set(operation["responses"]["200"]["content"]) == {"application/json", "text/csv"}


def test_every_route_documents_the_error_shape(document: dict[str, Any]) -> None:
    error = document["components"]["schemas"]["ErrorBody"]
    assert error["required"] == ["error"]
    detail = document["components"]["schemas"]["ErrorDetail"]
    assert {"code", "message"} <= set(detail["required"])
    for route, operation in operations(document).items():
        for status in ("400", "401", "404", "429", "500", "503"):
            schema = operation["responses"][status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (route, status)
    # Either header carries the key: two alternative requirements, each one scheme.
    assert document["security"] == [{openapi.BEARER_SCHEME: []}, {openapi.API_KEY_SCHEME: []}]
    schemes = document["components"]["securitySchemes"]
    assert schemes[openapi.BEARER_SCHEME]["type"] == "http" and schemes[openapi.BEARER_SCHEME]["scheme"] == "bearer"
    assert schemes[openapi.API_KEY_SCHEME] | {"description": ""} == {
        "type": "apiKey",
        "name": "x-api-key",
        "in": "header",
        "description": "",
    }


@pytest.mark.parametrize("name", HTTP_FUNCTIONS)
def test_each_function_serves_exactly_the_routes_declared_with_the_same_models(
    name: str, document: dict[str, Any]
) -> None:
    """The function's own resolver, as Powertools sees it: same routes, same request bodies and
    parameters (hence the same validation) as the published document."""
    own = json.loads(load_function(name).app.get_openapi_json_schema())
    mine = operations(own)
    published = operations(document)
    assert mine, name
    for route, operation in mine.items():
        assert route in published, route
        assert operation.get("requestBody") == published[route].get("requestBody"), route
        if route != USAGE:
            assert operation.get("parameters") == published[route].get("parameters"), route
        body_refs = json.dumps(operation.get("requestBody") or {})
        for ref in set(part.split('"')[0] for part in body_refs.split("#/components/schemas/")[1:]):
            assert own["components"]["schemas"][ref] == document["components"]["schemas"][ref], (route, ref)


@pytest.mark.parametrize("name", HTTP_FUNCTIONS)
def test_no_function_builds_the_document_at_cold_start(name: str) -> None:
    """Importing a handler neither imports the document's module nor generates any schema."""
    probe = (
        "import sys, app; "
        "assert 'llm_gateway.http.openapi' not in sys.modules; "
        "assert 'aws_lambda_powertools.event_handler.openapi.schema_generator' not in sys.modules"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "layers" / "gateway")}
    subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT / "functions" / name, env=env, check=True, timeout=60)
