#!/usr/bin/env bash
# Bench-only virtualenvs, kept apart from .venv so LiteLLM's dependencies never touch the project's:
#   .venv-bench-litellm  litellm[proxy] (the peer we compare against) and matplotlib (the chart)
#   .venv-bench-312      Python 3.12 with boto3 only: the Lambda runtime, which imports our built layer
# Both are created once and reused (delete them to refresh). A missing Python 3.12 is not an error:
# the cold-start part then runs our handlers on this interpreter from the sources, and says so.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
LITELLM_SPEC=${LITELLM_SPEC:-litellm[proxy]}

make_venv() {  # make_venv DIR INTERPRETER PACKAGES...
  local dir=$1 python=$2
  shift 2
  if [ -x "$dir/bin/python" ] && [ -f "$dir/.installed" ]; then
    return 0
  fi
  echo "bench: creating $dir with $("$python" -V 2>&1)"
  rm -rf "$dir"
  "$python" -m venv "$dir"
  "$dir/bin/python" -m pip install --quiet --upgrade pip
  "$dir/bin/python" -m pip install --quiet "$@"
  touch "$dir/.installed"
}

find_python312() {  # python3.12 on PATH, else a pyenv- or uv-managed one
  local candidate
  for candidate in python3.12 "$(command -v pyenv >/dev/null 2>&1 && pyenv root)/versions/"3.12*/bin/python3.12; do
    if [ -n "$candidate" ] && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
      command -v "$candidate"
      return 0
    fi
  done
  if command -v uv >/dev/null 2>&1; then
    uv python find 3.12 2>/dev/null && return 0
  fi
  return 1
}

make_venv .venv-bench-litellm "$PYTHON" "$LITELLM_SPEC" matplotlib
if python312=$(find_python312); then
  make_venv .venv-bench-312 "$python312" boto3
else
  echo "bench: no Python 3.12 found; cold start will run on $("$PYTHON" -V 2>&1) from the sources" >&2
fi
