"""The simulator: dialects, fault rules, scripted replies and the control API (HTTP plumbing in
http_server.py)."""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict
from typing import Any

from local.simulator.anthropic_dialect import AnthropicDialect
from local.simulator.azure_dialect import AzureDeployment, AzureOpenAIDialect, valid_deployment_name
from local.simulator.bedrock_dialect import BedrockDialect
from local.simulator.choices import compose_choices
from local.simulator.dialect import Dialect
from local.simulator.faults import FAULTS, STREAM_FAULTS, Fault, FaultRule, _fault_from_marker
from local.simulator.gemini_dialect import GeminiDialect
from local.simulator.guardrails import GuardrailConfig
from local.simulator.http_server import _Handler, _Server
from local.simulator.openai_dialect import OpenAIDialect
from local.simulator.quotas import Quotas, deployment_of, refusal, with_quota_headers
from local.simulator.tool_calls import tool_answer
from local.simulator.wire import (
    FINISH_REASONS,
    PROVIDERS,
    ChatRequest,
    Json,
    Reply,
    Response,
    _json_response,
)

# --------------------------------------------------------------------------- simulator


def _parse_reply(raw: Any) -> Reply:
    if isinstance(raw, str):
        return Reply(raw)
    if isinstance(raw, dict) and isinstance(raw.get("content"), str):
        finish = raw.get("finish_reason")
        if finish is not None and finish not in FINISH_REASONS:
            raise ValueError(f"finish_reason must be one of {sorted(FINISH_REASONS)}, got {finish!r}")
        cached = raw.get("cached_tokens", 0)
        if not isinstance(cached, int) or cached < 0:
            raise ValueError("cached_tokens must be a non-negative integer")
        billed = raw.get("input_tokens")
        if billed is not None and (not isinstance(billed, int) or billed < 0):
            raise ValueError("input_tokens must be a non-negative integer")
        return Reply(raw["content"], finish, cached, billed)
    raise ValueError(f"a reply is a string or an object with a string 'content', got {raw!r}")


def _check_provider(provider: str) -> None:
    if provider != "*" and provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}; expected one of {[*PROVIDERS, '*']}")


