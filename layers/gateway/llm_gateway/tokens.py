"""Token estimates that need no tokenizer download (nothing is fetched at run time in Lambda)."""

from __future__ import annotations

import math

from .models import Message

CHARS_PER_TOKEN = 4.0  # a conservative average for English across the supported providers' tokenizers
MESSAGE_OVERHEAD_TOKENS = 4  # role markers and separators each provider adds per turn
IMAGE_TOKENS = 1_000  # a mid-size image; providers charge 85-1,600 depending on size and detail
CHARS_PER_DIGIT_TOKEN = 3.0  # cl100k/o200k-style tokenizers split numbers into groups of at most 3 digits
BYTES_PER_OTHER_TOKEN = 3.0  # outside ASCII, byte-level BPE merges less: ~1 token per CJK character


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


def estimate_message_tokens(messages: list[Message]) -> int:
    total = 0
    for message in messages:
        total += MESSAGE_OVERHEAD_TOKENS + estimate_text_tokens(message.text())
        if message.has_image():
            total += IMAGE_TOKENS
    return total
