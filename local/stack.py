"""The whole gateway on one machine: moto as AWS, the provider simulator, and the handlers in-process.

``LocalStack`` reads ``template.yaml`` and

* starts a moto server (``ThreadedMotoServer``) and points boto3 at it through ``AWS_ENDPOINT_URL``;
* creates the template's DynamoDB tables, SQS queues, S3 buckets and Secrets Manager secrets there;
* starts the provider simulator for every provider without a real key in the environment;
* sets the functions' environment (Globals + function, intrinsics resolved to the local resources);
* serves the template's API routes on an HTTP bridge that behaves like an API Gateway REST API with
  API keys (403/404/502 bodies, Lambda proxy events), invoking the handlers in-process;
* delivers S3 notifications and SQS messages to the functions whose events declare them.

Without Docker nothing runs in a container: handlers share this process (and ``os.environ``).
Environment variables that differ between functions are set per invocation under a lock.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import importlib.util
import json
import logging
import os
import queue
import re
import secrets
import socket
import sys
import threading
import time
import traceback
import types
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote_plus, unquote, unquote_plus, urlsplit

from local.cfn import (
    API_TYPES,
    FUNCTION_TYPES,
    FunctionSpec,
    Resolver,
    RouteMatch,
    RouteTable,
    S3EventSource,
    SqsEventSource,
    Template,
    dependency_order,
    to_env_value,
)
from local.context import ACCOUNT_ID, REGION, LambdaContext

if TYPE_CHECKING:
    from local.simulator import ProviderSimulator

log = logging.getLogger("local.stack")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TEMPLATE = REPO_ROOT / "template.yaml"
LAYER_DIRS = (REPO_ROOT / "layers" / "gateway",)  # the layer's source, importable as in /opt/python
DEFAULT_STACK_NAME = "llm-gateway-local"
DEFAULT_LOCAL_PORT = 3000
SIM_KEY = "sim-key"
# API Gateway REST answers 403 for unknown routes; this harness uses 404 (same body) as agreed.
UNKNOWN_ROUTE_STATUS = 404
INTEGRATION_TIMEOUT_S = 29.0  # API Gateway REST's default integration timeout
MAX_REQUEST_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit
POLL_WAIT_S = 1
# Lambda drains an SQS source with several concurrent invocations (5 pollers to start, capped by
# ScalingConfig.MaximumConcurrency); one serial poller would queue every job behind the slowest.
SQS_POLLERS = 5
S3_POLLERS = 2
# Called on each worker/poller thread as it exits: (module, function), only if the module is loaded.
THREAD_CLEANUP_HOOK = ("llm_gateway.runtime", "close_thread_resources")

Handler = Callable[[Any, Any], Any]


@dataclass(frozen=True)
class Provider:
    name: str
    key_var: str
    url_var: str
    sim_route: str  # key in ProviderSimulator.base_urls()


PROVIDERS = (
    Provider("openai", "OPENAI_API_KEY", "OPENAI_BASE_URL", "openai"),
    Provider("anthropic", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "anthropic"),
    Provider("gemini", "GEMINI_API_KEY", "GEMINI_BASE_URL", "gemini"),
    Provider("openai_compatible", "OPENAI_COMPATIBLE_API_KEY", "OPENAI_COMPATIBLE_BASE_URL", "compat"),
)

# Variables that would send boto3 somewhere other than the local moto server.
_AWS_VARS_TO_CLEAR = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
)


def parse_api_keys(spec: str) -> dict[str, str]:
    """``"key-a:tenant-a,key-b:tenant-b"`` -> {key: tenant}; a key without a tenant maps to ``dev``."""
    keys = {}
    for item in spec.split(","):
        key, _, tenant = item.strip().partition(":")
        if key.strip():
            keys[key.strip()] = tenant.strip() or "dev"
    return keys


# --------------------------------------------------------------------------- API Gateway translation


class MalformedProxyResponse(ValueError):
    """The handler's return value is not a Lambda proxy response (API Gateway answers 502)."""


def api_gateway_event(
    *,
    match: RouteMatch,
    method: str,
    path: str,
    query: str,
    headers: list[tuple[str, str]],
    body: bytes,
    source_ip: str,
    stage: str,
    api_key: str | None,
    tenant: str | None,
) -> dict[str, Any]:
    """A REST API (v1) Lambda proxy event, as API Gateway sends it."""
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for name, value in headers:
        single[name] = value
        multi.setdefault(name, []).append(value)
    pairs = parse_qsl(query, keep_blank_values=True)
    query_multi: dict[str, list[str]] = {}
    for name, value in pairs:
        query_multi.setdefault(name, []).append(value)
    text, is_b64 = _event_body(body)
    now = time.time()
    request_id = str(uuid.uuid4())
    user_agent = next((v for k, v in headers if k.lower() == "user-agent"), None)
    return {
        "resource": match.route.path,
        "path": path,
        "httpMethod": method,
        "headers": single or None,
        "multiValueHeaders": multi or None,
        "queryStringParameters": {k: v[-1] for k, v in query_multi.items()} or None,
        "multiValueQueryStringParameters": query_multi or None,
        "pathParameters": match.path_parameters or None,
        "stageVariables": None,
        "requestContext": {
            "resourceId": "local",
            "resourcePath": match.route.path,
            "httpMethod": method,
            "extendedRequestId": request_id[:16],
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "path": f"/{stage}{path}",
            "accountId": ACCOUNT_ID,
            "protocol": "HTTP/1.1",
            "stage": stage,
            "domainPrefix": "localhost",
            "requestTimeEpoch": int(now * 1000),
            "requestId": request_id,
            "identity": {
                "cognitoIdentityPoolId": None,
                "accountId": None,
                "cognitoIdentityId": None,
                "caller": None,
                "apiKey": api_key,
                "apiKeyId": tenant,  # the gateway derives the tenant from the API key's id
                "sourceIp": source_ip,
                "principalOrgId": None,
                "accessKey": None,
                "cognitoAuthenticationType": None,
                "cognitoAuthenticationProvider": None,
                "userArn": None,
                "userAgent": user_agent,
                "user": None,
            },
            "domainName": "localhost",
            "apiId": match.route.api_id.lower()[:10],
        },
        "body": text,
        "isBase64Encoded": is_b64,
    }


