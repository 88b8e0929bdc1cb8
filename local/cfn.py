"""Read the SAM template for the local harness: resources, event sources, routes and environment.

Everything the harness does is derived from ``template.yaml`` so that new tables, queues, routes or
functions work locally without touching ``local/``. Only the subset of CloudFormation that a local
run needs is modelled; unsupported intrinsics raise ``TemplateError`` with the offending value.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped,unused-ignore]  # stubs: types-PyYAML

from local.intrinsics import NO_VALUE, Resolver, TemplateError, to_env_value
from local.routes import ApiRoute, TransferModeError, integration_timeout_s, transfer_mode

FUNCTION_TYPES = ("AWS::Serverless::Function",)
API_TYPES = ("AWS::Serverless::Api",)
IMPLICIT_API = "ServerlessRestApi"  # the API SAM creates for Api events without RestApiId
DEFAULT_TIMEOUT_S = 3  # SAM's default when neither the function nor Globals set one
DEFAULT_MEMORY_MB = 128


# --------------------------------------------------------------------------- YAML loading


class _CfnLoader(yaml.SafeLoader):  # type: ignore[misc,unused-ignore]
    """SafeLoader that turns CloudFormation short-form tags into their long-form dicts."""


def _construct_tag(loader: _CfnLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:  # pragma: no cover - yaml has no other node kinds
        raise TemplateError(f"unsupported node for !{suffix}")
    if suffix in ("Ref", "Condition"):
        return {suffix: value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)  # !GetAtt Res.Attr.Sub -> ["Res", "Attr.Sub"]
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _construct_tag)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Parse a CloudFormation/SAM template (YAML or JSON) into plain data."""
    with open(path, encoding="utf-8") as handle:
        doc = yaml.load(handle, Loader=_CfnLoader)  # a SafeLoader subclass: no arbitrary objects
    if not isinstance(doc, dict) or not isinstance(doc.get("Resources"), dict):
        raise TemplateError(f"{path}: not a CloudFormation template (no Resources)")
    return doc


# --------------------------------------------------------------------------- event sources


@dataclass(frozen=True)
class S3EventSource:
    function_id: str
    event_name: str
    bucket_id: str  # logical id of the bucket
    events: tuple[str, ...]  # e.g. ("s3:ObjectCreated:*",)
    prefix: str | None = None
    suffix: str | None = None

    def matches(self, event_name: str, key: str) -> bool:
        """``event_name`` as in a record (``ObjectCreated:Put``); ``key`` already URL-decoded."""
        full = event_name if event_name.startswith("s3:") else f"s3:{event_name}"
        wanted = any(full == e or (e.endswith("*") and full.startswith(e[:-1])) for e in self.events)
        return (
            wanted
            and (self.prefix is None or key.startswith(self.prefix))
            and (self.suffix is None or key.endswith(self.suffix))
        )


@dataclass(frozen=True)
class SqsEventSource:
    function_id: str
    event_name: str
    queue: str  # logical id when the template references one, else the literal ARN
    batch_size: int = 10
    report_batch_item_failures: bool = False
    enabled: bool = True
    max_concurrency: int | None = None  # ScalingConfig.MaximumConcurrency


@dataclass(frozen=True)
class FunctionSpec:
    logical_id: str
    code_uri: Path  # absolute
    handler: str  # "module.function"
    timeout_s: int
    memory_mb: int
    environment: dict[str, Any]  # Globals merged with the function's own, unresolved
    events: dict[str, Any] = field(default_factory=dict)

    @property
    def dir_name(self) -> str:
        return self.code_uri.name


# --------------------------------------------------------------------------- template model


