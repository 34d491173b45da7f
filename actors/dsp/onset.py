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
reference explicitly (``ref_db``) and says which frames it holds and wants
(``frame_offset``, ``first``, ``stop`` of :func:`onset_strength_from_mel_db`);
``onset_strength_from_power`` is that same function on a whole padded batch.

``tempo`` reproduces ``librosa.feature.tempo(onset_envelope=...)`` (global
tempo: mean autocorrelation tempogram weighted by a log-normal prior).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from actors.dsp.chroma import apply_filterbank
from actors.dsp.stft import frame
from actors.dsp.xp import fft_module, get_xp, ndimage_for, to_numpy
from actors.errors import ChromarayError

__all__ = ["AMIN", "db_reference", "mel_db", "mel_filterbank", "onset_flux", "onset_from_flux",
           "onset_pad_width", "onset_strength_from_mel_db", "onset_strength_from_power", "tempo",
           "tempo_frequencies"]

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


def db_reference(M_db: Any, *, lengths: Any = None, frame_offset: int = 0) -> Any:
    """Per-track max of unclipped mel dB (B, n_mels, G) -> (B,) (librosa's top_db reference).

    M_db holds frames [frame_offset, frame_offset + G) of each track; only
    frames in [0, lengths[b]) count (``lengths`` None: every frame from 0 on),
    so zero padding past a track's end and context before its start are
    ignored. -100 dB (= amin) when no frame counts. (n_mels, G) -> scalar.
    """
    xp = get_xp(M_db)
    frame_max = xp.max(M_db, axis=-2)
    if lengths is not None or frame_offset < 0:
        frames = frame_offset + xp.arange(M_db.shape[-1])
        valid = frames >= 0
        if lengths is not None:
            valid = valid & (frames < xp.asarray(lengths).reshape(-1, 1))
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
    R = D if max_size == 1 else ndimage_for(xp).maximum_filter1d(D, max_size, axis=-2)
    flux = D[..., lag:] - R[..., :-lag]
    flux = xp.maximum(flux, 0)
    return xp.mean(flux, axis=-2)


def onset_from_flux(flux: Any, *, pad: int, first: int, stop: int, frame_offset: int = 0) -> Any:
    """Onset frames [first, stop) (B, stop - first) from flux (B, K) of frames held from ``frame_offset``.

    librosa's "center" shift and trim: onset[t] = flux[t - pad - frame_offset]
    where that flux value exists and t >= pad (no onset before the first lag
    plus half window), else 0; ``pad`` is :func:`onset_pad_width`. A whole
    track of T frames is first=0, stop=T, frame_offset=0.
    """
    xp = get_xp(flux)
    b, k_max = flux.shape[-2:]
    if stop < first:
        raise ChromarayError(f"onset frames [{first}, {stop}) are reversed")
    if k_max == 0:  # a single frame has no flux
        return xp.zeros((b, stop - first), dtype=xp.float32)
    t = xp.arange(first, stop)
    k = t - pad - frame_offset
    ok = (t - pad >= 0) & (k >= 0) & (k < k_max)
    picked = xp.take(flux, xp.clip(k, 0, k_max - 1), axis=-1)
    return xp.where(ok[None, :], picked, xp.float32(0))


def onset_strength_from_mel_db(
    M_db: Any,
    *,
    n_fft: int = 2048,
    hop_length: int = 512,
    lag: int = 1,
    max_size: int = 1,
    top_db: float | None = 80.0,
    center: bool = True,
    lengths: Any = None,
    ref_db: Any = None,
    frame_offset: int = 0,
    first: int | None = None,
    stop: int | None = None,
) -> Any:
    """Onset strength (B, stop - first) float32 from unclipped mel dB (B, n_mels, G).

    M_db holds frames [frame_offset, frame_offset + G) of each track (a padded
    batch: frame_offset 0; a time span: the frames it needs as context too);
    the result covers frames [first, stop) (default: the frames held).
    ``lengths`` (B,): each track's total frame count (the top_db reference
    ignores frames past it and before 0). ``ref_db`` (B,): an explicit
    per-track reference (dB) instead of the max over the valid frames held.
    """
    if ref_db is None:
        ref_db = db_reference(M_db, lengths=lengths, frame_offset=frame_offset)
    flux = onset_flux(M_db, ref_db=ref_db, top_db=top_db, lag=lag, max_size=max_size)
    first = frame_offset if first is None else first
    stop = frame_offset + M_db.shape[-1] if stop is None else stop
    pad = onset_pad_width(n_fft=n_fft, hop_length=hop_length, lag=lag, center=center)
    return onset_from_flux(flux, pad=pad, frame_offset=frame_offset, first=first, stop=stop)


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
    lead = S_power.shape[:-2]
    S3 = S_power.reshape((-1, *S_power.shape[-2:]))
    out = onset_strength_from_mel_db(mel_db(S3, mel_fb), n_fft=n_fft, hop_length=hop_length, lag=lag,
                                     max_size=max_size, top_db=top_db, center=center, lengths=lengths,
                                     ref_db=ref_db)
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
    tg = to_numpy(total) / max(n, 1)
    bpms = tempo_frequencies(win, sr=sr, hop_length=hop_length)
    with np.errstate(divide="ignore"):
        logprior = -0.5 * ((np.log2(bpms) - np.log2(start_bpm)) / std_bpm) ** 2
    if max_tempo is not None:
        max_idx = int(np.argmax(bpms < max_tempo))
        logprior[:max_idx] = -np.inf
    best = int(np.argmax(np.log1p(1e6 * tg) + logprior))
    return float(bpms[best])