def _event_body(body: bytes) -> tuple[str | None, bool]:
    if not body:
        return None, False
    try:
        return body.decode("utf-8"), False
    except UnicodeDecodeError:
        return base64.b64encode(body).decode("ascii"), True


def http_response(result: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """Translate a Lambda proxy response into (status, headers, body) like API Gateway does."""
    if not isinstance(result, dict):
        raise MalformedProxyResponse(f"expected a dict, got {type(result).__name__}")
    try:
        status = int(result.get("statusCode", 200))
    except (TypeError, ValueError) as exc:
        raise MalformedProxyResponse(f"bad statusCode {result.get('statusCode')!r}") from exc
    body = result.get("body")
    if body is not None and not isinstance(body, str):
        raise MalformedProxyResponse("body must be a string")
    raw = base64.b64decode(body) if body and result.get("isBase64Encoded") else (body or "").encode()
    multi = result.get("multiValueHeaders") or {}
    names_in_multi = {name.lower() for name in multi}
    out = [(str(k), str(v)) for k, v in (result.get("headers") or {}).items() if k.lower() not in names_in_multi]
    out += [(str(k), str(v)) for k, values in multi.items() for v in values]
    hop_by_hop = {"content-length", "connection", "transfer-encoding", "keep-alive"}
    out = [(k, v) for k, v in out if k.lower() not in hop_by_hop]
    if not any(k.lower() == "content-type" for k, _ in out):
        out.append(("Content-Type", "application/json"))  # API Gateway's default
    return status, out, raw


def _gateway_error(status: int, message: str, error_type: str) -> tuple[int, list[tuple[str, str]], bytes]:
    body = json.dumps({"message": message}).encode()
    headers = [("Content-Type", "application/json"), ("x-amzn-ErrorType", error_type)]
    return status, [*headers, ("x-amzn-RequestId", str(uuid.uuid4()))], body


# --------------------------------------------------------------------------- the stack


class LocalStack:
    """Local AWS (moto), provider simulator, handlers and API bridge, all driven by template.yaml."""

    def __init__(
        self,
        template: str | Path = DEFAULT_TEMPLATE,
        *,
        bridge: bool = True,
        port: int | None = None,
        host: str = "127.0.0.1",
        api_keys: Mapping[str, str] | None = None,
        simulate: bool | None = None,
        simulator: ProviderSimulator | None = None,
        stack_name: str = DEFAULT_STACK_NAME,
        parameters: Mapping[str, str] | None = None,
        env_overrides: Mapping[str, str] | None = None,
        event_sources: bool = True,
        concurrency: int = 16,
        failed_message_visibility: int | None = None,
        log_requests: bool = False,
    ) -> None:
        """
        port: bridge port; None reads ``LOCAL_PORT`` (default 3000); 0 picks a free one.
        api_keys: {key: tenant}; None reads ``LOCAL_API_KEYS`` or generates one ``dev-...`` key.
        simulate: None simulates each provider without a real key in the environment, True all,
            False none. ``simulator``: an already started simulator to use (not stopped by us).
        env_overrides: variables that win over the template's and the provider settings.
        failed_message_visibility: seconds before a failed SQS message is retried (None: the
            queue's own visibility timeout, as in AWS).
        """
        self.template = Template.load(template)
        self.stack_name = stack_name
        self.host = host
        self.bridge_enabled = bridge
        self._port = port if port is not None else int(os.environ.get("LOCAL_PORT", DEFAULT_LOCAL_PORT))
        if api_keys is None:
            spec = os.environ.get("LOCAL_API_KEYS", "")
            api_keys = parse_api_keys(spec) if spec.strip() else {f"dev-{secrets.token_hex(12)}": "dev"}
        self.api_keys: dict[str, str] = dict(api_keys)
        self._simulate = simulate
        self.simulator: ProviderSimulator | None = simulator
        self._owns_simulator = False
        self.providers: dict[str, str] = {}  # provider -> "simulated" | "real"
        self._provider_env: dict[str, str] = {}
        self.env_overrides = dict(env_overrides or {})
        self.event_sources_enabled = event_sources
        self.concurrency = concurrency
        self.failed_message_visibility = failed_message_visibility
        self.log_requests = log_requests
        # Tests (or a REPL) can replace a function's handler: {logical id: callable(event, context)}.
        self.handler_overrides: dict[str, Handler] = {}

        self.moto_url = ""
        self.api_url: str | None = None
        self.physical: dict[str, str] = {}  # logical id -> Ref value of each created resource
        self._attrs: dict[tuple[str, str], str] = {}
        self.resolver = Resolver(
            self.template,
            pseudo=self._pseudo_parameters(),
            parameters=parameters,
            refs=self.physical,
            attrs=self._attrs,
            fallback=self._placeholder,
        )
        self.functions: dict[str, FunctionSpec] = self.template.functions()
        self.routes = RouteTable(self.template.api_routes())
        self.env: dict[str, str] = {}  # what was put into os.environ for the functions
        self._env_delta: dict[str, dict[str, str]] = {}  # per function: variables differing from env
        self._env_lock = threading.RLock()
        self._saved_env: dict[str, str | None] = {}
        self._created: list[tuple[str, str]] = []  # (resource type, Ref value), for teardown
        self._moto: Any = None
        self._server: _BridgeServer | None = None
        self._server_thread: threading.Thread | None = None
        self._workers: _Workers | None = None
        self._clients: dict[str, Any] = {}
        self._stop = threading.Event()
        self._pollers: list[threading.Thread] = []
        self._started = False

    # ---- lifecycle

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> LocalStack:
        if self._started:
            return self
        self._started = True
        self._stop.clear()  # a stopped stack can be started again
        self.physical.clear()
        self._attrs.clear()
        self.providers.clear()
        try:
            self._start_moto()
            self._create_resources()
            self._start_providers()
            self._apply_function_env()
            _reset_gateway_caches()
            self._workers = _Workers(self.concurrency, "lambda")
            if self.event_sources_enabled:
                self._start_event_sources()
            if self.bridge_enabled:
                self._start_bridge()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop pollers, bridge, simulator and moto; delete what we created; restore the environment."""
        if not self._started:
            return
        self._started = False
        self._stop.set()
        give_up = time.monotonic() + POLL_WAIT_S + 10  # one bound for all pollers, not one each
        for thread in self._pollers:
            thread.join(timeout=max(0.0, give_up - time.monotonic()))
        self._pollers.clear()
        self._stop_bridge()
        if self._workers is not None:
            self._workers.shutdown(timeout=max((f.timeout_s for f in self.functions.values()), default=60) + 5)
            self._workers = None
        if self._moto is not None:
            self._delete_resources()
            self._clients.clear()
            self._moto.stop()
            self._moto = None
        if self.simulator is not None and self._owns_simulator:
            self.simulator.stop()
            self.simulator = None
        self._restore_env()
        _reset_gateway_caches()

    # ---- public helpers

    def client(self, service: str) -> Any:
        """A boto3 client bound to the local moto server (explicitly, whatever the environment says)."""
        import boto3
        from botocore.config import Config

        if not self.moto_url:
            raise RuntimeError("LocalStack is not started")
        return boto3.session.Session().client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.moto_url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=30),
        )

    def _aws(self, service: str) -> Any:
        """Cached clients for the thread that starts and stops the stack (creating one costs ~0.1 s)."""
        if service not in self._clients:
            self._clients[service] = self.client(service)
        return self._clients[service]

    def function_id(self, name: str) -> str:
        """Logical id from a logical id, a CodeUri directory name (``completion``) or a physical name."""
        for lid, spec in self.functions.items():
            if name in (lid, spec.dir_name, self._name(lid)):
                return lid
        raise LookupError(f"no function {name!r} in the template; known: {sorted(self.functions)}")

    def new_context(self, function: str) -> LambdaContext:
        spec = self.functions[self.function_id(function)]
        return LambdaContext(
            function_name=self._name(spec.logical_id),
            memory_limit_in_mb=spec.memory_mb,
            timeout_s=spec.timeout_s,
        )

    def invoke(self, function: str, event: Any, context: LambdaContext | None = None) -> Any:
        """Invoke a handler in-process (as Step Functions or ``aws lambda invoke`` would); errors propagate."""
        lid = self.function_id(function)
        handler = self.handler_overrides.get(lid) or self._load_handler(lid)
        with self._function_env(lid):
            return handler(event, context or self.new_context(lid))

    # ---- moto and resources

    def _start_moto(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log per AWS call
        _make_moto_dynamodb_atomic()
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._moto.start()
        _, port = self._moto.get_host_and_port()
        self.moto_url = f"http://127.0.0.1:{port}"
        for name in _AWS_VARS_TO_CLEAR:
            self._set_env(name, None)
        for name in [n for n in os.environ if n.startswith("AWS_ENDPOINT_URL_")]:
            self._set_env(name, None)  # service-specific endpoints would win over ours
        self._set_env("AWS_ACCESS_KEY_ID", "testing")
        self._set_env("AWS_SECRET_ACCESS_KEY", "testing")
        self._set_env("AWS_DEFAULT_REGION", REGION)
        self._set_env("AWS_REGION", REGION)
        self._set_env("AWS_CONFIG_FILE", os.devnull)  # nothing from ~/.aws can point elsewhere
        self._set_env("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        self._set_env("AWS_ENDPOINT_URL", self.moto_url)
        self._set_env("MOTO_PORT", str(port))  # moto's Step Functions calls back through it

    def _create_resources(self) -> None:
        creators: dict[str, Callable[[str, dict[str, Any]], None]] = {
            "AWS::DynamoDB::Table": self._create_table,
            "AWS::SQS::Queue": self._create_queue,
            "AWS::S3::Bucket": self._create_bucket,
            "AWS::SecretsManager::Secret": self._create_secret,
        }
        wanted = [
            lid
            for lid, res in self.template.resources.items()
            if res.get("Type") in creators and self._condition_holds(res)
        ]
        for lid in dependency_order(self.template, wanted):
            props = self.resolver.resolve(self.template.properties(lid))
            creators[self.template.resources[lid]["Type"]](lid, props)

    def _condition_holds(self, resource: dict[str, Any]) -> bool:
        name = resource.get("Condition")
        return True if name is None else self.resolver.condition(str(name))

    def _create_table(self, lid: str, props: dict[str, Any]) -> None:
        ddb = self._aws("dynamodb")
        name = str(props.get("TableName") or self._name(lid))
        billing = props.get("BillingMode", "PROVISIONED")
        default_throughput = {"ReadCapacityUnits": 5, "WriteCapacityUnits": 5}
        args: dict[str, Any] = {
            "TableName": name,
            "KeySchema": props["KeySchema"],
            "AttributeDefinitions": props["AttributeDefinitions"],
            "BillingMode": billing,
        }
        if billing == "PROVISIONED":
            args["ProvisionedThroughput"] = props.get("ProvisionedThroughput") or default_throughput
        index_keys = ("IndexName", "KeySchema", "Projection", "ProvisionedThroughput", "OnDemandThroughput")
        if gsis := props.get("GlobalSecondaryIndexes"):
            args["GlobalSecondaryIndexes"] = [{k: g[k] for k in index_keys if k in g} for g in gsis]
            if billing == "PROVISIONED":
                for gsi in args["GlobalSecondaryIndexes"]:
                    gsi.setdefault("ProvisionedThroughput", default_throughput)
        if lsis := props.get("LocalSecondaryIndexes"):
            args["LocalSecondaryIndexes"] = [{k: i[k] for k in index_keys[:3] if k in i} for i in lsis]
        if stream := props.get("StreamSpecification"):
            args["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": stream["StreamViewType"]}
        if tags := props.get("Tags"):
            args["Tags"] = tags
        table = ddb.create_table(**args)["TableDescription"]
        self._created.append(("AWS::DynamoDB::Table", name))
        ttl = props.get("TimeToLiveSpecification") or {}
        if ttl.get("Enabled") in (True, "true", "True"):
            ddb.update_time_to_live(
                TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]}
            )
        self._record(lid, name, Arn=table["TableArn"], StreamArn=table.get("LatestStreamArn"))

    _QUEUE_ATTRIBUTES = (
        "ContentBasedDeduplication",
        "DeduplicationScope",
        "DelaySeconds",
        "FifoQueue",
        "FifoThroughputLimit",
        "KmsDataKeyReusePeriodSeconds",
        "KmsMasterKeyId",
        "MaximumMessageSize",
        "MessageRetentionPeriod",
        "ReceiveMessageWaitTimeSeconds",
        "RedriveAllowPolicy",
        "RedrivePolicy",
        "SqsManagedSseEnabled",
        "VisibilityTimeout",
    )

    def _create_queue(self, lid: str, props: dict[str, Any]) -> None:
        fifo = str(props.get("FifoQueue", "")).lower() == "true"
        name = str(props.get("QueueName") or self._name(lid) + (".fifo" if fifo else ""))
        attributes = {k: to_env_value(props[k]) for k in self._QUEUE_ATTRIBUTES if k in props}
        url, arn = self._make_queue(name, attributes)
        self._record(lid, url, Arn=arn, QueueName=name, QueueUrl=url)

    def _make_queue(self, name: str, attributes: dict[str, str]) -> tuple[str, str]:
        sqs = self._aws("sqs")
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        self._created.append(("AWS::SQS::Queue", url))
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        return url, arn

    def _create_bucket(self, lid: str, props: dict[str, Any]) -> None:
        s3 = self._aws("s3")
        name = str(props.get("BucketName") or self._name(lid).lower())
        s3.create_bucket(Bucket=name)  # us-east-1: no LocationConstraint
        self._created.append(("AWS::S3::Bucket", name))
        if status := (props.get("VersioningConfiguration") or {}).get("Status"):
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": status})
        self._record(
            lid,
            name,
            Arn=f"arn:aws:s3:::{name}",
            DomainName=f"{name}.s3.amazonaws.com",
            RegionalDomainName=f"{name}.s3.{REGION}.amazonaws.com",
            WebsiteURL=f"http://{name}.s3-website-{REGION}.amazonaws.com",
        )

    def _create_secret(self, lid: str, props: dict[str, Any]) -> None:
        name = str(props.get("Name") or self._name(lid))
        value = props.get("SecretString")
        if value is None:
            value = _generated_secret(props.get("GenerateSecretString") or {})
        args = {"Name": name, "SecretString": to_env_value(value)}
        if description := props.get("Description"):
            args["Description"] = str(description)
        arn = self._aws("secretsmanager").create_secret(**args)["ARN"]
        self._created.append(("AWS::SecretsManager::Secret", arn))
        self._record(lid, arn, Id=arn)

    def _record(self, lid: str, ref: str, **attrs: str | None) -> None:
        self.physical[lid] = ref
        self._attrs.update({(lid, k): v for k, v in attrs.items() if v is not None})

    def _delete_resources(self) -> None:
        """moto's state is process-wide: leave nothing behind for the next stack or mock_aws test."""
        deleters: dict[str, Callable[[str], None]] = {
            "AWS::DynamoDB::Table": lambda n: self._aws("dynamodb").delete_table(TableName=n),
            "AWS::SQS::Queue": lambda n: self._aws("sqs").delete_queue(QueueUrl=n),
            "AWS::S3::Bucket": self._delete_bucket,
            "AWS::SecretsManager::Secret": lambda n: self._aws("secretsmanager").delete_secret(
                SecretId=n, ForceDeleteWithoutRecovery=True
            ),
        }
        for rtype, ref in reversed(self._created):
            try:
                deleters[rtype](ref)
            except Exception as exc:  # best effort: the server stops right after
                log.warning("could not delete %s %s: %s", rtype, ref, exc)
        self._created.clear()

    def _delete_bucket(self, name: str) -> None:
        s3 = self._aws("s3")
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=name):
            for item in page.get("Versions", []) + page.get("DeleteMarkers", []):
                s3.delete_object(Bucket=name, Key=item["Key"], VersionId=item["VersionId"])
        s3.delete_bucket(Bucket=name)

    def _name(self, lid: str) -> str:
        return f"{self.stack_name}-{lid}"

    def _pseudo_parameters(self) -> dict[str, str]:
        return {
            "AWS::StackName": self.stack_name,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::Region": REGION,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackId": f"arn:aws:cloudformation:{REGION}:{ACCOUNT_ID}:stack/{self.stack_name}/local",
        }

    def _placeholder(self, lid: str, attr: str | None) -> str:
        """Values for resources the harness does not create (functions, APIs, policies, layers...)."""
        rtype = self.template.resource_type(lid) or "AWS::Local::Resource"
        name = self._name(lid)
        if rtype in FUNCTION_TYPES or rtype == "AWS::Lambda::Function":
            return name if attr is None else f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}"
        if rtype in API_TYPES or rtype == "AWS::ApiGateway::RestApi":
            return lid.lower()[:10] if attr is None else "root"
        service = rtype.split("::")[1].lower()
        arn = f"arn:aws:{service}:{REGION}:{ACCOUNT_ID}:{name}"
        return arn if attr in (None, "Arn") or rtype.endswith("Policy") else f"{arn}/{attr}"

    # ---- providers and environment

    def _start_providers(self) -> None:
        values: dict[str, str] = {}
        for provider in PROVIDERS:
            real = self._has_real_provider(provider)
            self.providers[provider.name] = "real" if real else "simulated"
            if real:
                continue
            simulator = self._ensure_simulator()
            values[provider.url_var] = simulator.base_urls()[provider.sim_route]
            values[provider.key_var] = SIM_KEY
        for name, value in values.items():
            self._set_env(name, value)
        self._provider_env = values

    def _has_real_provider(self, provider: Provider) -> bool:
        if self._simulate is not None:
            return not self._simulate
        if provider.name == "openai_compatible":  # a self-hosted server needs a URL, maybe no key
            return bool(os.environ.get(provider.url_var))
        return os.environ.get(provider.key_var, SIM_KEY) != SIM_KEY

    def _ensure_simulator(self) -> ProviderSimulator:
        if self.simulator is None:
            from local.simulator import ProviderSimulator  # lazy: only when something is simulated

            self.simulator = ProviderSimulator(host="127.0.0.1", port=0)
            self.simulator.start()
            self._owns_simulator = True
        return self.simulator

    def _apply_function_env(self) -> None:
        """Put the functions' environment into os.environ; conflicting variables go per invocation."""
        # On Lambda, bookkeeping runs after the response in an internal extension; a thread stands in
        # for it here (unless the environment already chose, as the test suite does: inline).
        after_response = {"GATEWAY_AFTER_RESPONSE": os.environ.get("GATEWAY_AFTER_RESPONSE") or "thread"}
        overlay = {**after_response, **self._provider_env, **self.env_overrides}
        per_function = {
            lid: {**self.template.function_environment(lid, self.resolver), **overlay} for lid in self.functions
        }
        merged: dict[str, str] = {}
        for env in per_function.values():
            for name, value in env.items():
                merged.setdefault(name, value)  # on conflict the first function's value is the default
        self._env_delta = {lid: {k: v for k, v in env.items() if merged[k] != v} for lid, env in per_function.items()}
        if any(self._env_delta.values()):
            log.info("function-specific variables are set per invocation: %s", self._env_delta)
        self._set_env("POWERTOOLS_TRACE_DISABLED", os.environ.get("POWERTOOLS_TRACE_DISABLED", "true"))
        for name, value in {**merged, **overlay}.items():
            self._set_env(name, value)
        self.env = {**merged, **overlay}

    @contextlib.contextmanager
    def _function_env(self, lid: str) -> Iterator[None]:
        delta = self._env_delta.get(lid)
        if not delta:
            yield
            return
        with self._env_lock:  # serialises only the functions whose variables differ
            saved = {k: os.environ.get(k) for k in delta}
            os.environ.update(delta)
            try:
                yield
            finally:
                for name, value in saved.items():
                    _put_env(name, value)

    def _set_env(self, name: str, value: str | None) -> None:
        self._saved_env.setdefault(name, os.environ.get(name))
        _put_env(name, value)

    def _restore_env(self) -> None:
        for name, value in self._saved_env.items():
            _put_env(name, value)
        self._saved_env.clear()

    # ---- handlers

    _load_lock = threading.Lock()  # sys.modules and sys.path are process-wide

    def _load_handler(self, lid: str) -> Handler:
        spec = self.functions[lid]
        module_path, _, attr = spec.handler.rpartition(".")
        module_name = "gateway_fn_" + re.sub(r"\W", "_", spec.dir_name)
        if module_path != "app":
            module_name += "_" + module_path.replace(".", "_")
        path = spec.code_uri / (module_path.replace(".", "/") + ".py")
        with self._load_lock:
            module = sys.modules.get(module_name)
            if module is None or Path(getattr(module, "__file__", "") or "") != path:
                module = _import_file(module_name, path, spec.code_uri)  # first use: a "cold start"
        handler = getattr(module, attr, None)
        if not callable(handler):
            raise AttributeError(f"{lid}: {spec.handler} is not a callable in {spec.code_uri}")
        return handler  # type: ignore[no-any-return]

    # ---- event sources: S3 notifications and SQS queues

    def _start_event_sources(self) -> None:
        by_bucket: dict[str, list[S3EventSource]] = {}
        for source in self.template.s3_events():
            by_bucket.setdefault(source.bucket_id, []).append(source)
        for bucket_id, sources in by_bucket.items():
            queue_url = self._wire_bucket_notifications(bucket_id, sources)
            for i in range(S3_POLLERS):
                self._spawn_poller(f"s3-{bucket_id}-{i}", queue_url, 10, functools.partial(self._on_s3, sources))
        for sqs_source in self.template.sqs_events():
            if sqs_source.enabled:
                url = self._queue_url(sqs_source.queue)
                on_batch = self._sqs_batch_handler(sqs_source, self._queue_arn(sqs_source.queue, url))
                for i in range(min(SQS_POLLERS, sqs_source.max_concurrency or SQS_POLLERS)):
                    self._spawn_poller(f"sqs-{sqs_source.function_id}-{i}", url, sqs_source.batch_size, on_batch)

    def _wire_bucket_notifications(self, bucket_id: str, sources: list[S3EventSource]) -> str:
        """S3 cannot call an in-process handler: notify an internal queue that a poller drains."""
        url, arn = self._make_queue(f"{self.stack_name}-s3-events-{bucket_id}", {})
        configs = []
        for source in sources:
            config: dict[str, Any] = {"Id": _config_id(source), "QueueArn": arn, "Events": list(source.events)}
            rules = [{"Name": n, "Value": v} for n, v in (("prefix", source.prefix), ("suffix", source.suffix)) if v]
            if rules:
                config["Filter"] = {"Key": {"FilterRules": rules}}
            configs.append(config)
        self._aws("s3").put_bucket_notification_configuration(
            Bucket=self.physical[bucket_id], NotificationConfiguration={"QueueConfigurations": configs}
        )
        return url

    def _on_s3(self, sources: list[S3EventSource], messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for message in messages:
            body = json.loads(message["Body"])
            for record in body.get("Records", []):  # the first message is an s3:TestEvent: no Records
                self._dispatch_s3_record(sources, _complete_s3_record(record))
        return messages  # async invocation: the event is consumed whatever the handler did

    def _dispatch_s3_record(self, sources: list[S3EventSource], record: dict[str, Any]) -> None:
        key = unquote_plus(record["s3"]["object"]["key"])  # keys arrive URL-encoded, as in AWS
        for source in sources:
            if record["s3"].get("configurationId") == _config_id(source) and source.matches(record["eventName"], key):
                try:
                    self.invoke(source.function_id, {"Records": [record]})
                except Exception:
                    log.error(
                        "%s failed on s3://%s/%s (dropped)\n%s",
                        source.function_id,
                        record["s3"]["bucket"]["name"],
                        key,
                        traceback.format_exc(),
                    )

    def _sqs_batch_handler(
        self, source: SqsEventSource, queue_arn: str
    ) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
        def on_batch(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
            event = {"Records": [_sqs_record(m, queue_arn) for m in messages]}
            try:
                result = self.invoke(source.function_id, event)
            except Exception:
                log.error(
                    "%s failed on an SQS batch of %d\n%s", source.function_id, len(messages), traceback.format_exc()
                )
                return []
            if not source.report_batch_item_failures:
                return messages
            failed = _batch_item_failures(result, {m["MessageId"] for m in messages})
            return [m for m in messages if m["MessageId"] not in failed]

        return on_batch

    def _spawn_poller(
        self, name: str, url: str, batch_size: int, on_batch: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
    ) -> None:
        thread = threading.Thread(
            target=self._poll, args=(url, batch_size, on_batch), name=f"poller-{name}", daemon=True
        )
        self._pollers.append(thread)
        thread.start()

    def _poll(
        self, url: str, batch_size: int, on_batch: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
    ) -> None:
        try:
            self._poll_until_stopped(url, batch_size, on_batch)
        finally:
            close_thread_resources()

    def _poll_until_stopped(
        self, url: str, batch_size: int, on_batch: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
    ) -> None:
        sqs = self.client("sqs")
        while not self._stop.is_set():
            try:
                messages = sqs.receive_message(
                    QueueUrl=url,
                    MaxNumberOfMessages=max(1, min(batch_size, 10)),
                    WaitTimeSeconds=POLL_WAIT_S,
                    AttributeNames=["All"],
                    MessageAttributeNames=["All"],
                ).get("Messages", [])
                if not messages:
                    continue
                done = on_batch(messages)
                _delete_messages(sqs, url, done)
                self._delay_retries(sqs, url, [m for m in messages if m not in done])
            except Exception:
                if self._stop.is_set():
                    return
                log.error("poller for %s failed\n%s", url, traceback.format_exc())
                self._stop.wait(1)

    def _delay_retries(self, sqs: Any, url: str, failed: list[dict[str, Any]]) -> None:
        if self.failed_message_visibility is None:
            return
        for message in failed:
            sqs.change_message_visibility(
                QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=self.failed_message_visibility
            )

    def _queue_url(self, queue: str) -> str:
        if queue in self.physical:
            return self.physical[queue]
        name = queue.rsplit(":", 1)[-1]  # a literal ARN
        return str(self._aws("sqs").get_queue_url(QueueName=name)["QueueUrl"])

    def _queue_arn(self, queue: str, url: str) -> str:
        if (queue, "Arn") in self._attrs:
            return self._attrs[(queue, "Arn")]
        attrs = self._aws("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        return str(attrs["Attributes"]["QueueArn"])

    # ---- HTTP bridge

    def _start_bridge(self) -> None:
        self._server = _BridgeServer((self.host, self._port), self)
        port = self._server.server_address[1]
        self.api_url = f"http://{self.host}:{port}"
        self._server_thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="api-bridge", daemon=True
        )
        self._server_thread.start()

    def _stop_bridge(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._server_thread is not None:
            self._server_thread.join(timeout=10)
            self._server_thread = None

    def handle_http(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes, source_ip: str
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """One API Gateway request: route, API key check, proxy event, handler, proxy response."""
        url = urlsplit(target)
        path = unquote(url.path) or "/"
        match = self.routes.match(method, path)
        if match is None:
            return _gateway_error(
                UNKNOWN_ROUTE_STATUS, "Missing Authentication Token", "MissingAuthenticationTokenException"
            )
        api_key = next((v for k, v in headers if k.lower() == "x-api-key"), None)
        tenant = self.api_keys.get(api_key) if api_key else None
        if match.route.api_key_required and tenant is None:
            return _gateway_error(403, "Forbidden", "ForbiddenException")
        event = api_gateway_event(
            match=match,
            method=method,
            path=path,
            query=url.query,
            headers=headers,
            body=body,
            source_ip=source_ip,
            stage=self.template.api_stage(match.route.api_id, self.resolver.resolve),
            api_key=api_key if match.route.api_key_required else None,
            tenant=tenant if match.route.api_key_required else None,
        )
        return self._invoke_for_http(match.route.function_id, event)

    def _invoke_for_http(self, lid: str, event: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
        assert self._workers is not None
        request_id = event["requestContext"]["requestId"]
        future = self._workers.submit(self.invoke, lid, event)
        try:
            status, headers, raw = http_response(future.result(timeout=INTEGRATION_TIMEOUT_S))
        except FutureTimeout:
            status, headers, raw = _gateway_error(504, "Endpoint request timed out", "IntegrationTimeout")
        except Exception:
            print(f"{lid} failed (request {request_id}):\n{traceback.format_exc()}", file=sys.stderr)
            status, headers, raw = _gateway_error(502, "Internal server error", "InternalServerErrorException")
        headers = [(k, v) for k, v in headers if k.lower() != "x-amzn-requestid"]
        return status, [*headers, ("x-amzn-RequestId", request_id)], raw


# --------------------------------------------------------------------------- worker threads


class _Workers:
    """A fixed set of threads, like warm Lambda instances: per-thread state (the gateway's event loop
    and HTTP client) is reused across requests, and released when the stack stops."""

    def __init__(self, size: int, name: str) -> None:
        self._size = size
        self._name = name
        self._queue: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None] = (
            queue.SimpleQueue()
        )
        self._idle = threading.Semaphore(0)
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self._queue.put((future, fn, args))
        if not self._idle.acquire(timeout=0):
            with self._lock:
                if len(self._threads) < self._size:
                    thread = threading.Thread(target=self._run, name=f"{self._name}-{len(self._threads)}", daemon=True)
                    thread.start()
                    self._threads.append(thread)
        return future

    def _run(self) -> None:
        try:
            while (item := self._queue.get()) is not None:
                future, fn, args = item
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn(*args))
                    except BaseException as exc:
                        future.set_exception(exc)
                self._idle.release()
        finally:
            close_thread_resources()

    def shutdown(self, timeout: float) -> None:
        with self._lock:
            threads, self._threads = self._threads, []
        for _ in threads:
            self._queue.put(None)
        for thread in threads:
            thread.join(timeout=timeout)


# --------------------------------------------------------------------------- bridge server


class _BridgeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], stack: LocalStack) -> None:
        self.stack = stack
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _BridgeHandler)

    def track(self, conn: socket.socket, *, add: bool) -> None:
        with self._connections_lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def close_connections(self) -> None:
        """Wake keep-alive connection threads blocked on read so they exit now."""
        with self._connections_lock:
            for conn in self._connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            self._connections.clear()


