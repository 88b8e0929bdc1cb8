"""Anthropic Messages API dialect."""

from __future__ import annotations

from typing import Any

from local.simulator import tool_wire
from local.simulator.anthropic_stream import anthropic_stream, anthropic_stream_fault_event
from local.simulator.dialect import Dialect, _block_texts, _positive_int
from local.simulator.faults import Fault
from local.simulator.schema_rules import anthropic_tools_problem
from local.simulator.wire import (
    _JSON,
    Answer,
    ChatRequest,
    Json,
    Response,
    _ident,
    _json_response,
    _num,
)


class AnthropicDialect(Dialect):
    """Anthropic Messages API."""

    name = "anthropic"
    CONTEXT_LIMIT = 200_000
    _STOP = {"stop": "end_turn", "length": "max_tokens", "content_filter": "refusal"}

    def error(self, status: int, type_: str, message: str, headers: dict[str, str] | None = None) -> Response:
        request_id = _ident("req_011", 21)
        body = {"type": "error", "error": {"type": type_, "message": message}, "request_id": request_id}
        extra = {"request-id": request_id}
        if status == 429 or status >= 500:
            extra["x-should-retry"] = "true"
        return _json_response(status, body, {**extra, **(headers or {})})

    def check_auth(self, headers: dict[str, str], query: dict[str, str]) -> Response | None:
        key = headers.get("x-api-key", "")
        auth = headers.get("authorization", "")
        if not key and auth.lower().startswith("bearer "):
            key = auth[7:].strip()  # the anthropic SDK (2.x) sends the API key as a bearer token
        if not key:
            return self.error(401, "authentication_error", "x-api-key header is required")
        if key == "invalid":
            return self.error(401, "authentication_error", "invalid x-api-key")
        return None

    def invalid_json(self) -> Response:
        return self.error(400, "invalid_request_error", "There was an error parsing the body of your request.")

    def not_found(self, method: str, path: str) -> Response:
        return self.error(404, "not_found_error", "Not Found")

    def client_error(self, message: str) -> Response:
        return self.error(400, "invalid_request_error", message)

    def parse(self, body: Any, headers: dict[str, str], path_model: str | None) -> ChatRequest | Response:
        if not headers.get("anthropic-version"):
            return self.error(400, "invalid_request_error", "anthropic-version: header is required")
        if not isinstance(body, dict):
            return self.invalid_json()
        for field_name in ("model", "max_tokens", "messages"):
            if field_name not in body:
                return self.error(400, "invalid_request_error", f"{field_name}: Field required")
        model, max_tokens, messages = body["model"], body["max_tokens"], body["messages"]
        if not isinstance(model, str) or not model:
            return self.error(400, "invalid_request_error", "model: Input should be a valid string")
        if _positive_int(max_tokens) is None:
            return self.error(400, "invalid_request_error", "max_tokens: Input should be a valid integer")
        if not isinstance(messages, list) or not messages:
            return self.error(400, "invalid_request_error", "messages: at least one message is required")
        stream = body.get("stream")
        if stream is not None and not isinstance(stream, bool):
            return self.error(400, "invalid_request_error", "stream: Input should be a valid boolean")
        extra = self._extra_inputs(body)
        if extra is not None:
            return extra

        req = ChatRequest(self.name, model, [], max_tokens=max_tokens, stream=stream is True)
        system = "".join(_block_texts(body.get("system")))
        if system:
            req.texts.append(system)
        for message in messages:
            if isinstance(message, dict):
                req.texts.append("".join(_block_texts(message.get("content"))))
        turns = tool_wire.anthropic_turns(body)
        if isinstance(turns, str):
            return self.error(400, "invalid_request_error", turns)
        req.tool_turns = turns
        return self._forced_tool(body, req)

    # The Messages API's top-level fields; it refuses any other (n, logprobs, seed, penalties...).
    _FIELDS = frozenset(
        {
            "model", "messages", "max_tokens", "system", "temperature", "top_p", "top_k", "stop_sequences",
            "stream", "metadata", "tools", "tool_choice", "thinking", "service_tier", "container",
            "mcp_servers", "context_management",
        }
    )  # fmt: skip

    def _extra_inputs(self, body: Json) -> Response | None:
        for key in body:
            if key not in self._FIELDS:
                return self.error(400, "invalid_request_error", f"{key}: Extra inputs are not permitted")
        metadata = body.get("metadata")
        if metadata is not None:
            if not isinstance(metadata, dict):
                return self.error(400, "invalid_request_error", "metadata: Input should be a valid dictionary")
            for key in metadata:
                if key != "user_id":
                    return self.error(400, "invalid_request_error", f"metadata.{key}: Extra inputs are not permitted")
        return None

    def _forced_tool(self, body: Json, req: ChatRequest) -> ChatRequest | Response:
        """tool_choice {"type":"tool"} is how structured output is requested (and forces that call)."""
        choice = body.get("tool_choice")
        tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
        problem = anthropic_tools_problem(tools)
        if problem:
            return self.error(400, "invalid_request_error", problem)
        if not isinstance(choice, dict) or choice.get("type") not in ("tool", "any"):
            return req
        if not tools:
            return self.error(
                400, "invalid_request_error", "tool_choice: tool_choice may only be specified while providing tools"
            )
        if choice["type"] == "any":
            return req  # any tool: the tool-calling model (tool_calls.py) picks which
        wanted = choice.get("name")
        tool = next((t for t in tools if t.get("name") == wanted), None)
        if tool is None:
            return self.error(400, "invalid_request_error", f"Tool '{wanted}' not found in provided tools")
        req.tool_name = str(wanted)
        schema = tool.get("input_schema")
        req.schema = schema if isinstance(schema, dict) else {"type": "object"}
        return req

    def render(self, req: ChatRequest, answer: Answer) -> Response:
        content: list[Json]
        if answer.finish == "content_filter":
            content = [{"type": "text", "text": answer.text}] if answer.text else []
            stop_reason = "refusal"
        elif answer.tool_calls:
            content = tool_wire.anthropic_blocks(answer.tool_calls)
            stop_reason = "tool_use"
        elif answer.tool_input is not None:
            content = [
                {"type": "tool_use", "id": _ident("toolu_01", 22), "name": req.tool_name, "input": answer.tool_input}
            ]
            stop_reason = "tool_use" if answer.finish == "stop" else self._STOP[answer.finish]
        else:
            content = [{"type": "text", "text": answer.text}]
            stop_reason = self._STOP[answer.finish]
        body = {
            "id": _ident("msg_01", 22),
            "type": "message",
            "role": "assistant",
            "model": req.model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {
                # Anthropic reports cache reads separately from (not inside) input_tokens.
                "input_tokens": answer.input_tokens - answer.cached_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": answer.cached_tokens,
                "output_tokens": answer.output_tokens,
                "service_tier": "standard",
            },
        }
        headers = {"request-id": _ident("req_011", 21)}
        if req.stream:
            return anthropic_stream(body, headers)
        return _json_response(200, body, headers)

    def stream_fault_event(self, fault: Fault) -> bytes:
        return anthropic_stream_fault_event(fault.name)

    def fault(self, fault: Fault, req: ChatRequest) -> Response:
        name = fault.name
        if name == "rate_limit":
            ra = _num(fault.retry_after)
            return self.error(
                429,
                "rate_limit_error",
                "This request would exceed the rate limit for your organization of 50 requests per minute. "
                "Please try again later.",
                headers={
                    "retry-after": ra,
                    "anthropic-ratelimit-requests-limit": "50",
                    "anthropic-ratelimit-requests-remaining": "0",
                },
            )
        if name == "server_error":
            return self.error(500, "api_error", "Internal server error")
        if name == "overloaded":
            return self.error(529, "overloaded_error", "Overloaded")
        if name == "auth":
            return self.error(401, "authentication_error", "invalid x-api-key")
        if name == "bad_request":
            return self.error(400, "invalid_request_error", "messages: simulated bad request")
        if name == "context_length":
            total = self.CONTEXT_LIMIT + req.input_tokens
            return self.error(
                400, "invalid_request_error", f"prompt is too long: {total} tokens > {self.CONTEXT_LIMIT} maximum"
            )
        if name == "content_filter":
            return self.render(req, Answer("", "content_filter", req.input_tokens, 0))
        if name == "malformed":
            body = b'{"id": "msg_01sim", "type": "message", "role": "assistant", "content": [{"type": "te'
            return Response(200, body, {"Content-Type": _JSON})
        if name == "malformed_shape":
            shape = {"id": _ident("msg_01", 22), "type": "message", "role": "assistant", "model": req.model}
            return _json_response(200, shape)
        raise ValueError(name)
