"""Token estimates that need no tokenizer download (nothing is fetched at run time in Lambda)."""

from __future__ import annotations

import math

from .models import Message

CHARS_PER_TOKEN = 4.0  # a conservative average for English across the supported providers' tokenizers
MESSAGE_OVERHEAD_TOKENS = 4  # role markers and separators each provider adds per turn
IMAGE_TOKENS = 1_000  # a mid-size image; providers charge 85-1,600 depending on size and detail


def estimate_text_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0


def estimate_message_tokens(messages: list[Message]) -> int:
    total = 0
    for message in messages:
        total += MESSAGE_OVERHEAD_TOKENS + estimate_text_tokens(message.text())
        if message.has_image():
            total += IMAGE_TOKENS
    return total
