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
log=.venv/install.log
pip() { .venv/bin/python -m pip "$@" >>"$log" 2>&1 || { tail -n 60 "$log"; echo "install failed (log: $log)" >&2; return 1; }; }
echo "installing into .venv (log: $log) ..."
pip install --upgrade pip
pip install "torch==2.13.0" || pip install "torch>=2.4"
pip install -e ".[dev]"
