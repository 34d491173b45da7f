"""Onset strength (mel, log, spectral flux) and a tempo estimate, librosa semantics.

``onset_strength_from_power`` reproduces ``librosa.onset.onset_strength(y=y,
sr=sr)`` with its defaults from the power spectrogram of ``stft(y)``: mel
filterbank (``librosa.filters.mel`` with fmax = sr / 2, built once per actor),
``power_to_db(ref=1, amin=1e-10, top_db=80)``, flux S[t + lag] - S[t] (with a
``max_size`` maximum filter over mel bands as reference), rectified, mean over
bands, then shifted right by lag + n_fft // (2 hop) zero frames ("center")
and trimmed to T frames.

librosa clips at (max over the whole array - top_db); here the max is taken
PER TRACK over its own valid frames (``lengths``), so a padded batch gives each
track its solo result. A caller processing a track in pieces passes that
reference explicitly (``ref_db``).

``tempo`` reproduces ``librosa.feature.tempo(onset_envelope=...)`` (global
tempo: mean autocorrelation tempogram weighted by a log-normal prior).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from actors.dsp.chroma import apply_filterbank
from actors.dsp.stft import fft_module, frame
from actors.dsp.xp import get_xp

AMIN = 1e-10


def mel_filterbank(*, sr: int, n_fft: int, n_mels: int = 128, fmax: float | None = None,
                   xp: Any = np) -> Any:
    """(n_mels, 1 + n_fft // 2) float32 Slaney mel filterbank (librosa.filters.mel), fmax=sr/2."""
    import librosa

    fb = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels,
                             fmax=0.5 * sr if fmax is None else fmax)
    return xp.asarray(np.ascontiguousarray(fb, dtype=np.float32))