class _BridgeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every response carries Content-Length
    disable_nagle_algorithm = True  # else each response waits ~40 ms for a delayed ACK
    server_version = "llm-gateway-local"
    timeout = 300  # idle keep-alive connections are closed after this
    server: _BridgeServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        self.server.track(self.connection, add=False)
        with contextlib.suppress(OSError):
            super().finish()

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def _serve(self) -> None:
        started = time.perf_counter()
        body = self._read_body()
        if body is None:
            status, headers, raw = _gateway_error(413, "Request Too Long", "RequestTooLarge")
            self.close_connection = True
        else:
            status, headers, raw = self.server.stack.handle_http(
                self.command, self.path, list(self.headers.items()), body, self.client_address[0]
            )
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(raw)
        if self.server.stack.log_requests:
            elapsed = (time.perf_counter() - started) * 1000
            print(f'{self.client_address[0]} "{self.command} {self.path}" {status} {elapsed:.1f}ms', file=sys.stderr)

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_REQUEST_BYTES:
            return None
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes | None:
        parts: list[bytes] = []
        total = 0
        while True:
            size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                    pass
                return b"".join(parts)
            total += size
            if total > MAX_REQUEST_BYTES:
                return None
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request is printed by _serve when log_requests is on


# --------------------------------------------------------------------------- helpers


