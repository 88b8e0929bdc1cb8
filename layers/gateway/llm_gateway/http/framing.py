"""Framing shared by every entry point: body decoding and limits, validation errors, tenant identity,
deadlines, error bodies and error logging.

Plain functions over dicts, so the handlers stay thin and this stays testable without Lambda.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from llm_gateway.after_response import RUN_NOW, Deferral
from llm_gateway.errors import GatewayError, InvalidRequestError, PayloadTooLargeError, SchemaError
from llm_gateway.interfaces import RequestContext
from llm_gateway.models import CompletionRequest, JsonSchemaFormat
from llm_gateway.routing.deadline import Deadline

M = TypeVar("M", bound=BaseModel)

# Deeper than any request the gateway accepts needs (a response schema may nest 64 levels, see
# schemas.MAX_JSON_NESTING, inside a job's input): deeper documents are refused before anything
# recurses into them (pydantic's serializer gives up at a few hundred levels, with a 500).
MAX_JSON_DEPTH = 100
API_GATEWAY_TIMEOUT_MS = 29_000  # a REST API's integration timeout, whatever the function's own
MAX_ERRORS = 20  # problems listed in a 400; any more are counted (details.error_count), not formatted
MAX_ERRORS_EXAMINED = 1000  # pydantic errors looked at to build those (bounded work for any body)
MAX_INTEGER_DIGITS = 4300  # Python's own int() limit: longer literals are refused, never converted
MAX_PARAM_PART_CHARS = 64  # a key echoed in ``param`` is cut here
_STACK_FRAMES = 8

# Parts of a pydantic error location that name a union member ("str", "list[...]", "TextPart") rather
# than a field: left out of the ``param`` a caller sees.
_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "bytes", "list", "dict", "none", "json-or-python"})


# --------------------------------------------------------------------------- bodies


def read_body(event: Mapping[str, Any]) -> str | None:
    """The text body of an API Gateway proxy event, decoding base64; a 400 when it is not UTF-8.

    Powertools' ``decoded_body`` raises UnicodeDecodeError (or binascii.Error) on such bodies: a 500.
    """
    body = event.get("body")
    if body is None:
        return None
    if not isinstance(body, str):
        raise InvalidRequestError("the body must be text (JSON)", details={"param": "body"})
    if event.get("isBase64Encoded"):
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequestError("the body is not valid base64", details={"param": "body"}) from None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _not_utf8() from None
    try:
        body.encode("utf-8")  # a lone surrogate would fail every later encode
    except UnicodeEncodeError:
        raise _not_utf8() from None
    return body


def _not_utf8() -> InvalidRequestError:
    return InvalidRequestError("the body is not valid UTF-8", details={"param": "body"})


def parse_json_body(body: str | None, *, max_bytes: int) -> Any:
    """The body as JSON, or a 400/413: too large, not JSON, too deep, or holding a value JSON or this
    gateway cannot represent (NaN, Infinity, a number that overflows, a lone surrogate), named by ``param``."""
    if body is None or not body.strip():
        raise InvalidRequestError("the request body is empty; send a JSON object", details={"param": "body"})
    size = len(body.encode("utf-8", errors="replace"))
    if size > max_bytes:
        raise PayloadTooLargeError(
            f"the request body is {size} bytes; the limit is {max_bytes}", details={"limit": max_bytes}
        )
    try:
        # Python's json accepts NaN/Infinity and turns 1e999 into inf, and int() raises past 4,300
        # digits: the hooks below mark such values instead, for check_json to name where they are.
        data = json.loads(body, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant)
    except RecursionError:  # json's decoder recurses per nesting level
        raise _too_deep("the request body", MAX_JSON_DEPTH, "body") from None
    except json.JSONDecodeError as exc:
        raise InvalidRequestError(
            f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            details={"param": "body"},
        ) from None
    check_json(data, what="the request body", param="body")
    return data


class _Unrepresentable:
    """Stands in for a number the body spelled but that JSON or Python cannot carry; says why."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _parse_int(text: str) -> int | _Unrepresentable:
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:  # int() of longer literals raises, or is quadratic
        return _Unrepresentable(f"an integer of more than {MAX_INTEGER_DIGITS} digits is not accepted")
    return int(text)


