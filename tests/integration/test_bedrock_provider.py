"""The Bedrock adapter against the simulator's Converse dialect, over real sockets.

Each request is captured as httpx sent it, and its SigV4 signature is recomputed here with botocore
from the session's fake credentials (``testing``/``testing``, tests/conftest.py): a wrong canonical
path, body or header set would not match.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from typing import Any

import httpx
import pytest

from llm_gateway.errors import (
    ContentFilteredError,
    ContextTooLongError,
    MalformedResponseError,
    ProviderAuthError,
    ProviderBadRequestError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitedError,
)
from llm_gateway.models import ProviderRequest, ProviderResponse
from llm_gateway.providers.bedrock import BedrockProvider

pytestmark = pytest.mark.integration

MODEL = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
SECRET = "testing"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def call(
    sim: Any, request: ProviderRequest, *, region: str = "us-east-1", sent: list[httpx.Request] | None = None
) -> ProviderResponse:
    provider = BedrockProvider(base_url=sim.base_urls()["bedrock"], region=region)

    async def capture(req: httpx.Request) -> None:
        if sent is not None:
            sent.append(req)

    async def go() -> ProviderResponse:
        async with httpx.AsyncClient(event_hooks={"request": [capture]}) as client:
            return await provider.complete(request, client=client, timeout_s=10.0)

    return asyncio.run(go())


def chat(content: str = "Say hello.", **kw: Any) -> ProviderRequest:
    kw.setdefault("model", MODEL)
    kw.setdefault("max_tokens", 200)
    return ProviderRequest.model_validate({"messages": [{"role": "user", "content": content}], **kw})


def expected_signature(req: httpx.Request, region: str) -> str:
    """SigV4 recomputed from the request as sent (RFC-style steps, independent of the adapter's code)."""
    auth = req.headers["authorization"]
    signed = auth.split("SignedHeaders=")[1].split(",")[0].split(";")
    amz_date = req.headers["x-amz-date"]
    day = amz_date[:8]
    # Non-S3 services sign the path URI-encoded once more (so %3A becomes %253A).
    canonical_path = req.url.raw_path.decode().replace("%", "%25")
    canonical_headers = "".join(f"{h}:{req.headers[h].strip()}\n" for h in signed)
    canonical = "\n".join(
        ["POST", canonical_path, "", canonical_headers, ";".join(signed), hashlib.sha256(req.content).hexdigest()]
    )
    scope = f"{day}/{region}/bedrock/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = f"AWS4{SECRET}".encode()
    for part in (day, region, "bedrock", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def test_round_trip_is_signed_and_translated(simulator):
    sent: list[httpx.Request] = []
    request = ProviderRequest.model_validate(
        {
            "model": MODEL,
            "max_tokens": 200,
            "temperature": 1.5,
            "stop": ["END"],
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}],
        }
    )
    result = call(simulator, request, sent=sent)
    assert result.content.startswith(f"[sim bedrock/{MODEL}]")
    assert result.finish_reason == "stop"
    assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0

    [req] = sent
    assert req.url.raw_path.decode() == "/bedrock/model/us.anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"
    auth = req.headers["authorization"]
    assert auth.startswith(f"AWS4-HMAC-SHA256 Credential=testing/{req.headers['x-amz-date'][:8]}/us-east-1/bedrock/")
    assert "host" in auth and "x-amz-date" in auth
    assert auth.rsplit("Signature=", 1)[1] == expected_signature(req, "us-east-1")
    assert "x-api-key" not in req.headers

    [recorded] = simulator.calls("bedrock")
    assert recorded["model"] == MODEL and recorded["status"] == 200
    body = recorded["body"]
    assert body["system"] == [{"text": "Be brief."}]
    assert body["messages"] == [{"role": "user", "content": [{"text": "Say hello."}]}]
    assert body["inferenceConfig"] == {"maxTokens": 200, "temperature": 1.0, "stopSequences": ["END"]}
    assert "toolConfig" not in body


def test_inference_profile_follows_the_region(simulator):
    sent: list[httpx.Request] = []
    call(simulator, chat(), region="eu-west-1", sent=sent)
    assert simulator.calls("bedrock")[0]["model"] == "eu.anthropic.claude-3-5-haiku-20241022-v1:0"
    [req] = sent
    assert "/eu-west-1/bedrock/aws4_request" in req.headers["authorization"]
    assert req.headers["authorization"].rsplit("Signature=", 1)[1] == expected_signature(req, "eu-west-1")