def _make_moto_dynamodb_atomic() -> None:
    """One DynamoDB request at a time per table in moto, as DynamoDB applies each write and transaction
    atomically.

    moto's server answers on many threads with no lock of its own: concurrent writes to one item can
    lose an update, and a transaction can fail with "dictionary changed size during iteration". Lambda's
    concurrent invocations (our pollers, the bridge, after-response threads) would see errors that real
    DynamoDB never gives. Locks are per table (a transaction takes its tables' locks in name order), so
    a cache read never queues behind moto's slow copy of the usage table in a ledger transaction.
    Process-wide and idempotent: moto runs in this process.
    """
    from moto.dynamodb.responses import DynamoHandler

    if getattr(DynamoHandler.call_action, "_gateway_atomic", False):
        return
    original = DynamoHandler.call_action
    guard = threading.Lock()
    table_locks: dict[str, threading.RLock] = {}

    def locks_for(handler: Any) -> list[threading.RLock]:
        with guard:
            return [table_locks.setdefault(name, threading.RLock()) for name in _dynamodb_tables(handler)]

    def call_action(self: Any) -> Any:
        with contextlib.ExitStack() as held:
            for lock in locks_for(self):
                held.enter_context(lock)
            return original(self)

    call_action._gateway_atomic = True  # type: ignore[attr-defined]
    DynamoHandler.call_action = call_action  # type: ignore[method-assign]
    _make_moto_transactions_item_scoped()


