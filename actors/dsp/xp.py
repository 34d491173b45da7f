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

__all__ = ["cupy_or_none", "fft_module", "get_xp", "gpu_available", "ndimage_for", "to_numpy"]


@functools.lru_cache(maxsize=1)
def cupy_or_none() -> ModuleType | None:
    """CuPy if it imports *and* a device answers, else None."""
    try:
        import cupy

        cupy.zeros(1).sum().item()
        return cupy
    except Exception:  # noqa: BLE001 (ImportError, CUDARuntimeError, missing driver ...: all mean "no GPU")
        return None


def gpu_available() -> bool:
    """True when CuPy imports and a device answers (see :func:`cupy_or_none`)."""
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


def fft_module(xp: Any) -> Any:
    """``scipy.fft`` for NumPy (pocketfft in single precision: ~5x faster than
    ``numpy.fft`` on float32 here, and what librosa uses) or ``cupy.fft``."""
    if xp is np:
        import scipy.fft

        return scipy.fft
    return xp.fft


def ndimage_for(xp: Any) -> Any:
    """``scipy.ndimage`` or ``cupyx.scipy.ndimage`` (imported explicitly: submodules
    of cupyx.scipy are not loaded by ``import cupyx.scipy``)."""
    if xp is np:
        import scipy.ndimage as nd

        return nd
    import cupyx.scipy.ndimage as nd

    return nd
