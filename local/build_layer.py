"""Build the GatewayLayer content directory for AWS Lambda (python3.12, x86_64).

Produces ``<out>/python/`` containing:

* the runtime dependencies from ``layers/gateway/requirements.txt`` installed for Lambda with
  ``pip install --platform manylinux... --implementation cp --python-version 3.12 --only-binary=:all:``
  (works from any host Python; boto3 is not bundled, the Lambda runtime provides it);
* optionally ``momento`` (``--with-momento``; version spec from the ``momento`` extra in pyproject.toml);
* the ``llm_gateway`` package, with ``shared/`` copied to ``llm_gateway/_shared/``
  (``GATEWAY_SHARED_DIR=/opt/python/llm_gateway/_shared`` in template.yaml).

Bloat is stripped (``bin/``, ``__pycache__``, nested ``tests`` packages, dist-info ``RECORD`` files).
If a Python 3.12 interpreter is available (``python3.12``, or through pyenv), the tree is precompiled
with ``--invalidation-mode unchecked-hash``: .pyc files are then used on Lambda's read-only /opt even
though zip archives round file mtimes. Without Python 3.12 the layer ships sources only.

Usage: ``python -m local.build_layer --out .build/layer [--with-momento]`` (what ``make build`` runs).
:func:`build_layer` returns the layer directory and the per-package sizes, for reuse by benchmarks.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = REPO_ROOT / "layers" / "gateway" / "requirements.txt"
GATEWAY_PACKAGE = REPO_ROOT / "layers" / "gateway" / "llm_gateway"
SHARED_DIR = REPO_ROOT / "shared"
PYPROJECT = REPO_ROOT / "pyproject.toml"

PYTHON_VERSION = "3.12"
# Lambda's python3.12 runtime runs on Amazon Linux 2023 (glibc 2.34): both tags are compatible.
# pip prefers the earlier one when a package ships both.
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_28_x86_64")
MOMENTO_FALLBACK_SPEC = "momento>=1.29,<2"
# Unzipped size limit for a function plus all its layers.
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024

MARKER = ".llm-gateway-layer"  # written into <out> so a rebuild only ever deletes a layer build
STRIP_DIR_NAMES = frozenset({"__pycache__", "tests", "test"})
STRIP_TOP_LEVEL = frozenset({"bin"})
STRIP_DIST_INFO_FILES = frozenset({"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"})

Installer = Callable[[Sequence[str]], None]
PackageSizes = list[tuple[str, int]]

_EXT_SUFFIX = re.compile(r"\.(cpython-[^.]+|abi3)?\.?(so|pyd)$")


def momento_spec(pyproject: Path = PYPROJECT) -> str:
    """The momento requirement from pyproject's ``momento`` extra (single source of truth)."""
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
        for spec in data["project"]["optional-dependencies"]["momento"]:
            if str(spec).lower().startswith("momento"):
                return str(spec)
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        pass
    return MOMENTO_FALLBACK_SPEC


def pip_command(
    target: Path,
    *,
    requirements: Path = REQUIREMENTS,
    extra: Sequence[str] = (),
    python_version: str = PYTHON_VERSION,
    platforms: Sequence[str] = PLATFORMS,
) -> list[str]:
    """The pip command installing the layer's dependencies for Lambda into ``target``."""
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile"]
    for platform in platforms:
        cmd += ["--platform", platform]
    cmd += [
        "--implementation", "cp",
        "--python-version", python_version,
        "--only-binary=:all:",
        "--target", str(target),
        "-r", str(requirements),
        *extra,
    ]  # fmt: skip
    return cmd


def _run_pip(cmd: Sequence[str]) -> None:
    subprocess.run(list(cmd), check=True)