def _make_moto_transactions_item_scoped() -> None:
    """moto backs up every table a transaction touches (a deep copy of the whole table) to roll back a
    cancelled one: each ledger write then costs time in proportion to the usage table, and a long local
    session (or test run) slows to a crawl. Back up the transaction's own items instead, and restore
    them when it is cancelled; the table's lock (above) keeps anyone from seeing the half-done state."""
    import copy

    from moto.dynamodb import models
    from moto.dynamodb.models.table import Table

    backend_class = models.DynamoDBBackend
    original = backend_class.transact_write_items

    class _TablesNotCopied:  # moto's `copy` as its transaction code sees it: tables are not copied
        @staticmethod
        def deepcopy(value: Any, memo: Any = None) -> Any:
            return value if isinstance(value, Table) else copy.deepcopy(value, memo)

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        saved = []
        for entry in transact_items:
            try:
                _, op = next(iter(entry.items()))
                table = self.get_table(op["TableName"])
                key = op.get("Key") or {
                    name: op["Item"][name] for name in (table.hash_key_attr, table.range_key_attr) if name
                }
                current = self.get_item(op["TableName"], key)
            except Exception:
                continue  # a malformed entry: moto refuses it below, before it changes anything
            saved.append((op["TableName"], key, None if current is None else current.to_json()["Attributes"]))
        try:
            return original(self, transact_items)  # type: ignore[no-any-return]
        except Exception:
            for table_name, key, attributes in reversed(saved):
                if attributes is None:
                    self.delete_item(table_name, key)
                else:
                    self.put_item(table_name, copy.deepcopy(attributes))
            raise

    models.copy = _TablesNotCopied  # type: ignore[attr-defined]
    backend_class.transact_write_items = transact_write_items  # type: ignore[method-assign]


