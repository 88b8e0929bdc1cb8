import pytest
from pydantic import ValidationError

from llm_gateway.errors import InvalidRequestError, PayloadTooLargeError
from llm_gateway.http import framing as api
from llm_gateway.models import CompletionRequest, JsonSchemaFormat, Message, Usage


def test_request_requires_messages():
    with pytest.raises(ValidationError):
        CompletionRequest.model_validate({"messages": []})


def test_request_rejects_blank_messages():
    with pytest.raises(ValidationError, match="some text"):
        CompletionRequest.model_validate({"messages": [{"role": "user", "content": "   "}]})


def test_request_rejects_model_and_tier_together():
    with pytest.raises(ValidationError, match="either"):
        CompletionRequest.model_validate({"model": "gpt-4o-mini", "tier": "fast", "messages": [_hi()]})


def test_request_rejects_unknown_fields_and_bad_ranges():
    with pytest.raises(ValidationError):
        CompletionRequest.model_validate({"messages": [_hi()], "temprature": 0})
    with pytest.raises(ValidationError):
        CompletionRequest.model_validate({"messages": [_hi()], "temperature": 3})
    with pytest.raises(ValidationError):
        CompletionRequest.model_validate({"messages": [_hi()], "tier": "cheapest"})


def test_capabilities_follow_content():
    request = CompletionRequest.model_validate(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this"},
                        {"type": "image_url", "url": "data:image/png;base64,AA"},
                    ],
                }
            ],
            "response_format": {"type": "json_schema", "schema": {"type": "object"}},
        }
    )
    assert request.required_capabilities() == {"vision", "json"}
    assert isinstance(request.response_format, JsonSchemaFormat)


def test_usage_adds_up():
    total = Usage(input_tokens=3, output_tokens=4, cached_input_tokens=1) + Usage(input_tokens=10, output_tokens=1)
    assert (total.input_tokens, total.output_tokens, total.cached_input_tokens, total.total_tokens) == (13, 5, 1, 18)


def test_message_text_skips_images():
    message = Message.model_validate(
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "a"},
                {"type": "image_url", "url": "x"},
                {"type": "text", "text": "b"},
            ],
        }
    )
    assert message.text() == "a\nb"
    assert message.has_image()


def test_body_parsing_errors_are_typed():
    with pytest.raises(InvalidRequestError, match="not valid JSON"):
        api.parse_json_body("{nope", max_bytes=1000)
    with pytest.raises(InvalidRequestError, match="empty"):
        api.parse_json_body("", max_bytes=1000)
    with pytest.raises(PayloadTooLargeError) as info:
        api.parse_json_body('{"a": "' + "x" * 2000 + '"}', max_bytes=1000)
    assert info.value.http_status == 413


def test_validation_error_names_the_field():
    with pytest.raises(InvalidRequestError) as info:
        api.validate(CompletionRequest, {"messages": [{"role": "robot", "content": "hi"}]})
    assert info.value.details["param"].startswith("messages.0.role")
    assert info.value.http_status == 400


def test_named_errors_carry_the_code_as_class_name():
    err = api.named_error(InvalidRequestError("bad"))
    assert type(err).__name__ == "InvalidRequestError"
    assert '"code": "invalid_request"' in str(err)


def _hi():
    return {"role": "user", "content": "hi"}