class ProviderSimulator:
    """A local fake of the OpenAI / Anthropic / Gemini HTTP APIs with fault injection."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, latency_ms: int = 0) -> None:
        self.host = host
        self.port = port
        self.verbose = False
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._script: list[tuple[str, Reply]] = []
        self._calls: list[Json] = []
        self._latency_ms = latency_ms
        self._chunk_delay_ms = 0  # between the chunks of every streamed answer
        self._epoch = 0  # bumped by reset() so in-flight requests don't log into the new run
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.quotas = Quotas()  # per-deployment RPM/TPM and request counts (quotas.py)
        self._azure_deployments: dict[str, AzureDeployment] = {}
        self._dialects: dict[str, Dialect] = {
            "openai": OpenAIDialect("openai"),
            "compat": OpenAIDialect("compat", require_auth=False),
            "anthropic": AnthropicDialect(),
            "gemini": GeminiDialect(),
            "bedrock": BedrockDialect(),
            "azure": AzureOpenAIDialect(self._azure_deployments),
        }
        self.guardrail = GuardrailConfig()  # ApplyGuardrail's intervening terms (guardrails.py)

    # ---- lifecycle

    def start(self) -> ProviderSimulator:
        if self._server is not None:
            return self
        self._server = _Server((self.host, self.port), _Handler)
        self._server.sim = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="provider-sim", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> ProviderSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("simulator not started")
        return f"http://{self.host}:{self.port}"

    def base_urls(self) -> dict[str, str]:
        return {
            "openai": f"{self.url}/openai/v1",
            "anthropic": f"{self.url}/anthropic",
            "gemini": f"{self.url}/gemini",
            "compat": f"{self.url}/compat/v1",
            "bedrock": f"{self.url}/bedrock",  # AWS_ENDPOINT_URL_BEDROCK_RUNTIME
            "azure": f"{self.url}/azure",  # an Azure OpenAI resource's endpoint
        }

    # ---- control API

    def add_fault(
        self,
        fault: str,
        provider: str = "*",
        model: str | None = None,
        times: int | None = None,
        retry_after: float = 1,
        delay_s: float = 5,
        after: int = 2,
    ) -> None:
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; expected one of {sorted(FAULTS)}")
        _check_provider(provider)
        if times is not None and times <= 0:
            raise ValueError("times must be positive or None")
        if not isinstance(after, int) or after < 0:
            raise ValueError("after must be a non-negative integer (chunks sent before a stream fault)")
        with self._lock:
            self._rules.append(FaultRule(fault, provider, model, times, float(retry_after), float(delay_s), after))

    def set_quota(
        self, deployment: str, rpm: int | None = None, tpm: int | None = None, window_s: float = 60.0
    ) -> None:
        """A quota for one deployment: an API key, or ``azure/<deployment name>`` (quotas.py)."""
        self.quotas.set(deployment, rpm, tpm, window_s)

    def quota_stats(self) -> dict[str, Json]:
        """Per deployment: requests received, refused for the quota, 429s answered, tokens counted."""
        return self.quotas.stats()

    def add_azure_deployment(self, name: str, model: str = "gpt-4o-mini", api_key: str | None = None) -> None:
        """Register an Azure OpenAI deployment (requests to one not registered are a 404 DeploymentNotFound)."""
        if not valid_deployment_name(name) or not isinstance(model, str) or not model:
            raise ValueError("an Azure deployment needs a name ([A-Za-z0-9_.-], up to 64) and a model")
        with self._lock:
            self._azure_deployments[name] = AzureDeployment(model, api_key)

    def clear_faults(self) -> None:
        with self._lock:
            self._rules.clear()

    def faults(self) -> list[Json]:
        with self._lock:
            return [asdict(rule) for rule in self._rules]

    def script(self, provider: str, replies: list[str | Json]) -> None:
        """Queue exact replies; consumed FIFO by requests to ``provider`` ("*" matches any)."""
        _check_provider(provider)
        parsed = [_parse_reply(r) for r in replies]
        with self._lock:
            self._script.extend((provider, r) for r in parsed)

    def calls(self, provider: str | None = None) -> list[Json]:
        with self._lock:
            return [copy.deepcopy(c) for c in self._calls if provider is None or c["provider"] == provider]

    def clear_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    def set_latency(self, ms: int) -> None:
        if ms < 0:
            raise ValueError("latency must be >= 0")
        with self._lock:
            self._latency_ms = int(ms)

    def set_chunk_delay(self, ms: int) -> None:
        """A delay between the chunks of every streamed answer (as a slow model generates)."""
        if ms < 0:
            raise ValueError("chunk delay must be >= 0")
        with self._lock:
            self._chunk_delay_ms = int(ms)

    def latency_s(self) -> float:
        with self._lock:
            return self._latency_ms / 1000

    def chunk_delay_s(self, headers: dict[str, str]) -> float:
        """The request's ``x-sim-chunk-delay-ms`` header, else the run-wide setting."""
        with suppress(ValueError):
            return max(0.0, float(headers.get("x-sim-chunk-delay-ms", "")) / 1000)
        with self._lock:
            return self._chunk_delay_ms / 1000

    def configure(self, latency_ms: int | None = None, chunk_delay_ms: int | None = None) -> None:
        """``POST /_sim/config``: sets what it names (an empty body resets the latency, as it always did)."""
        if chunk_delay_ms is not None:
            self.set_chunk_delay(int(chunk_delay_ms))
        if latency_ms is not None or chunk_delay_ms is None:
            self.set_latency(int(latency_ms or 0))

    def update_call(self, call: Json, **fields: Any) -> None:
        """Add what only the end of the answer tells (how a stream went) to a recorded call."""
        with self._lock:
            call.update(fields)

    def reset(self) -> None:
        with self._lock:
            self._rules.clear()
            self._script.clear()
            self._calls.clear()
            self._latency_ms = 0
            self._chunk_delay_ms = 0
            self._epoch += 1
            self._azure_deployments.clear()
        self.quotas.clear()
        self.guardrail.reset()

    # ---- request handling (called from handler threads)

    def _take_rule(self, provider: str, model: str) -> Fault | None:
        with self._lock:
            for rule in self._rules:
                if rule.provider not in ("*", provider) or rule.model not in (None, model):
                    continue
                if rule.times is not None:
                    rule.times -= 1
                    if rule.times <= 0:
                        self._rules.remove(rule)
                return Fault(rule.fault, rule.retry_after, rule.delay_s, after=rule.after)
        return None

    def _take_reply(self, provider: str) -> Reply | None:
        with self._lock:
            for i, (target, reply) in enumerate(self._script):
                if target in ("*", provider):
                    del self._script[i]
                    return reply
        return None

    def _pick_fault(self, req: ChatRequest, headers: dict[str, str]) -> Fault | None:
        """Header beats message marker beats run-wide rules."""
        name = headers.get("x-sim-fault")
        if name:
            fault = Fault(name.strip())
            with suppress(ValueError):
                fault.retry_after = float(headers.get("x-sim-retry-after", "1"))
            with suppress(ValueError):
                fault.delay_s = float(headers.get("x-sim-delay", "5"))
            with suppress(ValueError):
                fault.after = max(0, int(headers.get("x-sim-after", "2")))
            return fault
        return _fault_from_marker(req.joined, req.provider) or self._take_rule(req.provider, req.model)

    def handle_provider(
        self,
        provider: str,
        headers: dict[str, str],
        query: dict[str, str],
        raw: bytes,
        path_model: str | None,
        streamed_route: bool = False,
    ) -> tuple[Response, Any, str | None]:
        """Answer one provider request; returns the response, the parsed body and the model."""
        dialect = self._dialects[provider]
        with self._lock:
            latency = self._latency_ms
        if latency:
            time.sleep(latency / 1000)
        body: Any = None
        with suppress(ValueError):
            body = json.loads(raw) if raw else None
        model = body.get("model") if isinstance(body, dict) else None
        model = path_model if provider in ("gemini", "bedrock") else model  # Azure: the deployment's, once parsed

        denied = dialect.check_auth(headers, query)
        if denied is not None:
            return denied, body, model
        if body is None:
            return dialect.invalid_json(), body, model
        req = dialect.parse(body, headers, path_model)
        if isinstance(req, Response):
            return req, body, model
        if streamed_route:  # Gemini: the method says it (streamGenerateContent), alt=sse the framing
            req.stream, req.sse = True, query.get("alt") == "sse"
        found = deployment_of(provider, headers, query, path_model)
        deployment = self.quotas.label(found) if found else None
        standing = self.quotas.admit(deployment, req.input_tokens + (req.max_tokens or 0)) if deployment else None
        resp = self._answer(dialect, req, headers, standing)
        if deployment:
            resp.deployment = deployment
            self.quotas.answered(deployment, resp.status)
        if standing is not None:
            resp.headers = with_quota_headers(provider, resp.headers, standing)
        return resp, body, req.model

    def _answer(self, dialect: Dialect, req: ChatRequest, headers: dict[str, str], standing: Any) -> Response:
        """The answer to a parsed request: a quota refusal, a fault, a scripted or composed reply."""
        if standing is not None and standing.refused_for is not None:
            resp = refusal(dialect.name, standing, req.model)
            resp.fault = "quota"
            return resp
        fault = self._pick_fault(req, headers)
        stream_fault: Fault | None = None
        if fault is not None:
            if fault.name not in FAULTS and fault.name not in getattr(dialect, "EXTRA_FAULTS", ()):
                resp = dialect.client_error(f"unknown simulator fault {fault.name!r}")
                resp.fault = fault.name
                return resp
            if fault.name in STREAM_FAULTS or fault.name in getattr(dialect, "EXTRA_STREAM_FAULTS", ()):
                # played while streaming; a non-streamed request is answered as without the fault
                stream_fault, fault = (fault if req.stream else None), None
        if fault is not None:
            if fault.name == "drop":
                return Response(0, None, fault="drop")
            if fault.name != "slow":
                resp = dialect.fault(fault, req)
                resp.fault = fault.name
                return resp
            time.sleep(max(0.0, fault.delay_s))

        reply = self._take_reply(dialect.name)
        resp = dialect.render(req, tool_answer(req, reply) or compose_choices(req, reply))
        resp.fault = fault.name if fault else None
        if stream_fault is not None and resp.events is not None:
            resp.fault, resp.stream_fault = stream_fault.name, stream_fault
            if stream_fault.name in ("stream_malformed", "stream_error", *getattr(dialect, "EXTRA_STREAM_FAULTS", ())):
                resp.fault_event = dialect.stream_fault_event(stream_fault)
        return resp

    def epoch(self) -> int:
        with self._lock:
            return self._epoch

    def record(self, call: Json, epoch: int | None = None) -> None:
        with self._lock:
            if epoch is None or epoch == self._epoch:
                self._calls.append(call)

    def handle_control(self, method: str, path: str, query: dict[str, str], raw: bytes) -> Response:
        """The /_sim/* endpoints that mirror the Python API."""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return _json_response(400, {"error": "body is not valid JSON"})
        routes: dict[tuple[str, str], Callable[[], Any]] = {
            ("GET", "/_sim/health"): lambda: {"ok": True, "base_urls": self.base_urls()},
            ("GET", "/_sim/calls"): lambda: self.calls(query.get("provider")),
            ("DELETE", "/_sim/calls"): self.clear_calls,
            ("GET", "/_sim/faults"): self.faults,
            ("POST", "/_sim/faults"): lambda: self.add_fault(**body),
            ("DELETE", "/_sim/faults"): self.clear_faults,
            ("POST", "/_sim/script"): lambda: self.script(body["provider"], body["replies"]),
            ("POST", "/_sim/config"): lambda: self.configure(**body),
            ("POST", "/_sim/guardrail"): lambda: self.guardrail.configure(**body),
            ("POST", "/_sim/reset"): self.reset,
            ("POST", "/_sim/quotas"): lambda: self.set_quota(**body),
            ("GET", "/_sim/quotas"): self.quota_stats,
            ("DELETE", "/_sim/quotas"): self.quotas.clear,
            ("POST", "/_sim/azure/deployments"): lambda: self.add_azure_deployment(**body),
        }
        action = routes.get((method, path))
        if action is None:
            return _json_response(404, {"error": f"no simulator control route {method} {path}"})
        try:
            result = action()
        except (TypeError, ValueError, KeyError) as exc:
            return _json_response(400, {"error": str(exc)})
        return _json_response(200, {"ok": True} if result is None else result)
