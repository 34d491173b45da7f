"""python -m pipeline.synth [OUTDIR]: write the demo library (default results/demo-library)."""
from __future__ import annotations

import sys

from pipeline.synth.library import make_demo_library

if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "results/demo-library"
    print(f"{make_demo_library(target)} files in {target}")
