#!/usr/bin/env bash
# Create .venv and install chromaray with everything it needs (idempotent).
# torch is pinned first to the CPU build that pip finds locally; a bare `torch`
# could pull a multi-GB CUDA build. GPU users: see the README.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0" || .venv/bin/python -m pip install --quiet "torch>=2.4"
.venv/bin/python -m pip install --quiet -e ".[dev]"
