"""Chroma from a power spectrogram (``librosa.feature.chroma_stft(S=..., tuning=0, norm=inf)``).

The filterbank is ``librosa.filters.chroma`` itself (a pure NumPy function of
sr, n_fft, n_chroma and tuning): built once per actor on the host, float32,
then moved to the device. Reusing it keeps parity exact by construction; the
per-frame work (a matrix product and an inf-norm) is ours and xp-generic.

The fingerprint front end uses this same harmonic chroma at the DSP frame
rate (``DSPConfig.frame_rate_hz``), exposed as ``TrackFeatures.chroma``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from actors.dsp.xp import get_xp

__all__ = ["apply_filterbank", "chroma_filterbank", "chroma_from_power", "normalize_inf"]


def chroma_filterbank(*, sr: int, n_fft: int, n_chroma: int = 12, tuning: float = 0.0,
                      xp: Any = np) -> Any:
    """(n_chroma, 1 + n_fft // 2) float32 chroma filterbank on the device of ``xp``."""
    import librosa

    fb = librosa.filters.chroma(sr=sr, n_fft=n_fft, n_chroma=n_chroma, tuning=tuning)
    return xp.asarray(np.ascontiguousarray(fb, dtype=np.float32))


def normalize_inf(C: Any, *, axis: int = -2) -> Any:
    """``librosa.util.normalize(C, norm=inf, axis=axis)``: divide by the max |.|;
    columns whose max is below float ``tiny`` are left as they are."""
    xp = get_xp(C)
    length = xp.max(xp.abs(C), axis=axis, keepdims=True)
    length = xp.where(length < np.finfo(C.dtype).tiny, 1, length).astype(C.dtype)
    return C / length


def apply_filterbank(fb: Any, S: Any) -> Any:
    """fb (K, F) applied to S (..., F, T) -> (..., K, T) float32.

    STFTs from :func:`actors.dsp.stft.stft` are (..., F, T) views of
    frame-major memory; for those this is one 2-D GEMM (frames x F) @ fb.T
    without copies, several times faster than a stacked matmul (which also
    suffers badly from BLAS thread oversubscription on a busy machine).
    """
    xp = get_xp(S)
    St = xp.swapaxes(S, -1, -2)
    if St.flags.c_contiguous:
        out = St.reshape(-1, St.shape[-1]) @ fb.T
        return xp.swapaxes(out.reshape((*St.shape[:-1], fb.shape[0])), -1, -2)
    if not S.flags.c_contiguous:
        # mixed strides make NumPy's matmul fall back to a naive loop (~50x slower)
        S = xp.ascontiguousarray(S)
    return xp.matmul(fb, S)


def chroma_from_power(S_power: Any, fb: Any) -> Any:
    """Chroma (..., n_chroma, T) float32 from a power spectrogram (..., F, T).

    Each frame is scaled so its largest chroma bin is 1 (frames of zeros stay 0).
    Frames are independent, so padding a batch changes nothing.
    """
    raw = apply_filterbank(fb, S_power)
    return normalize_inf(raw, axis=-2)
