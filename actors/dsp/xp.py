"""Array-module plumbing: one DSP code path for NumPy (CPU) and CuPy (GPU).

On a machine without a GPU ``import cupy`` may succeed while every operation
raises, and parts of ``cupyx.scipy`` fail to import, so availability is probed
once with a real allocation and cached.
"""
from __future__ import annotations

import functools
from types import ModuleType
from typing import Any

import numpy as np


@functools.lru_cache(maxsize=1)
def cupy_or_none() -> ModuleType | None:
    """CuPy if it imports *and* a device answers, else None."""
    try:
        import cupy

        cupy.zeros(1).sum().item()
        return cupy
    except Exception:  # ImportError, CUDARuntimeError, missing driver ...
        return None


def gpu_available() -> bool:
    return cupy_or_none() is not None


def get_xp(*arrays: Any) -> ModuleType:
    """The array module the inputs live in (numpy unless one is a CuPy array)."""
    cp = cupy_or_none()
    if cp is not None:
        return cp.get_array_module(*arrays)
    return np


def to_numpy(x: Any) -> np.ndarray:
    """Host copy of an array from either module."""
    if isinstance(x, np.ndarray):
        return x
    get = getattr(x, "get", None)
    return get() if callable(get) else np.asarray(x)


def scipy_for(xp: ModuleType) -> ModuleType:
    """``scipy`` for NumPy arrays, ``cupyx.scipy`` for CuPy arrays (same names)."""
    if xp is np:
        import scipy

        return scipy
    import cupyx.scipy

    return cupyx.scipy
