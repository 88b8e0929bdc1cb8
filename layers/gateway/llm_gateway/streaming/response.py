"""An HTTP answer whose body is written while it is produced.

A handler returns one instead of API Gateway's proxy dict when the answer streams. Whoever runs the
handler with a streaming transport (the streaming Lambda runtime, the local bridge) writes the status and
headers first (API Gateway's streaming prelude), then each item of ``body`` as it comes, flushing each.
When the caller goes away, the writer calls ``body.close()``: the producer's ``finally`` (and the
``GeneratorExit`` it sees) stops the provider call and records the attempt as cancelled.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field


@dataclass
class StreamingResponse:
    status_code: int
    headers: dict[str, str]
    body: Generator[bytes, None, None]
    cookies: list[str] = field(default_factory=list)