def _dynamodb_tables(handler: Any) -> list[str]:
    """The tables a DynamoDB request touches, sorted (the lock order)."""
    params = getattr(handler, "params", None)
    if not isinstance(params, dict):
        try:
            params = json.loads(getattr(handler, "body", None) or "{}")
        except (TypeError, ValueError):
            return []
    if not isinstance(params, dict):
        return []
    names = {params["TableName"]} if isinstance(params.get("TableName"), str) else set()
    for item in params.get("TransactItems") or []:
        for operation in item.values() if isinstance(item, dict) else []:
            if isinstance(operation, dict) and isinstance(operation.get("TableName"), str):
                names.add(operation["TableName"])
    names.update(name for name in (params.get("RequestItems") or {}) if isinstance(name, str))
    return sorted(names)


def _put_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def close_thread_resources() -> None:
    """Let the gateway close this thread's event loop and HTTP client (open keep-alive connections
    would otherwise hold simulator threads) -- if its runtime offers the hook."""
    module = sys.modules.get(THREAD_CLEANUP_HOOK[0])
    hook = getattr(module, THREAD_CLEANUP_HOOK[1], None)
    if callable(hook):
        try:
            hook()
        except Exception:
            log.warning("thread cleanup failed\n%s", traceback.format_exc())


def _reset_gateway_caches() -> None:
    """The gateway caches settings from the environment; forget them when the environment changes."""
    service = sys.modules.get("llm_gateway.wiring")
    reset = getattr(service, "reset", None)
    if callable(reset):
        reset()


