"""Loading function handlers from their CodeUri and the worker threads that run them."""

from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import logging
import os
import queue
import re
import sys
import threading
import traceback
import types
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from local.stack import powertools_threads
from local.stack.settings import LAYER_DIRS, THREAD_CLEANUP_HOOK, Handler, log

_invoking: contextvars.ContextVar[str | None] = contextvars.ContextVar("local_invoking_function", default=None)


def label_log_records() -> None:
    """Every log record made during an invocation gets ``function_name`` (Powertools' JSON lines show it,
    as on Lambda): all functions share this process and its stderr, unlike their CloudWatch log groups.
    Process-wide and idempotent; records made outside an invocation are left alone."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, "_labels_function", False):
        return

    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        function = _invoking.get()
        if function is not None:
            record.function_name = function
        return record

    make_record._labels_function = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(make_record)


@contextlib.contextmanager
def invoking(function_name: str) -> Iterator[None]:
    """Log records made inside (this thread, and tasks it starts) name ``function_name``."""
    token = _invoking.set(function_name)
    try:
        yield
    finally:
        _invoking.reset(token)


class HandlersMixin:
    """Loads handlers from the template's CodeUri, as a cold start would."""

    _load_lock = threading.Lock()  # sys.modules and sys.path are process-wide

    def _load_handler(self, lid: str) -> Handler:
        spec = self.functions[lid]
        module_path, _, attr = spec.handler.rpartition(".")
        module_name = "gateway_fn_" + re.sub(r"\W", "_", spec.dir_name)
        if module_path != "app":
            module_name += "_" + module_path.replace(".", "_")
        path = spec.code_uri / (module_path.replace(".", "/") + ".py")
        powertools_threads.apply()  # concurrent invocations share this process: one request per thread
        with self._load_lock:
            module = sys.modules.get(module_name)
            if module is None or Path(getattr(module, "__file__", "") or "") != path:
                module = _import_file(module_name, path, spec.code_uri)  # first use: a "cold start"
        handler = getattr(module, attr, None)
        if not callable(handler):
            raise AttributeError(f"{lid}: {spec.handler} is not a callable in {spec.code_uri}")
        return handler  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- worker threads


class _Workers:
    """A fixed set of threads, like warm Lambda instances: per-thread state (the gateway's event loop
    and HTTP client) is reused across requests, and released when the stack stops."""

    def __init__(self, size: int, name: str) -> None:
        self._size = size
        self._name = name
        self._queue: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None] = (
            queue.SimpleQueue()
        )
        self._idle = threading.Semaphore(0)
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self._queue.put((future, fn, args))
        if not self._idle.acquire(timeout=0):
            with self._lock:
                if len(self._threads) < self._size:
                    thread = threading.Thread(target=self._run, name=f"{self._name}-{len(self._threads)}", daemon=True)
                    thread.start()
                    self._threads.append(thread)
        return future

    def _run(self) -> None:
        try:
            while (item := self._queue.get()) is not None:
                future, fn, args = item
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn(*args))
                    except BaseException as exc:
                        future.set_exception(exc)
                self._idle.release()
        finally:
            close_thread_resources()

    def shutdown(self, timeout: float) -> None:
        with self._lock:
            threads, self._threads = self._threads, []
        for _ in threads:
            self._queue.put(None)
        for thread in threads:
            thread.join(timeout=timeout)


def _put_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def close_thread_resources() -> None:
    """Let the gateway close this thread's event loop and HTTP client (open keep-alive connections
    would otherwise hold simulator threads) -- if its runtime offers the hook."""
    module = sys.modules.get(THREAD_CLEANUP_HOOK[0])
    hook = getattr(module, THREAD_CLEANUP_HOOK[1], None)
    if callable(hook):
        try:
            hook()
        except Exception:
            log.warning("thread cleanup failed\n%s", traceback.format_exc())


def _reset_gateway_caches() -> None:
    """The gateway caches settings from the environment; forget them when the environment changes."""
    service = sys.modules.get("llm_gateway.wiring")
    reset = getattr(service, "reset", None)
    if callable(reset):
        reset()


def _import_file(module_name: str, path: Path, code_dir: Path) -> types.ModuleType:
    if not path.is_file():
        raise FileNotFoundError(f"handler module {path} does not exist")
    for layer in LAYER_DIRS:
        if str(layer) not in sys.path:
            sys.path.insert(0, str(layer))
    if str(code_dir) not in sys.path:
        sys.path.append(str(code_dir))  # Lambda puts the code root on sys.path
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module
