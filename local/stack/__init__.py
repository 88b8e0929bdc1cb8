"""The whole gateway on one machine: moto as AWS, the provider simulator, and the handlers in-process.

``LocalStack`` reads ``template.yaml`` and

* starts a moto server (``ThreadedMotoServer``) and points boto3 at it through ``AWS_ENDPOINT_URL``;
* creates the template's DynamoDB tables, SQS queues, S3 buckets and Secrets Manager secrets there;
* starts the provider simulator for every provider without a real key in the environment;
* sets the functions' environment (Globals + function, intrinsics resolved to the local resources);
* serves the template's API routes on an HTTP bridge that behaves like an API Gateway REST API with
  API keys, usage-plan throttling and the 29 s integration timeout (its own errors in the API's
  documented ``{"error": {"code", "message"}}`` shape), sending Lambda proxy events to the handlers;
* delivers S3 notifications and SQS messages to the functions whose events declare them.

Without Docker nothing runs in a container: handlers share this process (and ``os.environ``).
Environment variables that differ between functions are set per invocation under a lock.
"""

from __future__ import annotations

from local.stack.apigw import MalformedProxyResponse, api_gateway_event, http_response
from local.stack.local_stack import LocalStack
from local.stack.settings import (
    DEFAULT_LOCAL_PORT,
    DEFAULT_STACK_NAME,
    DEFAULT_TEMPLATE,
    INTEGRATION_TIMEOUT_S,
    MAX_REQUEST_BYTES,
    PROVIDERS,
    REPO_ROOT,
    SIM_KEY,
    Provider,
    parse_api_keys,
)

__all__ = [
    "DEFAULT_LOCAL_PORT",
    "DEFAULT_STACK_NAME",
    "DEFAULT_TEMPLATE",
    "INTEGRATION_TIMEOUT_S",
    "MAX_REQUEST_BYTES",
    "PROVIDERS",
    "REPO_ROOT",
    "SIM_KEY",
    "LocalStack",
    "MalformedProxyResponse",
    "Provider",
    "api_gateway_event",
    "http_response",
    "parse_api_keys",
]
