"""The context object a handler receives, built from the Runtime API's ``/next`` headers and the
function's reserved environment variables (what the managed runtime's context carries)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FunctionInfo:
    """What does not change between invocations of one function instance."""

    function_name: str
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 128
    log_group_name: str = ""
    log_stream_name: str = ""

    @classmethod
    def from_environ(cls, env: Mapping[str, str]) -> FunctionInfo:
        name = env.get("AWS_LAMBDA_FUNCTION_NAME", "")
        memory = env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
        return cls(
            function_name=name,
            function_version=env.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
            memory_limit_in_mb=int(memory) if memory.isdigit() else 128,
            log_group_name=env.get("AWS_LAMBDA_LOG_GROUP_NAME", f"/aws/lambda/{name}"),
            log_stream_name=env.get("AWS_LAMBDA_LOG_STREAM_NAME", ""),
        )


class LambdaContext:
    """The attributes Powertools' logger and the gateway read from a Lambda context."""

    def __init__(
        self,
        info: FunctionInfo,
        *,
        aws_request_id: str,
        deadline_ms: int,
        invoked_function_arn: str,
        identity: Any = None,
        client_context: Any = None,
    ) -> None:
        self.function_name = info.function_name
        self.function_version = info.function_version
        self.memory_limit_in_mb = info.memory_limit_in_mb
        self.log_group_name = info.log_group_name
        self.log_stream_name = info.log_stream_name
        self.aws_request_id = aws_request_id
        self.invoked_function_arn = invoked_function_arn
        self.identity = identity
        self.client_context = client_context
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds until Lambda's deadline (an epoch time in ms, as ``/next`` gives it)."""
        return max(0, self._deadline_ms - int(time.time() * 1000))
