"""The official openai client pointed at a local stack, as the integration tests use it."""

from __future__ import annotations

import openai

from local.stack import LocalStack

DEFAULT_KEY = "key-a"  # tests/conftest.py: key-a -> tenant-a


def openai_client(stack: LocalStack, key: str = DEFAULT_KEY) -> openai.OpenAI:
    """Sends the key as ``x-api-key`` (the bearer path has its own tests); no SDK retries, so every
    refusal reaches the test as it was answered."""
    return openai.OpenAI(
        base_url=f"{stack.api_url}/v1",
        api_key="unused",
        default_headers={"x-api-key": key},
        max_retries=0,
        timeout=60,
    )