def _import_file(module_name: str, path: Path, code_dir: Path) -> types.ModuleType:
    if not path.is_file():
        raise FileNotFoundError(f"handler module {path} does not exist")
    for layer in LAYER_DIRS:
        if str(layer) not in sys.path:
            sys.path.insert(0, str(layer))
    if str(code_dir) not in sys.path:
        sys.path.append(str(code_dir))  # Lambda puts the code root on sys.path
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def _generated_secret(spec: dict[str, Any]) -> str:
    password = secrets.token_urlsafe(int(spec.get("PasswordLength", 32)))[: int(spec.get("PasswordLength", 32))]
    if template := spec.get("SecretStringTemplate"):
        data = json.loads(template)
        data[spec.get("GenerateStringKey", "password")] = password
        return json.dumps(data)
    return password


def _config_id(source: S3EventSource) -> str:
    return f"{source.function_id}-{source.event_name}"


def _complete_s3_record(record: dict[str, Any]) -> dict[str, Any]:
    """moto's records lack some fields that real S3 events carry; fill them in."""
    record.setdefault("userIdentity", {"principalId": "EXAMPLE"})
    record.setdefault("requestParameters", {"sourceIPAddress": "127.0.0.1"})
    record.setdefault(
        "responseElements", {"x-amz-request-id": uuid.uuid4().hex[:16].upper(), "x-amz-id-2": secrets.token_urlsafe(48)}
    )
    s3 = record["s3"]
    # moto encodes "/" too; S3 leaves it alone (spaces become "+", other specials %XX).
    s3["object"]["key"] = quote_plus(unquote_plus(s3["object"]["key"]), safe="/")
    s3["bucket"].setdefault("ownerIdentity", {"principalId": "EXAMPLE"})
    s3["object"].setdefault("sequencer", f"{time.time_ns():X}")
    return record