def _parse_float(text: str) -> float | _Unrepresentable:
    value = float(text)
    return value if math.isfinite(value) else _Unrepresentable("must be a finite number (this one overflows)")


def _parse_constant(name: str) -> _Unrepresentable:
    return _Unrepresentable(f"{name} is not valid JSON; send a finite number")


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """Whether ``value`` nests objects/arrays more than ``limit`` levels deep (iteratively: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if level > limit:
            return True
        stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return False


def check_json_depth(
    value: Any, *, limit: int = MAX_JSON_DEPTH, what: str = "the request", param: str = "body"
) -> None:
    """Kept for callers of the old name: :func:`check_json` checks depth and values in one pass."""
    check_json(value, limit=limit, what=what, param=param)


# A path is a linked list of (parent, key) pairs: extending it is O(1), and only a path that is
# reported is ever joined into a ``param``.
_Path = tuple[Any, str] | None


def check_json(value: Any, *, limit: int = MAX_JSON_DEPTH, what: str = "the request", param: str = "body") -> None:
    """One linear, iterative pass: nesting within ``limit`` (else 400 naming ``param``), and no value a
    JSON encoder or UTF-8 cannot carry (NaN, infinities, overlong integers, lone surrogates in strings
    or keys), else a 400 naming where it is (``messages.0.content``)."""
    stack: list[tuple[Any, int, _Path]] = [(value, 1, None)]
    while stack:
        node, level, path = stack.pop()
        if isinstance(node, dict):
            if level > limit:
                raise _too_deep(what, limit, param)
            for key, child in node.items():
                child_path = (path, key)
                if isinstance(key, str) and not _is_utf8(key):
                    raise invalid(_param(child_path, param), "the key holds a lone surrogate (not valid Unicode)")
                stack.append((child, level + 1, child_path))
        elif isinstance(node, list):
            if level > limit:
                raise _too_deep(what, limit, param)
            stack.extend((child, level + 1, (path, str(index))) for index, child in enumerate(node))
        elif isinstance(node, str):
            if not _is_utf8(node):
                raise invalid(
                    _param(path, param), "holds a lone surrogate (\\ud800-\\udfff alone is not valid Unicode)"
                )
        elif isinstance(node, _Unrepresentable):
            raise invalid(_param(path, param), node.reason)
        elif isinstance(node, float) and not math.isfinite(node):  # an event decoded by someone else's json
            raise invalid(_param(path, param), "must be a finite number (NaN and infinities are not JSON)")


def _is_utf8(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _param(path: _Path, root: str) -> str:
    parts: list[str] = []
    while path is not None:
        path, key = path
        parts.append(_printable_part(str(key)))
    return ".".join(reversed(parts)) or root


def _printable_part(part: str) -> str:
    """A key as it can be echoed back: surrogates escaped, long keys cut (the body may be 1 MiB)."""
    safe = part.encode("utf-8", "backslashreplace").decode("utf-8")
    return safe if len(safe) <= MAX_PARAM_PART_CHARS else safe[:MAX_PARAM_PART_CHARS] + "..."


def _too_deep(what: str, limit: int, param: str) -> InvalidRequestError:
    return InvalidRequestError(f"{what} nests more than {limit} levels deep", details={"param": param, "limit": limit})


def check_response_format(request: CompletionRequest, *, param: str) -> None:
    """A response schema within the limits extraction applies (schemas.py), before it is serialized,
    cached or sent: 400 ``invalid_schema`` otherwise."""
    fmt = request.response_format
    if not isinstance(fmt, JsonSchemaFormat):
        return
    from llm_gateway.structured import schemas  # light: jsonschema itself is imported only to validate

    if json_depth_exceeds(fmt.json_schema, schemas.MAX_JSON_NESTING):
        raise SchemaError(
            f"the schema nests more than {schemas.MAX_JSON_NESTING} levels deep",
            details={"param": param, "limit": schemas.MAX_JSON_NESTING},
        )
    size = len(json.dumps(fmt.json_schema, separators=(",", ":")).encode("utf-8", errors="replace"))
    if size > schemas.MAX_SCHEMA_BYTES:
        raise SchemaError(
            f"the schema is {size} bytes; the limit is {schemas.MAX_SCHEMA_BYTES}",
            details={"param": param, "limit": schemas.MAX_SCHEMA_BYTES},
        )


# --------------------------------------------------------------------------- validation


def invalid(param: str, message: str) -> InvalidRequestError:
    """A 400 naming the offending parameter, shaped like :func:`validate`'s."""
    return InvalidRequestError(
        f"{param}: {message}", details={"param": param, "errors": [{"param": param, "message": message}]}
    )


