"""Degradations of a clip, as a query recorded or copied in the wild would have them:
white noise at an SNR, gain, speed change (turntable: tempo and pitch), lossy re-encoding.

Inputs and outputs are mono float32 arrays of samples at ``sr`` Hz; the length is kept
except by :func:`change_speed` (``len / factor``) and :func:`reencode` (codec padding).
"""
from __future__ import annotations

import io

import numpy as np

from pipeline.synth.signals import SR

__all__ = ["add_noise", "change_speed", "gain", "noise_for_snr", "reencode"]


def noise_for_snr(n: int, signal_power: float, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples (float64) of white Gaussian noise whose power is ``signal_power`` (mean
    square) divided by ``10 ** (snr_db / 10)``."""
    return rng.standard_normal(n) * np.sqrt(signal_power / 10 ** (snr_db / 10))


def add_noise(y: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """``y`` plus white Gaussian noise at ``snr_db`` relative to the clip's mean power."""
    p = float(np.mean(y.astype(np.float64) ** 2)) + 1e-12
    return (y + noise_for_snr(len(y), p, snr_db, rng)).astype(np.float32)


def gain(y: np.ndarray, factor: float) -> np.ndarray:
    """``y`` times ``factor`` (linear amplitude), no clipping."""
    return (y * factor).astype(np.float32)


def change_speed(y: np.ndarray, factor: float, sr: int = SR) -> np.ndarray:
    """Play ``factor`` times faster (tempo and pitch, like a turntable), same sample rate."""
    import soxr

    return soxr.resample(y, sr * factor, sr, quality="HQ").astype(np.float32)


def reencode(y: np.ndarray, fmt: str, sr: int = SR, *, level: float = 0.9) -> np.ndarray:
    """Round trip through a lossy codec in memory (libsndfile). ``fmt`` is "mp3" or "ogg".

    ``level`` is libsndfile's compression level: 0.9 gives ~24 kbit/s MP3 and ~40 kbit/s
    Vorbis for 22.05 kHz mono. The input is clipped to [-1, 1] first, as a file would be.
    """
    import soundfile as sf

    y = np.clip(y, -1.0, 1.0)
    buf = io.BytesIO()
    if fmt == "mp3":
        sf.write(buf, y, sr, format="MP3", subtype="MPEG_LAYER_III", compression_level=level,
                 bitrate_mode="CONSTANT")
    elif fmt == "ogg":
        sf.write(buf, y, sr, format="OGG", subtype="VORBIS", compression_level=level)
    else:
        raise ValueError(f"reencode: unknown format {fmt!r} (expected 'mp3' or 'ogg')")
    buf.seek(0)
    z, _ = sf.read(buf, dtype="float32", always_2d=False)
    return np.asarray(z, dtype=np.float32)
