"""Token estimates that need no tokenizer download (nothing is fetched at run time in Lambda)."""

from __future__ import annotations

import math

from llm_gateway.models import ImagePart, Message

CHARS_PER_TOKEN = 4.0  # a conservative average for English across the supported providers' tokenizers
MESSAGE_OVERHEAD_TOKENS = 4  # role markers and separators each provider adds per turn
IMAGE_TOKENS = 1_000  # a mid-size image; providers charge 85-1,600 depending on size and detail
CHARS_PER_DIGIT_TOKEN = 3.0  # cl100k/o200k-style tokenizers split numbers into groups of at most 3 digits
BYTES_PER_OTHER_TOKEN = 3.0  # outside ASCII, byte-level BPE merges less: ~1 token per CJK character

# Worst-case input for budget reservations (see budgets.py: a reservation must cover what is billed).
ESTIMATE_MARGIN = 1.25  # real tokenizers may count up to this much more than the estimate above
ESTIMATE_SLACK_TOKENS = 16  # request framing the per-message overhead does not cover
# The most one image can be billed: Anthropic resizes to ~1.15 MP (~1,600 tokens); OpenAI's largest
# high-detail tiling or patch budget is ~2,500; Gemini bills 258 per 768 px tile, ~16 tiles (4,128
# tokens) for a 3,072 px image, the default for Gemini and any other provider.
IMAGE_MAX_TOKENS = {"anthropic": 1_600, "openai": 2_500}
DEFAULT_IMAGE_MAX_TOKENS = 4_200
# A native schema is billed as input, plus the provider's own wrapper: Anthropic adds a ~350-token
# system prompt when a tool call is forced; OpenAI and Gemini add less around a response schema.
NATIVE_SCHEMA_OVERHEAD_TOKENS = 350


def estimate_text_tokens(text: str) -> int:
    """Never below chars/4; higher for digits and non-ASCII text, where chars/4 undercounts.

    Linear in its counts (before the ceiling), so the estimates of pieces add up to at least the
    estimate of the whole: chunking relies on that. Only C-speed string scans, cheap on the hot path.
    """
    if not text:
        return 0
    digits = sum(map(text.count, "0123456789"))
    if text.isascii():
        return math.ceil((len(text) - digits) / CHARS_PER_TOKEN + digits / CHARS_PER_DIGIT_TOKEN)
    ascii_chars = len(text.encode("ascii", "ignore"))
    other_bytes = len(text.encode("utf-8", "surrogatepass")) - ascii_chars
    return math.ceil(
        (ascii_chars - digits) / CHARS_PER_TOKEN + digits / CHARS_PER_DIGIT_TOKEN + other_bytes / BYTES_PER_OTHER_TOKEN
    )


def billable_text(message: Message) -> str:
    """What a provider reads of a message: its text, and the name and arguments of each tool call."""
    calls = message.tool_calls or []
    if not calls:
        return message.text()
    return "\n".join([message.text(), *(f"{c.function.name} {c.function.arguments}" for c in calls)])


def estimate_message_tokens(messages: list[Message]) -> int:
    total = 0
    for message in messages:
        total += MESSAGE_OVERHEAD_TOKENS + estimate_text_tokens(billable_text(message))
        if message.has_image():
            total += IMAGE_TOKENS
    return total


def image_count(message: Message) -> int:
    if not isinstance(message.content, list):
        return 0
    return sum(1 for part in message.content if isinstance(part, ImagePart))


def worst_case_input_tokens(messages: list[Message], *, provider: str, native_schema: str | None = None) -> int:
    """The most input tokens ``provider`` should bill for these messages as sent (instructions included).

    ``native_schema`` is the JSON text of a schema sent natively (tool definition or response format).
    Text estimates get ``ESTIMATE_MARGIN``; images count at their maximum.
    """
    text = sum(MESSAGE_OVERHEAD_TOKENS + estimate_text_tokens(billable_text(m)) for m in messages)
    if native_schema is not None:
        text += estimate_text_tokens(native_schema) + NATIVE_SCHEMA_OVERHEAD_TOKENS
    images = sum(image_count(m) for m in messages) * IMAGE_MAX_TOKENS.get(provider, DEFAULT_IMAGE_MAX_TOKENS)
    return math.ceil(text * ESTIMATE_MARGIN) + ESTIMATE_SLACK_TOKENS + images