def validate(model: type[M], data: Any, *, rename: Mapping[str, str] | None = None) -> M:
    """Validate into ``model``; pydantic errors become one readable InvalidRequestError.

    ``rename`` maps a top-level field to the name the caller used for it (e.g. ``tier`` -> ``model``).
    Linear in the number of errors however many there are (a body may hold 50,000 wrong values): at
    most MAX_ERRORS are listed, the rest only counted.
    """
    if not isinstance(data, dict):
        raise InvalidRequestError("the request body must be a JSON object", details={"param": "body"})
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        raise invalid_request(errors, rename) from None


def invalid_request(
    errors: Sequence[Mapping[str, Any]], rename: Mapping[str, str] | None = None, *, skip: int = 0
) -> InvalidRequestError:
    """pydantic-style errors (``loc``, ``msg``) as one readable 400 naming the first parameter at fault.

    ``skip`` drops leading location parts (Powertools' validation puts ``body`` first).
    """
    problems, total = _problems(errors, rename or {}, skip)
    first = problems[0]
    details: dict[str, Any] = {"param": first["param"], "errors": problems}
    if total > len(problems):
        details["error_count"] = total
    return InvalidRequestError(
        f"{first['param']}: {first['message']}" + (f" (and {total - 1} more)" if total > 1 else ""),
        details=details,
    )


def _problems(
    errors: Sequence[Mapping[str, Any]], rename: Mapping[str, str], skip: int = 0
) -> tuple[list[dict[str, str]], int]:
    """(the first MAX_ERRORS distinct problems, how many there are in all).

    Only the first MAX_ERRORS_EXAMINED errors are looked at, so the cost is bounded whatever the body;
    past that the total is the raw count of errors (union alternatives included).
    """
    found: list[tuple[list[str], str, bool]] = []
    tree: dict[str, Any] = {}  # a trie of every error path: which paths have an error deeper inside
    # Location parts repeat across errors (field names, union members, small indexes): each distinct one
    # is classified once (None: a union member's tag, left out of the path).
    texts: dict[Any, str | None] = {}
    for error in errors[:MAX_ERRORS_EXAMINED]:
        loc = error["loc"][skip:] if skip else error["loc"]
        path = []
        for part in loc:
            try:
                text = texts[part]
            except KeyError:
                text = texts[part] = None if _is_type_tag(part) else str(part)
            if text is not None:
                path.append(text)
        if path and path[0] in rename:
            path[0] = rename[path[0]]
        found.append((path, error["msg"], bool(loc) and texts[loc[-1]] is None))
        node = tree
        for part in path:
            node = node.setdefault(part, {})
    printable: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()
    problems: list[dict[str, str]] = []
    for path, message, wrong_member in found:
        # A value that matches no member of a union gets one error per member; when some member got
        # further (an error deeper inside the value), "not a <member>" is noise.
        if wrong_member and _has_deeper(tree, path):
            continue
        shown = []
        for part in path:
            try:
                shown.append(printable[part])
            except KeyError:
                shown.append(printable.setdefault(part, _printable_part(part)))
        param = ".".join(shown) or "body"
        key = (param, message)
        if key in seen:
            continue
        seen.add(key)
        if len(problems) < MAX_ERRORS:
            problems.append({"param": param, "message": message})
    if not problems:
        return [{"param": "body", "message": "invalid request"}], 1
    return problems, (len(seen) if len(errors) <= MAX_ERRORS_EXAMINED else len(errors))