class Template:
    """A parsed template with the queries the local harness needs."""

    def __init__(self, doc: dict[str, Any], base_dir: Path) -> None:
        self.doc = doc
        self.base_dir = base_dir
        self.resources: dict[str, dict[str, Any]] = doc["Resources"]
        self.parameters: dict[str, dict[str, Any]] = doc.get("Parameters") or {}
        self.conditions: dict[str, Any] = doc.get("Conditions") or {}
        self.mappings: dict[str, Any] = doc.get("Mappings") or {}
        self.globals: dict[str, Any] = doc.get("Globals") or {}

    @classmethod
    def load(cls, path: str | Path) -> Template:
        path = Path(path).resolve()
        return cls(load_yaml(path), path.parent)

    def properties(self, logical_id: str) -> dict[str, Any]:
        props = self.resources[logical_id].get("Properties") or {}
        return props if isinstance(props, dict) else {}

    def resources_of_type(self, *types: str) -> dict[str, dict[str, Any]]:
        return {lid: res for lid, res in self.resources.items() if res.get("Type") in types}

    def resource_type(self, logical_id: str) -> str | None:
        res = self.resources.get(logical_id)
        return res.get("Type") if res else None

    # ---- functions

    def functions(self) -> dict[str, FunctionSpec]:
        return {lid: self.function(lid) for lid in self.resources_of_type(*FUNCTION_TYPES)}

    def function(self, logical_id: str) -> FunctionSpec:
        props = self.properties(logical_id)
        glob = self.globals.get("Function") or {}
        code_uri = props.get("CodeUri", glob.get("CodeUri"))
        if not isinstance(code_uri, str):
            raise TemplateError(f"{logical_id}: CodeUri must be a local path for the local harness")
        env: dict[str, Any] = {}
        for source in (glob, props):
            variables = (source.get("Environment") or {}).get("Variables") or {}
            env.update(variables)
        return FunctionSpec(
            logical_id=logical_id,
            code_uri=(self.base_dir / code_uri).resolve(),
            handler=str(props.get("Handler", glob.get("Handler", "app.lambda_handler"))),
            timeout_s=int(props.get("Timeout", glob.get("Timeout", DEFAULT_TIMEOUT_S))),
            memory_mb=int(props.get("MemorySize", glob.get("MemorySize", DEFAULT_MEMORY_MB))),
            environment=env,
            events=props.get("Events") or {},
        )

    def _events(self, event_type: str) -> Iterable[tuple[str, str, dict[str, Any]]]:
        for fid in self.resources_of_type(*FUNCTION_TYPES):
            for name, event in (self.properties(fid).get("Events") or {}).items():
                if event.get("Type") == event_type:
                    yield fid, name, event.get("Properties") or {}

    # ---- API routes

    def api_key_required(self, api_id: str) -> bool:
        api_auth = (self.globals.get("Api") or {}).get("Auth") or {}
        if api_id in self.resources:
            api_auth = {**api_auth, **(self.properties(api_id).get("Auth") or {})}
        return bool(api_auth.get("ApiKeyRequired", False))

    def api_throttle(self, api_id: str, resolve: Callable[[Any], Any]) -> tuple[float, int] | None:
        """(rate per second, burst) of the API's usage plan (``Auth.UsagePlan.Throttle``, per API key), or
        else of its stage (``MethodSettings``, for everyone), if it sets one."""
        auth = (self.globals.get("Api") or {}).get("Auth") or {}
        if api_id in self.resources:
            auth = {**auth, **(self.properties(api_id).get("Auth") or {})}
        throttle = resolve(((auth.get("UsagePlan") or {}).get("Throttle")) or {})
        if isinstance(throttle, dict) and "RateLimit" in throttle and "BurstLimit" in throttle:
            return float(throttle["RateLimit"]), int(throttle["BurstLimit"])
        return self._stage_throttle(api_id, resolve)

    def _stage_throttle(self, api_id: str, resolve: Callable[[Any], Any]) -> tuple[float, int] | None:
        """The stage's ``/*`` throttling (``MethodSettings``), one bucket for every caller."""
        settings = resolve(self.properties(api_id).get("MethodSettings") or []) if api_id in self.resources else []
        for setting in settings if isinstance(settings, list) else []:
            if (
                isinstance(setting, dict)
                and setting.get("ResourcePath") == "/*"
                and "ThrottlingRateLimit" in setting
                and "ThrottlingBurstLimit" in setting
            ):
                return float(setting["ThrottlingRateLimit"]), int(setting["ThrottlingBurstLimit"])
        return None

    def api_stage(self, api_id: str, resolve: Callable[[Any], Any]) -> str:
        stage = self.properties(api_id).get("StageName") if api_id in self.resources else None
        stage = stage or (self.globals.get("Api") or {}).get("StageName") or "Prod"
        return str(resolve(stage))

    def api_routes(self) -> list[ApiRoute]:
        routes = []
        for fid, name, props in self._events("Api"):
            api_id = ref_target(props.get("RestApiId")) or IMPLICIT_API
            required = self.api_key_required(api_id)
            event_auth = props.get("Auth") or {}
            if "ApiKeyRequired" in event_auth:  # per-method override
                required = bool(event_auth["ApiKeyRequired"])
            method = str(props.get("Method", "ANY")).upper()
            try:
                mode, timeout_s = transfer_mode(props), integration_timeout_s(props)
            except TransferModeError as exc:
                raise TemplateError(f"{fid}.{name}: {exc}") from exc
            routes.append(ApiRoute(fid, name, method, str(props["Path"]), api_id, required, mode, timeout_s))
        return routes

    # ---- S3 and SQS event sources

    def s3_events(self) -> list[S3EventSource]:
        sources = []
        for fid, name, props in self._events("S3"):
            bucket = ref_target(props.get("Bucket"))
            if bucket is None:
                raise TemplateError(f"{fid}.{name}: S3 events need Bucket: !Ref <bucket in this template>")
            events = props.get("Events", [])
            rules = ((props.get("Filter") or {}).get("S3Key") or {}).get("Rules") or []
            by_name = {str(rule["Name"]).lower(): str(rule["Value"]) for rule in rules}
            sources.append(
                S3EventSource(
                    function_id=fid,
                    event_name=name,
                    bucket_id=bucket,
                    events=tuple([events] if isinstance(events, str) else events),
                    prefix=by_name.get("prefix"),
                    suffix=by_name.get("suffix"),
                )
            )
        return sources

    def sqs_events(self) -> list[SqsEventSource]:
        sources = []
        for fid, name, props in self._events("SQS"):
            queue = props.get("Queue")
            target = ref_target(queue)
            if target is None and not isinstance(queue, str):
                raise TemplateError(f"{fid}.{name}: unsupported Queue {queue!r}")
            sources.append(
                SqsEventSource(
                    function_id=fid,
                    event_name=name,
                    queue=target or str(queue),
                    batch_size=int(props.get("BatchSize", 10)),
                    report_batch_item_failures="ReportBatchItemFailures" in (props.get("FunctionResponseTypes") or []),
                    enabled=bool(props.get("Enabled", True)),
                    max_concurrency=_maximum_concurrency(props),
                )
            )
        return sources

    # ---- environment

    def function_environment(self, logical_id: str, resolver: Resolver) -> dict[str, str]:
        """The function's environment (Globals first, then its own), with intrinsics resolved."""
        resolved = resolver.resolve(self.function(logical_id).environment)
        return {str(k): to_env_value(v) for k, v in resolved.items() if v is not NO_VALUE}


