"""local/build_layer.py without network: fake site-packages trees and a fake pip."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from local import build_layer as bl


def write(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)


def fake_site_packages(root: Path) -> Path:
    """A python/ dir shaped like a pip --target install."""
    write(root / "pydantic" / "__init__.py", 300)
    write(root / "pydantic" / "main.py", 700)
    write(root / "pydantic-2.9.0.dist-info" / "METADATA", 50)
    write(root / "pydantic_core" / "_pydantic_core.cpython-312-x86_64-linux-gnu.so", 5000)
    write(root / "pydantic_core-2.23.0.dist-info" / "METADATA", 40)
    write(root / "typing_extensions.py", 200)
    write(root / "_cffi_backend.cpython-312-x86_64-linux-gnu.so", 900)
    write(root / "grpcio.libs" / "libz.so.1", 100)
    write(root / "grpcio-1.60.0.dist-info" / "METADATA", 10)
    write(root / "httpx" / "__init__.py", 400)
    return root


def test_package_name_grouping() -> None:
    assert bl.package_name("pydantic") == "pydantic"
    assert bl.package_name("pydantic_core-2.23.0.dist-info") == "pydantic_core"
    assert bl.package_name("typing_extensions.py") == "typing_extensions"
    assert bl.package_name("_cffi_backend.cpython-312-x86_64-linux-gnu.so") == "_cffi_backend"
    assert bl.package_name("_speedups.abi3.so") == "_speedups"
    assert bl.package_name("grpcio.libs") == "grpcio"


def test_package_sizes_sorted_largest_first(tmp_path: Path) -> None:
    sizes = bl.package_sizes(fake_site_packages(tmp_path))
    assert sizes == [
        ("pydantic_core", 5040),
        ("pydantic", 1050),
        ("_cffi_backend", 900),
        ("httpx", 400),
        ("typing_extensions", 200),
        ("grpcio", 110),
    ]
    assert sum(size for _, size in sizes) == bl.tree_size(tmp_path)


def test_strip_bloat_keeps_metadata_and_top_level_packages(tmp_path: Path) -> None:
    root = fake_site_packages(tmp_path)
    write(root / "bin" / "httpx", 100)
    write(root / "__pycache__" / "typing_extensions.cpython-311.pyc", 100)
    write(root / "pydantic" / "__pycache__" / "main.cpython-311.pyc", 100)
    write(root / "httpx" / "tests" / "test_client.py", 100)
    write(root / "pydantic-2.9.0.dist-info" / "RECORD", 100)
    write(root / "test" / "__init__.py", 10)  # a top-level package named "test" is left alone

    removed = bl.strip_bloat(root)

    assert removed == 500
    assert not (root / "bin").exists()
    assert not (root / "__pycache__").exists()
    assert not (root / "pydantic" / "__pycache__").exists()
    assert not (root / "httpx" / "tests").exists()
    assert not (root / "pydantic-2.9.0.dist-info" / "RECORD").exists()
    assert (root / "pydantic-2.9.0.dist-info" / "METADATA").exists()
    assert (root / "test" / "__init__.py").exists()
    assert (root / "pydantic" / "main.py").exists()


def test_pip_command_targets_lambda(tmp_path: Path) -> None:
    cmd = bl.pip_command(tmp_path / "python", extra=["momento>=1.29,<2"])
    assert cmd[:4] == [sys.executable, "-m", "pip", "install"]
    assert cmd[cmd.index("--platform") + 1] == "manylinux2014_x86_64"
    assert cmd[cmd.index("--implementation") + 1] == "cp"
    assert cmd[cmd.index("--python-version") + 1] == "3.12"
    assert "--only-binary=:all:" in cmd
    assert "--no-compile" in cmd  # .pyc from the host Python would be the wrong version
    assert cmd[cmd.index("--target") + 1] == str(tmp_path / "python")
    assert cmd[cmd.index("-r") + 1] == str(bl.REQUIREMENTS)
    assert cmd[-1] == "momento>=1.29,<2"


def test_requirements_exclude_boto3_and_momento() -> None:
    names = [
        line.split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()
        for line in bl.REQUIREMENTS.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert set(names) == {"aws-lambda-powertools", "pydantic", "httpx", "tenacity", "jsonschema", "pypdf", "google-re2"}


def test_momento_spec_from_pyproject(tmp_path: Path) -> None:
    assert bl.momento_spec().startswith("momento")
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project.optional-dependencies]\nmomento = ["momento==1.30.0"]\n')
    assert bl.momento_spec(pyproject) == "momento==1.30.0"
    assert bl.momento_spec(tmp_path / "missing.toml") == bl.MOMENTO_FALLBACK_SPEC


def fake_sources(tmp_path: Path) -> tuple[Path, Path]:
    package = tmp_path / "src" / "llm_gateway"
    write(package / "__init__.py", 10)
    write(package / "providers" / "openai.py", 20)
    write(package / "__pycache__" / "x.cpython-311.pyc", 5)
    shared = tmp_path / "shared"
    write(shared / "catalog.json", 30)
    write(shared / "prompts" / "summarize.txt", 40)
    return package, shared


def test_build_layer_with_fake_pip(tmp_path: Path) -> None:
    package, shared = fake_sources(tmp_path)
    calls: list[Sequence[str]] = []

    def fake_pip(cmd: Sequence[str]) -> None:
        calls.append(cmd)
        fake_site_packages(Path(cmd[cmd.index("--target") + 1]))

    out = tmp_path / "build" / "layer"
    layer_dir, sizes = bl.build_layer(
        out,
        with_momento=True,
        compile_pyc=False,
        installer=fake_pip,
        package=package,
        shared=shared,
        log=lambda _msg: None,
    )

    assert layer_dir == out.resolve()
    assert len(calls) == 1
    assert calls[0][-1].startswith("momento")
    python_dir = out / "python"
    assert (python_dir / "llm_gateway" / "providers" / "openai.py").exists()
    assert not (python_dir / "llm_gateway" / "__pycache__").exists()
    assert (python_dir / "llm_gateway" / "_shared" / "catalog.json").read_bytes() == b"x" * 30
    assert (python_dir / "llm_gateway" / "_shared" / "prompts" / "summarize.txt").exists()
    assert dict(sizes)["llm_gateway"] == 100
    assert sizes[0] == ("pydantic_core", 5040)
    assert [s for _, s in sizes] == sorted((s for _, s in sizes), reverse=True)

    # A rebuild replaces the previous build.
    write(python_dir / "stale.py", 1)
    bl.build_layer(out, compile_pyc=False, installer=fake_pip, package=package, shared=shared, log=lambda _m: None)
    assert not (python_dir / "stale.py").exists()
    assert "momento" not in " ".join(calls[-1])


def test_build_layer_refuses_to_wipe_foreign_directory(tmp_path: Path) -> None:
    package, shared = fake_sources(tmp_path)
    write(tmp_path / "precious" / "notes.txt", 1)
    with pytest.raises(SystemExit, match="not deleting"):
        bl.build_layer(
            tmp_path / "precious",
            compile_pyc=False,
            installer=lambda _cmd: None,
            package=package,
            shared=shared,
            log=lambda _m: None,
        )
    assert (tmp_path / "precious" / "notes.txt").exists()


def test_compile_tree_uses_unchecked_hash_pycs(tmp_path: Path) -> None:
    # Any interpreter exercises the mechanism; the real build uses python3.12.
    write(tmp_path / "pkg" / "__init__.py", 0)
    (tmp_path / "pkg" / "mod.py").write_text("VALUE = 1\n")
    bl.compile_tree(tmp_path, ([sys.executable], {}))
    tag = sys.implementation.cache_tag
    pyc = tmp_path / "pkg" / "__pycache__" / f"mod.{tag}.pyc"
    flags = int.from_bytes(pyc.read_bytes()[4:8], "little")
    assert flags == 0b01  # hash-based, check_source off


def test_the_stream_runtime_wrapper_lands_executable_where_the_template_names_it(tmp_path: Path) -> None:
    """template.yaml's AWS_LAMBDA_EXEC_WRAPPER is /opt/python/llm_gateway/stream_runtime/wrapper: the layer's
    python/ directory is /opt/python, and Lambda can only exec the wrapper if its mode survived the copy."""
    import os

    python_dir = tmp_path / "python"
    python_dir.mkdir()
    bl.copy_gateway(python_dir)
    wrapper = python_dir / "llm_gateway" / "stream_runtime" / "wrapper"
    assert wrapper.is_file() and os.access(wrapper, os.X_OK)
    assert wrapper.read_text().startswith("#!/bin/bash")
