"""Our Lambda runtime loop: ``/next``, call the handler, write its answer in streaming mode, repeat.

Run by ``wrapper`` (``AWS_LAMBDA_EXEC_WRAPPER``) as ``python -m llm_gateway.stream_runtime.runtime`` in
place of the managed runtime's loop; the local harness runs :class:`RuntimeLoop` in its worker threads
against its Runtime API emulator, one invocation per job.

A handler returns either API Gateway's proxy dict (written in one chunk after the prelude) or a
:class:`~llm_gateway.streaming.response.StreamingResponse` (prelude, then each body item as its own
chunk). The after-response work an invocation deferred runs once its answer is posted and before the
next ``/next``: Lambda has delivered the answer and holds the sandbox until we ask for more.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

from llm_gateway import after_response
from llm_gateway.stream_runtime import answers, serving
from llm_gateway.stream_runtime.context import FunctionInfo, LambdaContext
from llm_gateway.stream_runtime.runtime_api import (
    ErrorReport,
    Invocation,
    ResponseStreamBroken,
    RuntimeApiClient,
)
from llm_gateway.streaming.response import StreamingResponse

Handler = Callable[[Any, Any], Any]
TRACE_ENV = "_X_AMZN_TRACE_ID"
_MESSAGE_LIMIT = 1024  # error messages Lambda records and forwards: keep them short


def report(exc: BaseException) -> ErrorReport:
    frames = traceback.format_tb(exc.__traceback__)
    return ErrorReport(type(exc).__name__, str(exc)[:_MESSAGE_LIMIT], tuple(frames))


def _log_error(what: str, request_id: str, exc: BaseException) -> None:
    """One JSON line on stderr (CloudWatch keeps it), as the managed runtime logs a failed invocation."""
    line = {"level": "ERROR", "message": what, "requestId": request_id, **report(exc).payload()}
    print(json.dumps(line), file=sys.stderr, flush=True)


class RuntimeLoop:
    """Serves invocations from one Runtime API with one handler. ``serve(1)`` serves exactly one."""

    def __init__(self, client: RuntimeApiClient, handler: Handler, info: FunctionInfo) -> None:
        self.client = client
        self.handler = handler
        self.info = info

    def serve(self, max_invocations: int | None = None) -> int:
        """Serve until ``max_invocations`` (forever when None); the number served."""
        served = 0
        while max_invocations is None or served < max_invocations:
            self.serve_invocation(self.client.next_invocation())
            served += 1
        return served

    def serve_invocation(self, invocation: Invocation) -> None:
        if invocation.trace_id:
            os.environ[TRACE_ENV] = invocation.trace_id  # the X-Ray SDK and Powertools read it from here
        else:
            os.environ.pop(TRACE_ENV, None)
        context = LambdaContext(
            self.info,
            aws_request_id=invocation.request_id,
            deadline_ms=invocation.deadline_ms,
            invoked_function_arn=invocation.function_arn,
            identity=invocation.cognito_identity,
            client_context=invocation.client_context,
        )
        # The scope spans the writing of the answer: a streamed body defers work while it is consumed.
        with serving.streaming_invocation(), after_response.invocation(invocation.request_id):
            self._answer(invocation, context)
        # Leaving the scope ran the deferred work (runtime mode): only now may the next event come.

    def _answer(self, invocation: Invocation, context: LambdaContext) -> None:
        request_id = invocation.request_id
        try:
            result = self.handler(json.loads(invocation.event or b"null"), context)
            if isinstance(result, StreamingResponse):
                self._stream(request_id, result)
                return
            if not isinstance(result, dict):
                raise answers.InvalidAnswer(f"the handler returned {type(result).__name__}, not an HTTP answer")
            payload = answers.buffered(result)
        except Exception as exc:  # nothing written yet: Lambda records the error, API Gateway answers 502
            _log_error("invocation failed", request_id, exc)
            self.client.post_error(request_id, report(exc))
            return
        try:
            stream = self.client.open_response(request_id)
            stream.write(payload)
            stream.finish()
        except ResponseStreamBroken:
            pass  # the caller went away; nothing is left to stop

    def _stream(self, request_id: str, response: StreamingResponse) -> None:
        body = response.body
        try:
            head = answers.prelude(response.status_code, response.headers, cookies=response.cookies)
        except answers.InvalidAnswer:
            body.close()
            raise
        try:
            stream = self.client.open_response(request_id)
            stream.write(head)
            try:
                for piece in body:
                    stream.write(piece)
            except ResponseStreamBroken:
                raise
            except Exception as exc:  # the status is out: only the trailers can say the stream broke
                _log_error("stream failed", request_id, exc)
                stream.fail(report(exc))
                return
            stream.finish()
        except ResponseStreamBroken:
            pass  # Lambda closed the stream (the caller went away): closing the body stops the producer
        finally:
            body.close()  # GeneratorExit in a producer that did not finish; a no-op for one that did


def load_handler(name: str, task_root: str) -> Handler:
    """Import ``module.function`` (``_HANDLER``) with the task root first on sys.path, as Lambda does."""
    module_name, _, attr = name.rpartition(".")
    if not module_name:
        raise ValueError(f"handler {name!r} is not module.function")
    if task_root not in sys.path:
        sys.path.insert(0, task_root)
    module = importlib.import_module(module_name.replace("/", "."))
    handler = getattr(module, attr, None)
    if not callable(handler):
        raise AttributeError(f"handler {name!r}: {module_name} has no callable {attr!r}")
    return handler  # type: ignore[no-any-return]


def main() -> None:
    env = os.environ
    # Before the handler's import: its after_response.handler() must not register an extension; the
    # deferred work runs between our response POST and the next /next instead (unless turned off).
    after_response.install("inline" if after_response.configured_mode() == "inline" else "runtime")
    client = RuntimeApiClient(env["AWS_LAMBDA_RUNTIME_API"])
    try:
        handler = load_handler(env.get("_HANDLER", ""), env.get("LAMBDA_TASK_ROOT", "/var/task"))
    except Exception as exc:
        kind = "Runtime.ImportModuleError" if isinstance(exc, ImportError) else "Runtime.HandlerNotFound"
        _log_error("init failed", "", exc)
        client.post_init_error(report(exc), error_type=kind)
        sys.exit(1)
    RuntimeLoop(client, handler, FunctionInfo.from_environ(env)).serve()


if __name__ == "__main__":
    main()