def _maximum_concurrency(props: dict[str, Any]) -> int | None:
    value = (props.get("ScalingConfig") or {}).get("MaximumConcurrency")
    return int(value) if isinstance(value, int | str) and str(value).isdigit() else None


def ref_target(value: Any) -> str | None:
    """The logical id behind ``!Ref X`` or ``!GetAtt X.Attr`` (None for anything else)."""
    if isinstance(value, dict) and len(value) == 1:
        if "Ref" in value and isinstance(value["Ref"], str):
            return value["Ref"]
        if "Fn::GetAtt" in value:
            target = value["Fn::GetAtt"]
            return str(target[0] if isinstance(target, list) else str(target).split(".", 1)[0])
    return None


def references(value: Any) -> set[str]:
    """Logical ids referenced anywhere inside ``value`` (Ref, GetAtt, and ${...} in Sub)."""
    found: set[str] = set()
    if isinstance(value, list):
        for item in value:
            found |= references(item)
    elif isinstance(value, dict):
        if target := ref_target(value):
            found.add(target)
        elif "Fn::Sub" in value:
            sub = value["Fn::Sub"]
            text = sub[0] if isinstance(sub, list) else sub
            for name in re.findall(r"\$\{([^!}][^}]*)\}", str(text)):
                found.add(name.split(".", 1)[0])
            if isinstance(sub, list) and len(sub) > 1:
                found |= references(sub[1])
        else:
            for item in value.values():
                found |= references(item)
    return {name for name in found if not name.startswith("AWS::")}


def dependency_order(template: Template, logical_ids: Iterable[str]) -> list[str]:
    """Order ``logical_ids`` so that each comes after the ones it references (cycles keep file order)."""
    pending = list(logical_ids)
    wanted = set(pending)
    deps = {
        lid: (references(template.resources[lid].get("Properties")) | set(_depends_on(template, lid))) & wanted
        for lid in pending
    }
    ordered: list[str] = []
    while pending:
        ready = [lid for lid in pending if not (deps[lid] - set(ordered))]
        batch = ready or pending[:1]  # a cycle: break it at the first one
        for lid in batch:
            ordered.append(lid)
            pending.remove(lid)
    return ordered


def _depends_on(template: Template, logical_id: str) -> list[str]:
    value = template.resources[logical_id].get("DependsOn") or []
    return [value] if isinstance(value, str) else list(value)