def onset_pad_width(*, n_fft: int, hop_length: int, lag: int = 1, center: bool = True) -> int:
    """Frames librosa shifts the flux right by: onset[t] = flux[t - pad_width]."""
    return lag + (n_fft // (2 * hop_length) if center else 0)


def mel_db(S_power: Any, mel_fb: Any) -> Any:
    """Unclipped mel log-power 10 log10(max(amin, mel @ S)) (..., n_mels, T), float32."""
    xp = get_xp(S_power)
    M = apply_filterbank(mel_fb, S_power)
    return 10.0 * xp.log10(xp.maximum(M, xp.float32(AMIN)))


def db_reference(M_db: Any, *, valid: Any = None) -> Any:
    """Per-track max of unclipped mel dB (B, n_mels, T) -> (B,), over frames where
    ``valid`` (B, T) is true (all frames if None). -100 dB (= amin) if none."""
    xp = get_xp(M_db)
    frame_max = xp.max(M_db, axis=-2)
    if valid is not None:
        frame_max = xp.where(valid, frame_max, xp.float32(10.0 * math.log10(AMIN)))
    return xp.max(frame_max, axis=-1)


def onset_flux(M_db: Any, *, ref_db: Any, top_db: float | None = 80.0, lag: int = 1,
               max_size: int = 1) -> Any:
    """Rectified, band-averaged flux of clipped mel dB (B, n_mels, G) -> (B, G - lag).

    out[k] = mean_m max(0, D[m, k + lag] - R[m, k]) with D = max(M_db, ref_db - top_db)
    and R = D (max_size 1) or D max-filtered over ``max_size`` bands.
    """
    xp = get_xp(M_db)
    D = M_db
    if top_db is not None:
        floor = (xp.asarray(ref_db, dtype=M_db.dtype) - xp.float32(top_db))[..., None, None]
        D = xp.maximum(M_db, floor)
    if max_size == 1:
        R = D
    else:
        from actors.dsp.median import ndimage_for

        R = ndimage_for(xp).maximum_filter1d(D, max_size, axis=-2)
    flux = D[..., lag:] - R[..., :-lag]
    flux = xp.maximum(flux, 0)
    return xp.mean(flux, axis=-2)


def onset_strength_from_power(
    S_power: Any,
    mel_fb: Any,
    *,
    n_fft: int = 2048,
    hop_length: int = 512,
    lag: int = 1,
    max_size: int = 1,
    top_db: float | None = 80.0,
    center: bool = True,
    lengths: Any = None,
    ref_db: Any = None,
) -> Any:
    """Onset strength (..., T) float32 from a power spectrogram (..., F, T).

    ``lengths`` (B,): true frame counts in a padded batch (the top_db reference
    ignores frames past them). ``ref_db`` (B,): explicit per-track reference
    (dB) instead of the max over the frames given.
    """
    xp = get_xp(S_power)
    lead = S_power.shape[:-2]
    S3 = S_power.reshape((-1, *S_power.shape[-2:]))
    b, _, t = S3.shape
    M_db = mel_db(S3, mel_fb)
    if ref_db is None:
        valid = None
        if lengths is not None:
            lens = xp.asarray(lengths).reshape(b, 1)
            valid = xp.arange(t)[None, :] < lens
        ref_db = db_reference(M_db, valid=valid)
    flux = onset_flux(M_db, ref_db=ref_db, top_db=top_db, lag=lag, max_size=max_size)
    pad = onset_pad_width(n_fft=n_fft, hop_length=hop_length, lag=lag, center=center)
    # librosa's output always has T frames: (T - lag) flux values shifted by pad, trimmed
    out = xp.zeros((b, t), dtype=xp.float32)
    n = min(t - pad, flux.shape[-1])
    if n > 0:
        out[:, pad : pad + n] = flux[:, :n]
    return out.reshape(lead + out.shape[-1:])


def tempo_frequencies(n_bins: int, *, sr: float, hop_length: int) -> np.ndarray:
    """BPM of each autocorrelation lag (lag 0 is inf), as librosa."""
    bpms = np.full(n_bins, np.inf)
    bpms[1:] = 60.0 * sr / (hop_length * np.arange(1.0, n_bins))
    return bpms


def tempo(
    onset_env: Any,
    *,
    sr: float = 22050,
    hop_length: int = 512,
    start_bpm: float = 120.0,
    std_bpm: float = 1.0,
    ac_size: float = 8.0,
    max_tempo: float | None = 320.0,
    block_frames: int = 256,
) -> float:
    """Global tempo (BPM) of one onset envelope (T,), = ``librosa.feature.tempo``.

    Autocorrelation tempogram: Hann-windowed frames of ac_size seconds centred
    on every onset frame (linear-ramp padding to 0 at the ends), FFT
    autocorrelation, each frame max-normalised, averaged over time; then the
    lag maximising log1p(1e6 * tg) + log-normal prior(start_bpm, std_bpm),
    lags faster than max_tempo excluded. Computed in float64 in blocks of
    ``block_frames`` frames so hour-long tracks need little memory.
    """
    import scipy.fft
    import scipy.signal

    xp = get_xp(onset_env)
    env = xp.asarray(onset_env, dtype=xp.float64).reshape(-1)
    n = env.shape[0]
    win = int(int(ac_size * sr) // hop_length)
    half = win // 2
    padded = xp.pad(env, (half, half), mode="linear_ramp", end_values=(0, 0))
    window = xp.asarray(scipy.signal.get_window("hann", win, fftbins=True))
    n_pad = scipy.fft.next_fast_len(2 * win - 1, real=True)
    total = xp.zeros(win, dtype=xp.float64)
    fftm = fft_module(xp)
    tiny = np.finfo(np.float64).tiny
    for start in range(0, n, block_frames):
        stop = min(n, start + block_frames)
        # frames [start, stop): padded[i : i + win] (strided view, no copy)
        frames = frame(padded[start : stop + win - 1], frame_length=win, hop_length=1) * window
        spec = fftm.rfft(frames, n=n_pad, axis=-1)
        ac = fftm.irfft(spec.real**2 + spec.imag**2, n=n_pad, axis=-1)[:, :win]
        norm = xp.max(xp.abs(ac), axis=-1, keepdims=True)
        norm = xp.where(norm < tiny, 1.0, norm)
        total += xp.sum(ac / norm, axis=0)
    tg = np.asarray(total.get() if hasattr(total, "get") else total) / max(n, 1)
    bpms = tempo_frequencies(win, sr=sr, hop_length=hop_length)
    with np.errstate(divide="ignore"):
        logprior = -0.5 * ((np.log2(bpms) - np.log2(start_bpm)) / std_bpm) ** 2
    if max_tempo is not None:
        max_idx = int(np.argmax(bpms < max_tempo))
        logprior[:max_idx] = -np.inf
    best = int(np.argmax(np.log1p(1e6 * tg) + logprior))
    return float(bpms[best])
