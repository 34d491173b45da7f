"""Framing, windowing and the short-time Fourier transform (librosa semantics).

All functions are pure, take their array module from the input (NumPy or
CuPy; the output stays where the input was) and keep any leading batch axes.
Single precision throughout: float32 signals give complex64 spectra, like
``librosa.stft`` (which computes in float64 and casts; the difference is a few
1e-7 of the spectrum's peak, see tests/actors/dsp/test_stft.py).
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np

from actors.dsp.xp import fft_module, get_xp
from actors.errors import ChromarayError

__all__ = ["frame", "get_window", "magnitude_spectrogram", "n_frames", "power_spectrogram", "stft"]

#: frames are transformed in blocks of this many so the float32 framed copy
#: (block x n_fft) stays small next to the complex output.
_BLOCK_FRAMES = 512


@functools.lru_cache(maxsize=16)
def _host_window(window: str, n_fft: int) -> np.ndarray:
    """Periodic window of length n_fft (``scipy.signal.get_window(fftbins=True)``), float32."""
    import scipy.signal

    return scipy.signal.get_window(window, n_fft, fftbins=True).astype(np.float32)


def get_window(window: str, n_fft: int, *, xp: Any = np) -> Any:
    """The analysis window as float32 on the device of ``xp`` (cached on the host)."""
    return xp.asarray(_host_window(window, n_fft))


def n_frames(n_samples: int, *, n_fft: int, hop_length: int, center: bool = True) -> int:
    """Number of STFT frames librosa produces for a signal of ``n_samples``."""
    if center:
        n_samples = n_samples + 2 * (n_fft // 2)
    if n_samples < n_fft:
        raise ChromarayError(f"signal of {n_samples} samples is shorter than n_fft={n_fft}")
    return 1 + (n_samples - n_fft) // hop_length


def frame(y: Any, *, frame_length: int, hop_length: int) -> Any:
    """Strided view of ``y`` (..., N) as frames (..., n_frames, frame_length).

    Note the axis order: frames before samples (the transposition of
    ``librosa.util.frame``), so each frame is contiguous for the FFT. No copy.
    """
    xp = get_xp(y)
    n = y.shape[-1]
    if n < frame_length:
        raise ChromarayError(f"signal of {n} samples is shorter than one frame ({frame_length})")
    count = 1 + (n - frame_length) // hop_length
    y = xp.ascontiguousarray(y)
    step = y.strides[-1]
    shape = (*y.shape[:-1], count, frame_length)
    strides = (*y.strides[:-1], hop_length * step, step)
    return xp.lib.stride_tricks.as_strided(y, shape=shape, strides=strides)


def stft(
    y: Any,
    *,
    n_fft: int = 2048,
    hop_length: int = 512,
    center: bool = True,
    window: str = "hann",
    pad_mode: str = "constant",
) -> Any:
    """Complex STFT of ``y`` (..., N) -> (..., 1 + n_fft // 2, T), like ``librosa.stft``.

    ``center=True`` pads n_fft // 2 zeros at both ends (librosa's default
    ``pad_mode='constant'``, the only mode supported), so frame t is centred on
    sample t * hop_length and T = 1 + N // hop_length. win_length == n_fft.

    A batch of zero-padded tracks gives, for each track, exactly the frames it
    would give alone (frames past its own T are extra and should be cropped):
    the padding is the same zeros librosa pads with.

    Returns a (..., F, T) view of a (..., T, F) complex64 array (frames are
    contiguous); call ``ascontiguousarray`` if you need the other layout.
    """
    if pad_mode != "constant":
        raise ChromarayError(f"pad_mode={pad_mode!r} is not supported (only 'constant')")
    xp = get_xp(y)
    y = xp.asarray(y)
    if y.dtype != xp.float32:
        y = y.astype(xp.float32)
    if center:
        pad = [(0, 0)] * (y.ndim - 1) + [(n_fft // 2, n_fft // 2)]
        y = xp.pad(y, pad, mode="constant")
    frames = frame(y, frame_length=n_fft, hop_length=hop_length)
    win = get_window(window, n_fft, xp=xp)
    n_t = frames.shape[-2]
    out = xp.empty((*frames.shape[:-2], n_t, 1 + n_fft // 2), dtype=xp.complex64)
    for start in range(0, n_t, _BLOCK_FRAMES):
        stop = min(n_t, start + _BLOCK_FRAMES)
        block = frames[..., start:stop, :] * win
        out[..., start:stop, :] = fft_module(xp).rfft(block, axis=-1)
    return xp.swapaxes(out, -1, -2)


def power_spectrogram(D: Any) -> Any:
    """|D|^2 as float32 (..., F, T)."""
    xp = get_xp(D)
    mag = xp.abs(D)
    return xp.multiply(mag, mag, out=mag)


def magnitude_spectrogram(D: Any) -> Any:
    """|D| as float32 (..., F, T)."""
    return get_xp(D).abs(D)
