"""Amazon Bedrock Runtime's Converse API dialect (``POST /model/{modelId}/converse``, and
``/converse-stream`` for the same answers as eventstream frames: local/simulator/bedrock_stream.py).

Like Bedrock, it refuses a request without a SigV4 ``Authorization`` header (403, error type in
``x-amzn-errortype``, body ``{"message": ...}``) and checks that the header is well formed: algorithm,
credential scope ``<key>/<yyyymmdd>/<region>/bedrock/aws4_request`` matching ``x-amz-date``, signed
headers that include ``host`` and ``x-amz-date``, a 64-hex signature. It cannot check the signature
itself (it does not know the secret); tests recompute it from the recorded request.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from local.simulator.bedrock_stream import (
    STREAM_EXCEPTIONS,
    converse_frames,
    fault_frame,
    malformed_frames,
    stream_response,
)
from local.simulator.dialect import Dialect, _block_texts, _positive_int
from local.simulator.faults import Fault
from local.simulator.tool_calls import PlannedCall, SimTool, ToolTurns
from local.simulator.wire import _JSON, Answer, ChatRequest, Json, Response, _ident, _json_response

_AUTH = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[A-Za-z0-9]{1,128})/(?P<date>\d{8})/(?P<region>[a-z0-9-]+)/"
    r"(?P<service>[a-z0-9-]+)/aws4_request, ?SignedHeaders=(?P<signed>[a-z0-9;-]+), ?Signature=(?P<sig>[0-9a-f]{64})"
)
_AMZ_DATE = re.compile(r"\d{8}T\d{6}Z")
_FIELDS = frozenset(
    {
        "messages", "system", "inferenceConfig", "toolConfig", "guardrailConfig", "additionalModelRequestFields",
        "additionalModelResponseFieldPaths", "promptVariables", "requestMetadata", "performanceConfig",
    }
)  # fmt: skip
_IMAGE_FORMATS = frozenset({"png", "jpeg", "gif", "webp"})
_ERROR_NAMESPACE = "http://internal.amazon.com/coral/com.amazon.bedrock/"


class BedrockDialect(Dialect):
    """Bedrock Runtime Converse."""

    name = "bedrock"
    CONTEXT_LIMIT = 200_000
    # Bedrock's own, beyond the shared ones; the stream_* ones are played in a ConverseStream answer only.
    EXTRA_STREAM_FAULTS = frozenset(STREAM_EXCEPTIONS) - {"stream_error"}
    EXTRA_FAULTS = frozenset({"model_not_ready", "model_timeout"}) | EXTRA_STREAM_FAULTS
    _STOP = {"stop": "end_turn", "length": "max_tokens", "content_filter": "content_filtered"}

    def error(self, status: int, type_: str, message: str) -> Response:
        headers = {"x-amzn-ErrorType": f"{type_}:{_ERROR_NAMESPACE}", "x-amzn-RequestId": _ident("", 32)}
        return _json_response(status, {"message": message}, headers)

    def check_auth(self, headers: dict[str, str], query: dict[str, str]) -> Response | None:
        auth = headers.get("authorization", "")
        if not auth:
            return self.error(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
        match = _AUTH.fullmatch(auth.strip())
        if match is None:
            return self.error(403, "IncompleteSignatureException", "Authorization header is not a valid SigV4 header.")
        amz_date = headers.get("x-amz-date", "")
        if not _AMZ_DATE.fullmatch(amz_date) or not amz_date.startswith(match["date"]):
            return self.error(403, "IncompleteSignatureException", "X-Amz-Date is missing or does not match.")
        signed = match["signed"].split(";")
        if "host" not in signed or "x-amz-date" not in signed or any(h not in headers for h in signed):
            return self.error(403, "IncompleteSignatureException", "SignedHeaders must include host and x-amz-date.")
        if match["service"] != "bedrock":
            return self.error(403, "InvalidSignatureException", "Credential should be scoped to 'bedrock'.")
        if match["key"] == "invalid":
            return self.error(
                403, "UnrecognizedClientException", "The security token included in the request is invalid."
            )
        return None

    def invalid_json(self) -> Response:
        return self.error(
            400, "ValidationException", "Malformed input request, please reformat your input and try again."
        )

    def not_found(self, method: str, path: str) -> Response:
        return self.error(404, "UnknownOperationException", "Unknown operation")

    def client_error(self, message: str) -> Response:
        return self.error(400, "ValidationException", message)

    # --- requests ---------------------------------------------------------------------------------

    def parse(self, body: Any, headers: dict[str, str], path_model: str | None) -> ChatRequest | Response:
        if not isinstance(body, dict):
            return self.invalid_json()
        for key in body:
            if key not in _FIELDS:
                return self.client_error(f"Malformed input request: extraneous key [{key}] is not permitted")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return self.client_error("The messages field is required and must not be empty.")
        config = body.get("inferenceConfig") or {}
        max_tokens = config.get("maxTokens") if isinstance(config, dict) else None
        if max_tokens is not None and _positive_int(max_tokens) is None:
            return self.client_error("inferenceConfig.maxTokens must be a positive integer")
        problem = _messages_problem(messages, has_tools=isinstance(body.get("toolConfig"), dict))
        if problem:
            return self.client_error(problem)
        req = ChatRequest(self.name, path_model or "", [], max_tokens=max_tokens)
        system = "".join(b["text"] for b in body.get("system") or [] if isinstance(b, dict) and "text" in b)
        if system:
            req.texts.append(system)
        for message in messages:
            req.texts.append("".join(_converse_texts(message.get("content"))))
        return self._tools(body, messages, req)

    def _tools(self, body: Json, messages: list[Json], req: ChatRequest) -> ChatRequest | Response:
        config = body.get("toolConfig")
        if not isinstance(config, dict):
            return req
        specs = [t.get("toolSpec") for t in config.get("tools") or [] if isinstance(t, dict)]
        tools = [s for s in specs if isinstance(s, dict) and isinstance(s.get("name"), str)]
        if not tools or len(tools) != len(config.get("tools") or []):
            return self.client_error("toolConfig.tools must hold at least one toolSpec with a name")
        schemas = {t["name"]: (t.get("inputSchema") or {}).get("json") or {} for t in tools}
        choice = config.get("toolChoice") or {"auto": {}}
        named = choice.get("tool", {}).get("name") if isinstance(choice.get("tool"), dict) else None
        if "tool" in choice and named not in schemas:
            return self.client_error(f"toolChoice names a tool that is not in toolConfig.tools: {named}")
        turns = ToolTurns(tools=[SimTool(name, schema) for name, schema in schemas.items()])
        turns.mode = "named" if "tool" in choice else "any" if "any" in choice else "auto"
        turns.named = named
        blocks_of = [[b for b in m.get("content") or [] if isinstance(b, dict)] for m in messages]
        turns.called = [str(b["toolUse"].get("name")) for blocks in blocks_of for b in blocks if "toolUse" in b]
        results = [b["toolResult"] for b in blocks_of[-1] if "toolResult" in b]
        if results:
            turns.results_after = ["".join(_converse_texts(r.get("content"))) for r in results]
            turns.last_user_text = "".join(b.get("text", "") for b in blocks_of[-1] if "text" in b)
        else:
            users = [m for m in messages if m.get("role") == "user"]
            turns.last_user_text = "".join(_converse_texts(users[-1].get("content"))) if users else ""
        if len(tools) == 1 and turns.mode == "named" and not messages_have_tool_blocks(blocks_of):
            # One forced tool and no tool history: how structured output is asked for; answered with it.
            req.tool_name = str(named)
            req.schema = schemas[str(named)] or {"type": "object"}
            return req
        req.tool_turns = turns
        return req

    # --- answers ----------------------------------------------------------------------------------

    def render(self, req: ChatRequest, answer: Answer) -> Response:
        body = self._converse_body(req, answer)
        headers = {"x-amzn-RequestId": _ident("", 32)}
        if req.stream:  # ConverseStream: the same answer, as eventstream frames
            return stream_response(converse_frames(body), headers)
        return _json_response(200, body, headers)

    def stream_fault_event(self, fault: Fault) -> bytes:
        return fault_frame(fault.name)

    def _converse_body(self, req: ChatRequest, answer: Answer) -> Json:
        content: list[Json]
        if answer.finish == "content_filter":
            content, stop = [{"text": answer.text or "The generated text has been blocked."}], "content_filtered"
        elif answer.tool_calls:
            content, stop = _tool_uses(answer.tool_calls), "tool_use"
        elif answer.tool_input is not None:
            use = {"toolUseId": _ident("tooluse_", 22), "name": req.tool_name, "input": answer.tool_input}
            content = [{"toolUse": use}]
            stop = "tool_use" if answer.finish == "stop" else self._STOP[answer.finish]
        else:
            content, stop = [{"text": answer.text}], self._STOP[answer.finish]
        usage = {
            # Converse reports cache reads apart from (not inside) inputTokens, as Anthropic does.
            "inputTokens": answer.input_tokens - answer.cached_tokens,
            "outputTokens": answer.output_tokens,
            "totalTokens": answer.input_tokens + answer.output_tokens,
            "cacheReadInputTokens": answer.cached_tokens,
            "cacheWriteInputTokens": 0,
        }
        return {
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": stop,
            "usage": usage,
            "metrics": {"latencyMs": 1},
        }

    def fault(self, fault: Fault, req: ChatRequest) -> Response:
        name = fault.name
        if name == "rate_limit":
            return self.error(429, "ThrottlingException", "Too many requests, please wait before trying again.")
        if name == "server_error":
            return self.error(500, "InternalServerException", "The server encountered an internal error.")
        if name == "overloaded":
            return self.error(503, "ServiceUnavailableException", "The service is unavailable. Try again later.")
        if name == "model_not_ready":
            return self.error(429, "ModelNotReadyException", "The model is not ready to serve requests.")
        if name == "model_timeout":
            return self.error(408, "ModelTimeoutException", "The model took too long to respond.")
        if name == "auth":
            return self.error(
                403, "AccessDeniedException", "You don't have access to the model with the specified model ID."
            )
        if name == "bad_request":
            return self.client_error("Malformed input request: simulated bad request")
        if name == "context_length":
            return self.client_error("Input is too long for requested model.")
        if name == "content_filter":
            return self.render(req, Answer("", "content_filter", req.input_tokens, 0))
        if name in ("malformed", "malformed_shape") and req.stream:
            return stream_response(malformed_frames(bad_shape=name == "malformed_shape"), {})
        if name == "malformed":
            return Response(
                200, b'{"output": {"message": {"role": "assistant", "content": [{"te', {"Content-Type": _JSON}
            )
        if name == "malformed_shape":
            return _json_response(200, {"stopReason": "end_turn", "metrics": {"latencyMs": 1}})
        raise ValueError(name)


def _converse_texts(content: Any) -> list[str]:
    texts: list[str] = []
    for block in content if isinstance(content, list) else []:
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif isinstance(block.get("toolResult"), dict):
            texts.extend(_converse_texts(block["toolResult"].get("content")))
        elif isinstance(block.get("toolUse"), dict):
            texts.extend(_block_texts([{"type": "tool_use", "input": block["toolUse"].get("input", {})}]))
    return texts


def messages_have_tool_blocks(blocks_of: list[list[Json]]) -> bool:
    return any("toolUse" in b or "toolResult" in b for blocks in blocks_of for b in blocks)


def _messages_problem(messages: list[Any], *, has_tools: bool) -> str | None:
    """What Converse refuses in ``messages``, in its wording where known."""
    previous = None
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            return f"messages.{index}.role must be user or assistant"
        role = message["role"]
        if index == 0 and role != "user":
            return "A conversation must start with a user message."
        if role == previous:
            return "A conversation must alternate between user and assistant roles."
        previous = role
        content = message.get("content")
        if not isinstance(content, list) or not content:
            return f"messages.{index}.content must be a non-empty list of content blocks"
        for position, block in enumerate(content):
            problem = _block_problem(block, has_tools=has_tools)
            if problem:
                return f"messages.{index}.content.{position}: {problem}"
    return None


def _block_problem(block: Any, *, has_tools: bool) -> str | None:
    if not isinstance(block, dict) or len(block) != 1:
        return "a content block holds exactly one of text, image, toolUse, toolResult"
    ((kind, value),) = block.items()
    if kind == "text":
        return (
            None if isinstance(value, str) and value.strip() else "The text field in the ContentBlock object is blank."
        )
    if kind == "image":
        if not isinstance(value, dict) or value.get("format") not in _IMAGE_FORMATS:
            return "image.format must be one of png, jpeg, gif, webp"
        data = (value.get("source") or {}).get("bytes")
        try:
            base64.b64decode(data or "", validate=True)
        except (binascii.Error, TypeError, ValueError):
            return "image.source.bytes must be base64"
        return None if data else "image.source.bytes is required"
    if kind == "cachePoint":  # a prompt-caching checkpoint: accepted, as Bedrock does for models that cache
        return None if value == {"type": "default"} else 'cachePoint must be {"type": "default"}'
    if kind in ("toolUse", "toolResult"):
        if not has_tools:
            return "The toolConfig field must be defined when using toolUse and toolResult content blocks."
        return None if isinstance(value, dict) and value.get("toolUseId") else f"{kind}.toolUseId is required"
    return f"unsupported content block {kind!r}"


def _tool_uses(calls: list[PlannedCall]) -> list[Json]:
    return [{"toolUse": {"toolUseId": _ident("tooluse_", 22), "name": c.name, "input": c.arguments}} for c in calls]