def test_unsigned_request_is_refused_like_bedrock(simulator):
    url = f"{simulator.base_urls()['bedrock']}/model/{MODEL.replace(':', '%3A')}/converse"
    body = {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}
    response = httpx.post(url, json=body, timeout=5)
    assert response.status_code == 403
    assert response.headers["x-amzn-errortype"].startswith("MissingAuthenticationTokenException")
    assert response.json() == {"message": "Missing Authentication Token"}
    forged = httpx.post(url, json=body, headers={"authorization": "AWS4-HMAC-SHA256 nonsense"}, timeout=5)
    assert forged.status_code == 403
    assert forged.headers["x-amzn-errortype"].startswith("IncompleteSignatureException")


def test_unknown_access_key_is_an_auth_error(simulator, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "invalid")
    with pytest.raises(ProviderAuthError) as caught:
        call(simulator, chat())
    assert caught.value.status_code == 403
    assert "UnrecognizedClientException" in caught.value.message


def test_tools_round_trip(simulator):
    first = call(simulator, chat("Use get_weather for Paris.", tools=[WEATHER], tool_choice="auto"))
    assert first.finish_reason == "tool_calls"
    [tool_call] = first.tool_calls or []
    assert tool_call.function.name == "get_weather"
    assert "city" in json.loads(tool_call.function.arguments)
    sent_tools = simulator.calls("bedrock")[0]["body"]["toolConfig"]
    assert sent_tools["toolChoice"] == {"auto": {}}
    assert sent_tools["tools"][0]["toolSpec"]["inputSchema"]["json"]["required"] == ["city"]

    history = [
        {"role": "user", "content": "Use get_weather for Paris."},
        {"role": "assistant", "content": None, "tool_calls": [tool_call.model_dump()]},
        {"role": "tool", "tool_call_id": tool_call.id, "content": "18C and sunny"},
    ]
    second = call(
        simulator,
        ProviderRequest.model_validate({"model": MODEL, "max_tokens": 200, "messages": history, "tools": [WEATHER]}),
    )
    assert second.finish_reason == "stop"
    assert "18C and sunny" in second.content
    turns = simulator.calls("bedrock")[1]["body"]["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[1]["content"][0]["toolUse"]["name"] == "get_weather"
    assert turns[2]["content"][0]["toolResult"]["content"] == [{"text": "18C and sunny"}]


def test_forced_named_tool(simulator):
    result = call(
        simulator,
        chat("Weather please.", tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}}),
    )
    assert [c.function.name for c in result.tool_calls or []] == ["get_weather"]
    assert simulator.calls("bedrock")[0]["body"]["toolConfig"]["toolChoice"] == {"tool": {"name": "get_weather"}}


def test_structured_output_through_a_forced_tool(simulator):
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    request = chat(
        "Extract the person.",
        response_format={"type": "json_schema", "name": "person", "schema": schema},
        native_structured=True,
    )
    result = call(simulator, request)
    answer = json.loads(result.content)
    assert isinstance(answer["name"], str) and isinstance(answer["age"], int)
    assert result.finish_reason == "stop" and not result.tool_calls
    config = simulator.calls("bedrock")[0]["body"]["toolConfig"]
    assert config["toolChoice"] == {"tool": {"name": "person"}}


def test_images_go_as_inline_bytes(simulator):
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "url": f"data:image/png;base64,{png}"},
    ]
    result = call(
        simulator,
        ProviderRequest.model_validate(
            {"model": MODEL, "max_tokens": 50, "messages": [{"role": "user", "content": content}]}
        ),
    )
    assert result.content
    blocks = simulator.calls("bedrock")[0]["body"]["messages"][0]["content"]
    assert blocks[1] == {"image": {"format": "png", "source": {"bytes": png}}}


def test_image_by_url_is_refused_before_any_call(simulator):
    content = [{"type": "image_url", "url": "https://example.com/cat.png"}]
    with pytest.raises(ProviderBadRequestError):
        call(
            simulator,
            ProviderRequest.model_validate(
                {"model": MODEL, "max_tokens": 50, "messages": [{"role": "user", "content": content}]}
            ),
        )
    assert simulator.calls("bedrock") == []


