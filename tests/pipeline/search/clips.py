"""Cutting query clips out of library signals (the one helper the search tests share)."""
from __future__ import annotations

import numpy as np

from pipeline.synth import SR

__all__ = ["cut"]


def cut(y: np.ndarray, start_s: float, seconds: float = 6.0, extra_samples: int = 0, sr: int = SR) -> np.ndarray:
    """``seconds`` of ``y`` (at ``sr``) from ``start_s`` plus ``extra_samples`` samples, so a clip
    can start between analysis frames."""
    a = int(start_s * sr) + extra_samples
    return y[a: a + int(seconds * sr)]
