"""The edge's answers in memory: the one error shape on the gateway's routes and OpenAI's on the chat
route, Retry-After, UTF-8 bodies that stay encodable, and route_not_found."""

from __future__ import annotations

import json

from llm_gateway.errors import AllProvidersFailedError, InvalidRequestError, RateLimitedError
from llm_gateway.http import answers


def test_gateway_routes_answer_code_message_retryable_and_details() -> None:
    err = InvalidRequestError("messages.0.role: bad", details={"param": "messages.0.role"})
    assert answers.error_body(err) == {
        "error": {
            "code": "invalid_request",
            "message": "messages.0.role: bad",
            "details": {"param": "messages.0.role"},
            "retryable": False,
        }
    }


def test_the_chat_route_answers_openais_shape_with_the_same_code_and_retryable() -> None:
    limited = RateLimitedError("slow down", provider="openai", retry_after=2.4)
    err = AllProvidersFailedError.for_last("every provider failed", attempts=[], last_error=limited)
    body = answers.error_body(err, openai_style=True)["error"]
    assert body == {
        "message": "every provider failed",
        "type": "rate_limit_error",
        "param": None,
        "code": "rate_limited",
        "retryable": True,
    }
    assert answers.error_headers(err) == {"retry-after": "2"}
    assert answers.error_headers(InvalidRequestError("x")) == {}


def test_bodies_are_utf8_and_stay_encodable_with_a_lone_surrogate() -> None:
    assert answers.encode({"summary": "東京"}) == '{"summary":"東京"}'  # 3 bytes a character, not \\u escapes
    text = answers.encode({"content": "a\ud800b"})  # e.g. a provider's broken output
    text.encode("utf-8")  # what Lambda and the bridge do with it: must not raise
    assert json.loads(text) == {"content": "a\ud800b"}


def test_an_unknown_route_is_route_not_found_naming_method_and_path() -> None:
    err = answers.route_not_found("DELETE", "/v1/nowhere")
    assert (err.http_status, err.code, err.retryable) == (404, "route_not_found", False)
    assert err.message == "no route for DELETE /v1/nowhere"
    assert len(answers.route_not_found("GET", "/" + "x" * 5000).message) < 260  # a caller's path, cut