def find_python312() -> tuple[list[str], dict[str, str]] | None:
    """An interpreter command (and environment) for Python 3.12, or None.

    Tries ``$PYTHON312``, then ``python3.12``, then pyenv's newest installed 3.12.x through
    ``PYENV_VERSION`` (pyenv shims refuse ``python3.12`` when it is not the selected version).
    """
    env = dict(os.environ)
    candidates: list[tuple[list[str], dict[str, str]]] = []
    if env.get("PYTHON312"):
        candidates.append(([env["PYTHON312"]], env))
    candidates.append((["python3.12"], env))
    if shutil.which("pyenv"):
        try:
            out = subprocess.run(
                ["pyenv", "versions", "--bare"], capture_output=True, text=True, timeout=30, check=False
            ).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        versions = [v.strip() for v in out.splitlines() if re.fullmatch(r"3\.12\.\d+", v.strip())]
        versions.sort(key=lambda v: tuple(int(p) for p in v.split(".")), reverse=True)
        candidates += [(["python3.12"], {**env, "PYENV_VERSION": v}) for v in versions]
    probe = "import sys; print('%d.%d' % sys.version_info[:2])"
    for argv, cand_env in candidates:
        try:
            res = subprocess.run(
                [*argv, "-c", probe], capture_output=True, text=True, env=cand_env, timeout=30, check=False
            )
        except (OSError, subprocess.SubprocessError):
            continue
        if res.returncode == 0 and res.stdout.strip() == PYTHON_VERSION:
            return argv, cand_env
    return None


def _prepare_out(out: Path) -> Path:
    """Empty ``out`` (refusing to delete anything that is not a previous layer build)."""
    if out.exists():
        if not out.is_dir():
            raise SystemExit(f"error: {out} exists and is not a directory")
        if any(out.iterdir()) and not (out / MARKER).exists():
            raise SystemExit(f"error: {out} is not empty and was not made by build_layer.py; not deleting it")
        shutil.rmtree(out)
    python_dir = out / "python"
    python_dir.mkdir(parents=True)
    (out / MARKER).write_text("built by local/build_layer.py\n", encoding="utf-8")
    return python_dir


def copy_gateway(python_dir: Path, package: Path = GATEWAY_PACKAGE, shared: Path = SHARED_DIR) -> Path:
    """Copy the llm_gateway package and ``shared/`` (as ``llm_gateway/_shared``) into ``python_dir``."""
    if not package.is_dir():
        raise SystemExit(f"error: gateway package not found at {package}")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".mypy_cache", ".pytest_cache")
    dest = python_dir / package.name
    shutil.copytree(package, dest, ignore=ignore)
    if shared.is_dir():
        shutil.copytree(shared, dest / "_shared", ignore=ignore)
    return dest


def strip_bloat(python_dir: Path) -> int:
    """Remove files Lambda never uses; returns the number of bytes removed.

    ``tests``/``test`` directories are removed only inside packages (never a top-level package),
    dist-info directories are kept (``importlib.metadata.version()`` needs METADATA) minus RECORD.
    """
    removed = 0

    def rm(path: Path) -> None:
        nonlocal removed
        if path.is_dir() and not path.is_symlink():
            removed += tree_size(path)
            shutil.rmtree(path)
        else:
            removed += path.lstat().st_size
            path.unlink()

    for name in STRIP_TOP_LEVEL:
        if (python_dir / name).exists():
            rm(python_dir / name)
    for top in sorted(python_dir.iterdir()):
        if not top.is_dir():
            continue
        if top.name.endswith(".dist-info"):
            for f in top.iterdir():
                if f.name in STRIP_DIST_INFO_FILES:
                    rm(f)
            continue
        if top.name == "__pycache__":
            rm(top)
            continue
        for dirpath, dirnames, _ in os.walk(top, topdown=True):
            for d in list(dirnames):
                if d in STRIP_DIR_NAMES:
                    rm(Path(dirpath) / d)
                    dirnames.remove(d)
    return removed


def tree_size(path: Path) -> int:
    """Total size in bytes of the regular files under ``path`` (symlinks not followed)."""
    if path.is_file():
        return path.lstat().st_size
    total = 0
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            total += (Path(dirpath) / name).lstat().st_size
    return total


