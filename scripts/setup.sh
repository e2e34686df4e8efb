#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv with pinned versions from constraints.txt.
# The constraints pin the CPU build of torch; the published package only asks for a version range.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "querylife needs Python >= 3.10")'
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip 2>&1 | grep -v "is ignored" || true
# Install torch first on its own so that no other package can pull a different (CUDA) build.
.venv/bin/python -m pip install --quiet -c constraints.txt torch 2>&1 | grep -v "is ignored" || true
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".[dev]" 2>&1 | grep -v "is ignored" || true
.venv/bin/python -c "import querylife, torch; print(f'querylife {querylife.__version__} ready (torch {torch.__version__})')"
