"""LocalStack: lifecycle, environment and providers; the rest comes from the mixins."""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from local.cfn import FunctionSpec, Resolver, Template
from local.context import REGION, LambdaContext
from local.routes import RouteTable
from local.stack.bridge import BridgeMixin, _BridgeServer
from local.stack.event_sources import EventSourcesMixin
from local.stack.handlers import (
    HandlersMixin,
    _put_env,
    _reset_gateway_caches,
    _Workers,
    invoking,
    label_log_records,
)
from local.stack.pacing import AfterResponsePacing
from local.stack.provisioning import ProvisioningMixin
from local.stack.settings import (
    DEFAULT_LOCAL_PORT,
    DEFAULT_STACK_NAME,
    DEFAULT_TEMPLATE,
    INTEGRATION_TIMEOUT_S,
    POLL_WAIT_S,
    PROVIDERS,
    SIM_KEY,
    Handler,
    Provider,
    log,
    parse_api_keys,
)
from local.stack.streaming import STREAM_IDLE_TIMEOUT_S, StreamingMixin
from local.stack.throttle import KeyThrottle

if TYPE_CHECKING:
    from local.simulator import ProviderSimulator


# --------------------------------------------------------------------------- the stack


class LocalStack(ProvisioningMixin, HandlersMixin, EventSourcesMixin, BridgeMixin, StreamingMixin):
    """Local AWS (moto), provider simulator, handlers and API bridge, all driven by template.yaml."""

    def __init__(
        self,
        template: str | Path = DEFAULT_TEMPLATE,
        *,
        bridge: bool = True,
        port: int | None = None,
        host: str = "127.0.0.1",
        api_keys: Mapping[str, str] | None = None,
        simulate: bool | None = None,
        simulator: ProviderSimulator | None = None,
        stack_name: str = DEFAULT_STACK_NAME,
        parameters: Mapping[str, str] | None = None,
        env_overrides: Mapping[str, str] | None = None,
        event_sources: bool = True,
        concurrency: int = 16,
        failed_message_visibility: int | None = None,
        log_requests: bool = False,
        integration_timeout_s: float = INTEGRATION_TIMEOUT_S,
        throttle: bool = False,
        stream_idle_timeout_s: float = STREAM_IDLE_TIMEOUT_S,
    ) -> None:
        """
        port: bridge port; None reads ``LOCAL_PORT`` (default 3000); 0 picks a free one.
        api_keys: {key: tenant}; None reads ``LOCAL_API_KEYS`` or generates one ``dev-...`` key.
        simulate: None simulates each provider without a real key in the environment, True all,
            False none. ``simulator``: an already started simulator to use (not stopped by us).
        env_overrides: variables that win over the template's and the provider settings.
        failed_message_visibility: seconds before a failed SQS message is retried (None: the
            queue's own visibility timeout, as in AWS).
        integration_timeout_s: the bridge answers 504 ``gateway_timeout`` after this (API Gateway: 29 s);
            on streaming routes without their own TimeoutInMillis it bounds the whole stream.
        stream_idle_timeout_s: a streamed answer silent this long is cut (API Gateway, regional: 5 minutes).
        throttle: apply the API usage plan's Throttle per API key (429 ``rate_limited``); ``make run``
            does, tests and benchmarks that send bursts on purpose do not.
        """
        self.template = Template.load(template)
        self.stack_name = stack_name
        self.host = host
        self.bridge_enabled = bridge
        self._port = port if port is not None else int(os.environ.get("LOCAL_PORT", DEFAULT_LOCAL_PORT))
        if api_keys is None:
            spec = os.environ.get("LOCAL_API_KEYS", "")
            api_keys = parse_api_keys(spec) if spec.strip() else {f"dev-{secrets.token_hex(12)}": "dev"}
        self.api_keys: dict[str, str] = dict(api_keys)
        self._simulate = simulate
        self.simulator: ProviderSimulator | None = simulator
        self._owns_simulator = False
        self.providers: dict[str, str] = {}  # provider -> "simulated" | "real"
        self._provider_env: dict[str, str] = {}
        self.env_overrides = dict(env_overrides or {})
        self.event_sources_enabled = event_sources
        self.concurrency = concurrency
        self.failed_message_visibility = failed_message_visibility
        self.log_requests = log_requests
        self.integration_timeout_s = integration_timeout_s
        self.throttle = throttle
        self.stream_idle_timeout_s = stream_idle_timeout_s
        self._stream_emulators = {}
        self._stream_lock = threading.Lock()
        self._throttles: dict[str, KeyThrottle] = {}
        # Tests (or a REPL) can replace a function's handler: {logical id: callable(event, context)}.
        self.handler_overrides: dict[str, Handler] = {}
        self._pacing = AfterResponsePacing()

        self.moto_url = ""
        self.api_url: str | None = None
        self.physical: dict[str, str] = {}  # logical id -> Ref value of each created resource
        self._attrs: dict[tuple[str, str], str] = {}
        self.resolver = Resolver(
            self.template,
            pseudo=self._pseudo_parameters(),
            parameters=parameters,
            refs=self.physical,
            attrs=self._attrs,
            fallback=self._placeholder,
        )
        self.functions: dict[str, FunctionSpec] = self.template.functions()
        self.routes = RouteTable(self.template.api_routes())
        self.env: dict[str, str] = {}  # what was put into os.environ for the functions
        self._env_delta: dict[str, dict[str, str]] = {}  # per function: variables differing from env
        self._env_lock = threading.RLock()
        self._saved_env: dict[str, str | None] = {}
        self._created: list[tuple[str, str]] = []  # (resource type, Ref value), for teardown
        self._moto: Any = None
        self._server: _BridgeServer | None = None
        self._server_thread: threading.Thread | None = None
        self._workers: _Workers | None = None
        self._clients: dict[str, Any] = {}
        self._stop = threading.Event()
        self._pollers: list[threading.Thread] = []
        self._started = False

    # ---- lifecycle

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> LocalStack:
        if self._started:
            return self
        self._started = True
        self._stop.clear()  # a stopped stack can be started again
        self.physical.clear()
        self._attrs.clear()
        self.providers.clear()
        try:
            self._start_moto()
            self._create_resources()
            self._start_providers()
            self._apply_function_env()
            _reset_gateway_caches()
            self._seed_api_keys()
            label_log_records()
            self._workers = _Workers(self.concurrency, "lambda")
            if self.event_sources_enabled:
                self._start_event_sources()
            if self.bridge_enabled:
                self._start_bridge()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop pollers, bridge, simulator and moto; delete what we created; restore the environment."""
        if not self._started:
            return
        self._started = False
        self._stop.set()
        give_up = time.monotonic() + POLL_WAIT_S + 10  # one bound for all pollers, not one each
        for thread in self._pollers:
            thread.join(timeout=max(0.0, give_up - time.monotonic()))
        self._pollers.clear()
        self._stop_bridge()
        self._stop_stream_emulators()  # streams still running: the runtime's next write fails, bodies close
        if self._workers is not None:
            self._workers.shutdown(timeout=max((f.timeout_s for f in self.functions.values()), default=60) + 5)
            self._workers = None
        if self._moto is not None:
            self._delete_resources()
            self._clients.clear()
            self._moto.stop()
            self._moto = None
        if self.simulator is not None and self._owns_simulator:
            self.simulator.stop()
            self.simulator = None
        self._restore_env()
        _reset_gateway_caches()

    def _seed_api_keys(self) -> None:
        """``LOCAL_API_KEYS`` become gateway keys in the local keys table (idempotent), so the functions'
        edge checks them exactly as it checks keys made with ``make keys``."""
        for secret, tenant in self.api_keys.items():
            self.add_api_key(secret, tenant)

    def add_api_key(self, secret: str, tenant: str) -> str:
        """Make ``secret`` a gateway key of ``tenant`` in the keys table (idempotent); its key id."""
        table = self.physical.get("KeysTable")
        self.api_keys[secret] = tenant
        if not table:  # a template without the keys table (the bridge's own tests)
            return ""
        from llm_gateway.keys.admin import KeyAdmin
        from llm_gateway.keys.store import KeyStore

        return KeyAdmin(KeyStore(table)).import_key(secret, tenant, name="LOCAL_API_KEYS").key_id

    # ---- public helpers

    def client(self, service: str) -> Any:
        """A boto3 client bound to the local moto server (explicitly, whatever the environment says)."""
        import boto3
        from botocore.config import Config

        if not self.moto_url:
            raise RuntimeError("LocalStack is not started")
        return boto3.session.Session().client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.moto_url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=30),
        )

    def _aws(self, service: str) -> Any:
        """Cached clients for the thread that starts and stops the stack (creating one costs ~0.1 s)."""
        if service not in self._clients:
            self._clients[service] = self.client(service)
        return self._clients[service]

    def function_id(self, name: str) -> str:
        """Logical id from a logical id, a CodeUri directory name (``completion``) or a physical name."""
        for lid, spec in self.functions.items():
            if name in (lid, spec.dir_name, self._name(lid)):
                return lid
        raise LookupError(f"no function {name!r} in the template; known: {sorted(self.functions)}")

    def new_context(self, function: str) -> LambdaContext:
        spec = self.functions[self.function_id(function)]
        return LambdaContext(
            function_name=self._name(spec.logical_id),
            memory_limit_in_mb=spec.memory_mb,
            timeout_s=spec.timeout_s,
        )

    def invoke(self, function: str, event: Any, context: LambdaContext | None = None) -> Any:
        """Invoke a handler in-process (as Step Functions or ``aws lambda invoke`` would); errors propagate."""
        lid = self.function_id(function)
        handler = self.handler_overrides.get(lid) or self._load_handler(lid)
        # As Lambda holds a sandbox for its extension: earlier invocations' cache fills land first.
        self._pacing.wait_for_earlier(lid, self.functions[lid].timeout_s)
        try:
            with self._function_env(lid), invoking(self._name(lid)):
                return handler(event, context or self.new_context(lid))
        finally:
            self._pacing.invocation_ended(lid)

    # ---- providers and environment

    def _start_providers(self) -> None:
        values: dict[str, str] = {}
        for provider in PROVIDERS:
            real = self._has_real_provider(provider)
            self.providers[provider.name] = "real" if real else "simulated"
            if real:
                continue
            simulator = self._ensure_simulator()
            values[provider.url_var] = simulator.base_urls()[provider.sim_route]
            if provider.key_var:
                values[provider.key_var] = SIM_KEY
            if provider.name == "bedrock":
                values["GATEWAY_BEDROCK_ENABLED"] = "true"  # the template turns it on only with model ARNs
        for name, value in values.items():
            self._set_env(name, value)
        self._provider_env = values

    def _has_real_provider(self, provider: Provider) -> bool:
        if self._simulate is not None:
            return not self._simulate
        if provider.name == "bedrock":  # simulated unless everything is real: moto's fake credentials sign
            return False
        if provider.name == "openai_compatible":  # a self-hosted server needs a URL, maybe no key
            return bool(os.environ.get(provider.url_var))
        return os.environ.get(provider.key_var, SIM_KEY) != SIM_KEY

    def _ensure_simulator(self) -> ProviderSimulator:
        if self.simulator is None:
            from local.simulator import ProviderSimulator  # lazy: only when something is simulated

            self.simulator = ProviderSimulator(host="127.0.0.1", port=0)
            self.simulator.start()
            self._owns_simulator = True
        return self.simulator

    def _apply_function_env(self) -> None:
        """Put the functions' environment into os.environ; conflicting variables go per invocation."""
        # On Lambda, bookkeeping runs after the response in an internal extension; a thread stands in
        # for it here (unless the environment already chose, as the test suite does: inline).
        after_response = {"GATEWAY_AFTER_RESPONSE": os.environ.get("GATEWAY_AFTER_RESPONSE") or "thread"}
        overlay = {**after_response, **self._provider_env, **self.env_overrides}
        per_function = {
            lid: {**self.template.function_environment(lid, self.resolver), **overlay} for lid in self.functions
        }
        merged: dict[str, str] = {}
        for env in per_function.values():
            for name, value in env.items():
                merged.setdefault(name, value)  # on conflict the first function's value is the default
        self._env_delta = {lid: {k: v for k, v in env.items() if merged[k] != v} for lid, env in per_function.items()}
        if any(self._env_delta.values()):
            log.info("function-specific variables are set per invocation: %s", self._env_delta)
        self._set_env("POWERTOOLS_TRACE_DISABLED", os.environ.get("POWERTOOLS_TRACE_DISABLED", "true"))
        for name, value in {**merged, **overlay}.items():
            self._set_env(name, value)
        self.env = {**merged, **overlay}

    @contextlib.contextmanager
    def _function_env(self, lid: str) -> Iterator[None]:
        delta = self._env_delta.get(lid)
        if not delta:
            yield
            return
        with self._env_lock:  # serialises only the functions whose variables differ
            saved = {k: os.environ.get(k) for k in delta}
            os.environ.update(delta)
            try:
                yield
            finally:
                for name, value in saved.items():
                    _put_env(name, value)

    def _set_env(self, name: str, value: str | None) -> None:
        self._saved_env.setdefault(name, os.environ.get(name))
        _put_env(name, value)

    def _restore_env(self) -> None:
        for name, value in self._saved_env.items():
            _put_env(name, value)
        self._saved_env.clear()
