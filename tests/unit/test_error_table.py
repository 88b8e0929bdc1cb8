"""The README's table of the exception tree matches ``llm_gateway.errors``, class by class, so it cannot drift."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from llm_gateway import errors
from llm_gateway.http import framing

README = Path(__file__).resolve().parents[2] / "README.md"
HEADER = "| Class | Code | HTTP | Retryable |"
ROW = re.compile(r"^\| `(\w+)` \| `(\w+)` \| (\d{3}) \| (yes|no) \|$")


def readme_rows() -> list[tuple[str, str, int, bool]]:
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index(HEADER) + 2  # past the header and its separator
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        match = ROW.match(line)
        assert match, f"malformed row: {line}"
        name, code, status, retryable = match.groups()
        rows.append((name, code, int(status), retryable == "yes"))
    return rows


def tree() -> list[tuple[str, str, int, bool]]:
    source = inspect.getsource(errors)
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.GatewayError)]
    classes.sort(key=lambda c: source.index(f"class {c.__name__}("))
    return [(c.__name__, c.code, c.http_status, c.retryable) for c in classes]


def test_the_readme_lists_every_error_class_with_its_code_status_and_retryability() -> None:
    assert readme_rows() == tree()


def test_every_code_names_a_step_functions_error_and_an_http_error() -> None:
    for name, code, status, _ in tree():
        assert 400 <= status <= 599, name
        assert re.fullmatch(r"[a-z][a-z_]*", code), name
        assert framing.error_class_name(code).endswith("Error"), name
