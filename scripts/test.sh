#!/usr/bin/env bash
# Install (Python packages + the system packages the browser test needs), lint, type-check,
# then run the whole suite. Extra arguments go to pytest (e.g. -m "not ray and not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
# chromium for the dashboard test, ffmpeg for codec tests, fluidsynth + a GM soundfont for MIDI renderings.
bash scripts/system_deps.sh chromium chromium-driver ffmpeg fluidsynth fluid-soundfont-gm
bash scripts/setup.sh
echo "ruff check ..."
.venv/bin/ruff check .
echo "mypy ..."
.venv/bin/mypy
export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 HF_HUB_OFFLINE=1
echo "gpu_check --smoke (the GPU check's CPU twin) ..."
.venv/bin/python benchmarks/gpu_check.py --smoke --json benchmarks/out/gpu_check_smoke.json
.venv/bin/python -m pytest -q -ra --durations=15 "$@"
