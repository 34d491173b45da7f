#!/usr/bin/env bash
# Install, then run the fingerprint job on the bundled demo library (synthesized on first run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/chromaray fingerprint --db results/chromaray.db --out results "$@"