@pytest.mark.parametrize(
    ("fault", "error", "status"),
    [
        ("rate_limit", RateLimitedError, 429),
        ("model_not_ready", ProviderUnavailableError, 429),
        ("overloaded", ProviderUnavailableError, 503),
        ("server_error", ProviderUnavailableError, 500),
        ("model_timeout", ProviderTimeoutError, 408),
        ("auth", ProviderAuthError, 403),
        ("bad_request", ProviderBadRequestError, 400),
        ("context_length", ContextTooLongError, 400),
        ("content_filter", ContentFilteredError, None),
        ("malformed", MalformedResponseError, 200),
        ("malformed_shape", MalformedResponseError, 200),
    ],
)
def test_errors_map_onto_the_exception_tree(simulator, fault, error, status):
    with pytest.raises(ProviderError) as caught:
        call(simulator, chat(f"Hello [[sim:fault={fault}]]"))
    assert type(caught.value) is error
    assert caught.value.provider == "bedrock"
    if status is not None:
        assert caught.value.status_code == status


def test_explicit_fallback_list_from_anthropic_direct_to_claude_on_bedrock(simulator):
    """The gateway's own ``fallback`` list (POST /v1/completions), built from Settings as the functions do."""
    from llm_gateway.config import Settings
    from llm_gateway.interfaces import RequestContext
    from llm_gateway.models import CompletionRequest
    from llm_gateway.routing.deadline import Deadline
    from llm_gateway.routing.retry import RetryPolicy
    from llm_gateway.runtime import run_sync
    from llm_gateway.wiring import build_gateway

    urls = simulator.base_urls()
    settings = Settings.from_env(
        {
            "ANTHROPIC_BASE_URL": urls["anthropic"],
            "ANTHROPIC_API_KEY": "sim-key",
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": urls["bedrock"],
        }
    )
    gateway = build_gateway(settings, retry=RetryPolicy(max_attempts=1, base_delay_s=0.01, max_delay_s=0.05))
    assert sorted(gateway.providers) == ["anthropic", "bedrock"]
    simulator.add_fault("overloaded", provider="anthropic")
    request = CompletionRequest.model_validate(
        {
            "model": "claude-3-5-haiku-latest",
            "fallback": ["anthropic.claude-3-5-haiku-20241022-v1:0"],
            "messages": [{"role": "user", "content": "Say hello."}],
        }
    )
    ctx = RequestContext(tenant="t1", request_id="r1", deadline=Deadline(20.0))
    result = run_sync(gateway.complete(request, ctx))
    assert [(a.provider, a.outcome) for a in result.attempts] == [("anthropic", "error"), ("bedrock", "success")]
    assert result.model == "anthropic.claude-3-5-haiku-20241022-v1:0"
    assert result.cost_usd > 0


def test_simulator_refuses_what_converse_refuses(simulator):
    """The dialect's checks, so that a translation bug shows up as Bedrock's 400 rather than a pass."""
    provider = BedrockProvider(base_url=simulator.base_urls()["bedrock"], region="us-east-1")
    url = f"{simulator.base_urls()['bedrock']}/model/{MODEL.replace(':', '%3A')}/converse"

    def post(body: dict) -> httpx.Response:
        content = json.dumps(body).encode()
        return httpx.post(url, content=content, headers=provider._signed_headers(url, content, MODEL), timeout=5)

    def user(*blocks: dict) -> dict:
        return {"role": "user", "content": list(blocks)}

    refused = [
        {"messages": [{"role": "assistant", "content": [{"text": "hi"}]}]},
        {"messages": [user({"text": "a"}), user({"text": "b"})]},
        {"messages": [user({"text": "  "})]},
        {"messages": [user({"toolResult": {"toolUseId": "t1", "content": [{"text": "x"}]}})]},
        {"messages": [user({"text": "a"})], "seed": 1},
        {"messages": [user({"image": {"format": "bmp", "source": {"bytes": "AAAA"}}})]},
    ]
    for body in refused:
        response = post(body)
        assert response.status_code == 400, body
        assert response.headers["x-amzn-errortype"].startswith("ValidationException"), body
        assert set(response.json()) == {"message"}
    cached = post({"messages": [user({"text": "long prefix"}, {"cachePoint": {"type": "default"}}, {"text": "q"})]})
    assert cached.status_code == 200, cached.text
