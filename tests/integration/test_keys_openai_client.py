"""The official ``openai`` client against the key check as the edge will call it (keys.authenticate,
keys.admit, keys.settle around the real gateway core, errors rendered with openai_error_body), served
over a socket by a minimal stand-in for the edge until the shared HTTP edge calls it itself. Keys live
in the local stack's keys table; the providers are the simulator."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import openai
import pytest

from llm_gateway import keys
from llm_gateway.config import Settings
from llm_gateway.errors import GatewayError
from llm_gateway.http import openai_chat
from llm_gateway.interfaces import RequestContext
from llm_gateway.keys.admin import KeyAdmin, KeySpec
from llm_gateway.keys.store import KeyStore
from llm_gateway.routing.deadline import Deadline
from llm_gateway.runtime import run_sync
from tests.support.accounting import gateway_from_env, unique

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_real_aws")]

TTL_S = 0.5
HELLO = [{"role": "user", "content": "Hello"}]


class EdgeStandIn:
    """authenticate -> admit -> core -> settle, as docs/keys.md asks of the edge."""

    def __init__(self, table: str) -> None:
        self.settings = Settings(keys_table=table, key_cache_ttl_s=TTL_S)
        self.keys = keys.KeyService(self.settings)
        self.gateway = gateway_from_env(breaker_backend="off", cache_backend="off")

    def chat(self, headers: dict[str, str], body: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
        try:
            verified = self.keys.authenticate(headers)
            request = openai_chat.to_gateway_request(openai_chat.ChatCompletionsBody.model_validate(body))
            models = keys.requested_models(request, self.settings.default_tier)
            estimate = keys.estimated_tokens(request, self.settings.default_max_tokens)
            admission = self.keys.admit(verified, models, estimate)
            ctx = RequestContext(
                tenant=verified.tenant, request_id=uuid.uuid4().hex, deadline=Deadline(20), tags=verified.context_tags()
            )
            try:
                result = run_sync(self.gateway.complete(request, ctx))
            except GatewayError:
                self.keys.settle(admission, 0)
                raise
            self.keys.settle(admission, result.usage.input_tokens + result.usage.output_tokens)
            return 200, openai_chat.to_chat_completion(result), {}
        except GatewayError as err:
            extra = {"retry-after": str(round(err.retry_after))} if err.retry_after else {}
            return err.http_status, openai_chat.openai_error_body(err), extra


@pytest.fixture
def edge(local_stack: Any, simulator: Any) -> Iterator[tuple[str, EdgeStandIn]]:
    stand_in = EdgeStandIn(local_stack.physical["KeysTable"])

    class Handler(BaseHTTPRequestHandler):
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            status, body, extra = stand_in.chat(dict(self.headers.items()), json.loads(raw or b"{}"))
            data = json.dumps(body).encode()
            self.send_response(status)
            for name, value in {"content-type": "application/json", **extra}.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", stand_in
    finally:
        server.shutdown()
        server.server_close()


def client(url: str, api_key: str, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=api_key, max_retries=0, timeout=30, **kw)


def test_the_openai_client_with_only_api_key_set(local_stack, edge) -> None:
    url, _ = edge
    admin = KeyAdmin(KeyStore(local_stack.physical["KeysTable"]))
    secret, _ = admin.create(KeySpec(tenant=unique(), allowed_models=["tier:fast", "gpt-4o-mini"]))
    answer = client(url, secret).chat.completions.create(model="tier:fast", messages=HELLO)  # type: ignore[arg-type]
    assert answer.choices[0].message.content
    anthropic_style = client(url, "unused", default_headers={"x-api-key": secret})
    assert anthropic_style.chat.completions.create(model="gpt-4o-mini", messages=HELLO).choices  # type: ignore[arg-type]

    with pytest.raises(openai.AuthenticationError) as wrong:
        client(url, secret[:-3] + "zzz").chat.completions.create(model="tier:fast", messages=HELLO)  # type: ignore[arg-type]
    assert wrong.value.code == "invalid_api_key"
    # The SDK will not send a request without a key: a plain HTTP client sends one.
    missing = httpx.post(f"{url}/chat/completions", json={"model": "tier:fast", "messages": HELLO}, timeout=30)
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "missing_api_key"
    assert missing.json()["error"]["type"] == "authentication_error"
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client(url, secret).chat.completions.create(model="gpt-4o", messages=HELLO)  # type: ignore[arg-type]
    assert refused.value.code == "model_not_allowed"


def test_rate_limit_and_revocation_reach_the_client(local_stack, edge) -> None:
    url, _ = edge
    admin = KeyAdmin(KeyStore(local_stack.physical["KeysTable"]))
    secret, record = admin.create(KeySpec(tenant=unique(), requests_per_minute=2))
    sdk = client(url, secret)
    now = time.time()
    if now % 60 > 55:  # keep the three calls inside one fixed minute
        time.sleep(60 - now % 60 + 0.1)
    for _ in range(2):
        sdk.chat.completions.create(model="tier:fast", messages=HELLO)  # type: ignore[arg-type]
    with pytest.raises(openai.RateLimitError) as limited:
        sdk.chat.completions.create(model="tier:fast", messages=HELLO)  # type: ignore[arg-type]
    assert limited.value.code == "rate_limited"
    assert 1 <= int(limited.value.response.headers["retry-after"]) <= 60

    other, record = admin.create(KeySpec(tenant=unique()))
    sdk = client(url, other)
    sdk.chat.completions.create(model="tier:fast", messages=HELLO)  # type: ignore[arg-type]
    admin.revoke(record.key_id)
    time.sleep(TTL_S + 0.2)  # the edge's cache TTL: after it, the revoked key is refused
    with pytest.raises(openai.AuthenticationError):
        sdk.chat.completions.create(model="tier:fast", messages=HELLO)  # type: ignore[arg-type]