def _sqs_record(message: dict[str, Any], queue_arn: str) -> dict[str, Any]:
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": {
            name: _lambda_message_attribute(value) for name, value in (message.get("MessageAttributes") or {}).items()
        },
        "md5OfBody": message.get("MD5OfBody"),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": REGION,
    }
    if "MD5OfMessageAttributes" in message:
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    return record


def _lambda_message_attribute(value: dict[str, Any]) -> dict[str, Any]:
    """SQS API attribute (StringValue, BinaryValue bytes) -> Lambda event attribute (camelCase, base64)."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    out: dict[str, Any] = {
        "stringListValues": value.get("StringListValues", []),
        "binaryListValues": [b64(v) for v in value.get("BinaryListValues", [])],
        "dataType": value["DataType"],
    }
    if "StringValue" in value:
        out["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        out["binaryValue"] = b64(value["BinaryValue"])
    return out


def _batch_item_failures(result: Any, message_ids: set[str]) -> set[str]:
    """Ids the handler reported as failed; an invalid report fails the whole batch, as in Lambda."""
    if result is None:
        return set()
    if not isinstance(result, dict):
        return set(message_ids)
    failures = result.get("batchItemFailures") or []
    ids = {str(f.get("itemIdentifier") or "") for f in failures if isinstance(f, dict)}
    if len(ids) != len(failures) or not ids <= message_ids:
        return set(message_ids)
    return ids


def _delete_messages(sqs: Any, url: str, messages: list[dict[str, Any]]) -> None:
    for start in range(0, len(messages), 10):
        chunk = messages[start : start + 10]
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)]
        sqs.delete_message_batch(QueueUrl=url, Entries=entries)
