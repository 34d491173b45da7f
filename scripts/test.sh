#!/usr/bin/env bash
# Install (Python packages + the system packages the browser test needs), lint, type-check,
# then run the whole suite. Extra arguments go to pytest (e.g. -m "not ray and not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi
bash scripts/setup.sh
echo "ruff check ..."
.venv/bin/ruff check .
echo "mypy ..."
.venv/bin/mypy
export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 HF_HUB_OFFLINE=1
.venv/bin/python -m pytest -q -ra --durations=15 "$@"