def _has_deeper(tree: dict[str, Any], path: list[str]) -> bool:
    node = tree
    for part in path:
        node = node[part]
    return bool(node)


def _is_type_tag(part: Any) -> bool:
    return isinstance(part, str) and ("[" in part or part in _TYPE_TAGS or part[:1].isupper())


# --------------------------------------------------------------------------- time


def http_remaining_ms(
    remaining_ms: int | None,
    *,
    request_epoch_ms: Any = None,
    now_ms: float | None = None,
    budget_ms: int | None = API_GATEWAY_TIMEOUT_MS,
) -> int | None:
    """Time left to answer an API Gateway request: ``budget_ms`` (API Gateway gives up after 29 s whatever
    the function's timeout) counted from when it received the request (a cold start's init included).
    None: no budget of its own (a streamed answer may last as long as the function may run)."""
    if budget_ms is None:
        return remaining_ms
    budget = budget_ms
    if isinstance(request_epoch_ms, int | float) and not isinstance(request_epoch_ms, bool):
        elapsed = (time.time() * 1000.0 if now_ms is None else now_ms) - float(request_epoch_ms)
        if 0 <= elapsed < budget_ms:  # else a replayed or sample event: not a clock to trust
            budget -= int(elapsed)
    return budget if remaining_ms is None else min(remaining_ms, budget)


def request_context_for(
    *,
    tenant: str,
    request_id: str,
    remaining_ms: int | None,
    margin_s: float,
    operation: str,
    log_prompts: bool,
    defer: Deferral = RUN_NOW,
) -> RequestContext:
    remaining_s = (remaining_ms / 1000.0) if remaining_ms is not None else 60.0
    return RequestContext(
        tenant=tenant,
        request_id=request_id,
        deadline=Deadline(max(remaining_s - margin_s, 0.0)),
        operation=operation,
        log_prompts=log_prompts,
        defer=defer,
    )


# --------------------------------------------------------------------------- errors


def error_body(err: GatewayError) -> dict[str, Any]:
    """The gateway's own error shape: ``{"error": {"code", "message", "details"?}}``."""
    return {"error": err.to_dict()}


def log_unexpected(
    logger: Any, err: BaseException, what: str = "unexpected error", *, log_prompts: bool = False, **fields: Any
) -> None:
    """Log an unexpected exception by type and location only: its message may quote the caller's input
    (pydantic's do), so the message and traceback are logged only when prompt logging is on."""
    if log_prompts:
        logger.exception(what, extra=fields)  # called from the except block that caught ``err``
        return
    frames = traceback.extract_tb(err.__traceback__)[-_STACK_FRAMES:]
    stack = [f"{Path(f.filename).name}:{f.lineno} in {f.name}" for f in frames]
    logger.error(
        what,
        extra={
            **fields,
            "error_type": f"{type(err).__module__}.{type(err).__qualname__}",
            "location": stack[-1] if stack else "unknown",
            "stack": stack,
        },
    )


_NAMED: dict[str, type[Exception]] = {}


def error_class_name(code: str) -> str:
    """``rate_limited`` -> ``RateLimitedError``; ``provider_auth_error`` -> ``ProviderAuthError`` (no ...ErrorError)."""
    return "".join(part.capitalize() for part in code.removesuffix("_error").split("_")) + "Error"


def named_error(err: GatewayError) -> Exception:
    """An exception whose class name is the error code in CamelCase (``rate_limited`` -> ``RateLimitedError``).

    Lambda reports the class name as ``errorType``, which is what a Step Functions ``Retry``/``Catch``
    matches on; the message is the JSON error body, which lands in the state's ``Cause``.
    """
    name = error_class_name(err.code)
    cls = _NAMED.get(name)
    if cls is None:
        cls = type(name, (Exception,), {"__module__": "llm_gateway"})
        _NAMED[name] = cls
    body = err.to_dict()
    body["retryable"] = err.retryable
    return cls(json.dumps(body))