def package_name(entry: str) -> str:
    """Group a top-level entry of site-packages under a package name.

    ``pydantic`` -> pydantic, ``typing_extensions.py`` -> typing_extensions,
    ``_cffi_backend.cpython-312-x86_64-linux-gnu.so`` -> _cffi_backend,
    ``pydantic_core-2.27.2.dist-info`` -> pydantic_core, ``grpcio.libs`` -> grpcio.
    """
    if entry.endswith((".dist-info", ".egg-info", ".data")):
        return entry.rsplit(".", 1)[0].split("-", 1)[0]
    if entry.endswith(".libs"):
        return entry[: -len(".libs")]
    if entry.endswith((".py", ".pth")):
        return entry.rsplit(".", 1)[0]
    stripped = _EXT_SUFFIX.sub("", entry)
    return stripped or entry


def package_sizes(python_dir: Path) -> PackageSizes:
    """(package, size_bytes) for each top-level package of ``python_dir``, largest first.

    The package's dist-info directory, ``*.libs`` directory and extension modules are counted with it.
    """
    sizes: dict[str, int] = {}
    for entry in python_dir.iterdir():
        name = package_name(entry.name)
        sizes[name] = sizes.get(name, 0) + tree_size(entry)
    return sorted(sizes.items(), key=lambda item: (-item[1], item[0]))


def compile_tree(python_dir: Path, python: tuple[list[str], dict[str, str]]) -> None:
    """Precompile ``python_dir`` with the given interpreter, paths as seen on Lambda (/opt/python)."""
    argv, env = python
    subprocess.run(
        [
            *argv, "-m", "compileall", "-q", "-j", "0",
            "--invalidation-mode", "unchecked-hash",
            "-s", str(python_dir), "-p", "/opt/python",
            str(python_dir),
        ],
        check=True,
        env=env,
    )  # fmt: skip


def build_layer(
    out: Path = REPO_ROOT / ".build" / "layer",
    *,
    with_momento: bool = False,
    compile_pyc: bool = True,
    installer: Installer = _run_pip,
    requirements: Path = REQUIREMENTS,
    package: Path = GATEWAY_PACKAGE,
    shared: Path = SHARED_DIR,
    python312: tuple[list[str], dict[str, str]] | None = None,
    log: Callable[[str], None] = print,
) -> tuple[Path, PackageSizes]:
    """Build the layer into ``out``; returns (layer dir, package sizes largest first).

    ``installer`` receives the pip command (tests pass a fake); ``python312`` overrides interpreter
    discovery for the .pyc step.
    """
    out = Path(out).resolve()
    python_dir = _prepare_out(out)
    extra = [momento_spec()] if with_momento else []
    log(f"installing layer dependencies for python{PYTHON_VERSION}/x86_64 into {python_dir}")
    installer(pip_command(python_dir, requirements=requirements, extra=extra))
    removed = strip_bloat(python_dir)  # before copying our own package, which is left as is
    log(f"stripped {removed / 1e6:.1f} MB (bin/, __pycache__, tests, dist-info RECORD)")
    copy_gateway(python_dir, package, shared)
    if (python_dir / "botocore").exists():
        log("warning: botocore/boto3 got bundled (a dependency pulled it); the Lambda runtime provides it")
    if compile_pyc:
        interpreter = python312 or find_python312()
        if interpreter is None:
            log("python3.12 not found: skipping .pyc precompilation (the layer ships sources only)")
        else:
            compile_tree(python_dir, interpreter)
            log("precompiled .pyc with python3.12 (unchecked-hash)")
    return out, package_sizes(python_dir)


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError("unreachable")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / ".build" / "layer", help="layer directory")
    parser.add_argument("--with-momento", action="store_true", help="also bundle the momento SDK")
    parser.add_argument("--no-compile", action="store_true", help="do not precompile .pyc")
    parser.add_argument("--top", type=int, default=12, help="how many packages to list")
    args = parser.parse_args(argv)

    layer_dir, sizes = build_layer(args.out, with_momento=args.with_momento, compile_pyc=not args.no_compile)
    total = sum(size for _, size in sizes)
    print(f"layer: {layer_dir} ({_human(total)} unzipped, Lambda limit {_human(LAMBDA_UNZIPPED_LIMIT)})")
    for name, size in sizes[: args.top]:
        print(f"  {_human(size):>10}  {name}")
    if total > LAMBDA_UNZIPPED_LIMIT * 0.8:
        print("warning: the layer uses more than 80% of Lambda's unzipped size limit", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
