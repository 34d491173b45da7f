"""Harmonic/percussive separation by median filtering (``librosa.decompose.hpss``).

Same semantics as librosa 0.11: harmonic = median over ``kernel_size[0]``
frames along time, percussive = median over ``kernel_size[1]`` bins along
frequency, both with scipy's ``mode='reflect'`` edges; soft masks
``softmask(harm, perc * margin_harm, power)`` (Wiener-like, ``power=inf`` gives
hard binary masks); zeros split 0.5/0.5 when both margins are 1 (as librosa).
The medians come from :mod:`actors.dsp.median` (bottleneck on CPU), which
equal scipy's exactly, so the only difference from librosa is the input
spectrogram's float32 rounding.

:func:`hpss_masks` (and :func:`harmonic_mask`, its first half) also take a
padded batch's per-track ``lengths`` and a time span's ``frame_offset`` /
``first`` / ``stop``: the feature chain calls them, so the tested kernels are
the ones that run.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from actors.dsp.median import median_along_freq, median_along_time
from actors.dsp.xp import get_xp
from actors.errors import ChromarayError

__all__ = ["harmonic_mask", "hpss", "hpss_masks", "softmask"]


def _pair(v: Any) -> tuple[Any, Any]:
    if isinstance(v, (tuple, list)):
        return v[0], v[1]
    return v, v


def softmask(X: Any, X_ref: Any, *, power: float = 1.0, split_zeros: bool = False) -> Any:
    """``librosa.util.softmask``: (X / Z)^p / ((X / Z)^p + (X_ref / Z)^p), Z = max(X, X_ref).

    X, X_ref non-negative, same shape. Where Z is below the dtype's ``tiny`` the
    mask is 0.5 (``split_zeros``) or 0. ``power=inf`` returns the boolean X > X_ref.
    """
    xp = get_xp(X, X_ref)
    if X.shape != X_ref.shape:
        raise ChromarayError(f"softmask shape mismatch: {X.shape} != {X_ref.shape}")
    if power <= 0:
        raise ChromarayError("softmask power must be strictly positive")
    dtype = X.dtype if np.issubdtype(X.dtype, np.floating) else np.float32
    if not math.isfinite(power):
        return X_ref < X
    Z = xp.maximum(X, X_ref).astype(dtype, copy=False)
    bad = np.finfo(dtype).tiny > Z
    Z[bad] = 1
    # librosa's arithmetic ((X/Z)^p, (X_ref/Z)^p, divide the good entries),
    # done in place: two full-size temporaries instead of five.
    mask = X / Z
    mask **= power
    ref_mask = xp.divide(X_ref, Z, out=Z)
    ref_mask **= power
    ref_mask += mask  # the denominator
    ref_mask[bad] = 1  # bad entries are overwritten below (0 / 0 otherwise)
    mask /= ref_mask
    mask[bad] = 0.5 if split_zeros else 0.0
    return mask


def _margins(margin: float | tuple[float, float]) -> tuple[float, float]:
    margin_harm, margin_perc = _pair(margin)
    if margin_harm < 1 or margin_perc < 1:
        raise ChromarayError("HPSS margins must be >= 1.0")
    return float(margin_harm), float(margin_perc)


def _masks(
    S: Any,
    *,
    kernel_size: int | tuple[int, int],
    power: float,
    margin: float | tuple[float, float],
    lengths: Any,
    frame_offset: int,
    first: int | None,
    stop: int | None,
    percussive: bool,
) -> tuple[Any, Any]:
    """The one HPSS implementation: both medians, then the soft masks with margins.

    The time median reads every held frame (context) but is evaluated only on
    [first, stop); the frequency median is per frame, so it only sees those.
    Without ``percussive`` the percussive mask is skipped (None) and the
    percussive median is scaled in place: no full-size temporary beyond the
    two medians and softmask's own.
    """
    win_harm, win_perc = _pair(kernel_size)
    margin_harm, margin_perc = _margins(margin)
    g = S.shape[-1]
    first = frame_offset if first is None else first
    stop = frame_offset + g if stop is None else stop
    if not frame_offset <= first <= stop <= frame_offset + g:
        raise ChromarayError(f"frames [{first}, {stop}) are not inside the frames held "
                             f"[{frame_offset}, {frame_offset + g})")
    harm = median_along_time(S, size=int(win_harm), lengths=lengths, frame_offset=frame_offset,
                             first=first, stop=stop)
    perc = median_along_freq(S[..., first - frame_offset : stop - frame_offset], size=int(win_perc))
    split_zeros = margin_harm == 1 and margin_perc == 1
    mask_perc = None
    if percussive:
        mask_perc = softmask(perc, harm * margin_perc, power=power, split_zeros=split_zeros)
    if margin_harm != 1:
        perc *= margin_harm  # the raw percussive median is not needed any more
    mask_harm = softmask(harm, perc, power=power, split_zeros=split_zeros)
    return mask_harm, mask_perc


def harmonic_mask(
    S: Any,
    *,
    kernel_size: int | tuple[int, int] = 31,
    power: float = 2.0,
    margin: float | tuple[float, float] = 1.0,
    lengths: Any = None,
    frame_offset: int = 0,
    first: int | None = None,
    stop: int | None = None,
) -> Any:
    """The harmonic mask alone (the first mask of :func:`hpss_masks`, same arguments),
    for callers that never use the percussive part (one softmask instead of two)."""
    return _masks(S, kernel_size=kernel_size, power=power, margin=margin, lengths=lengths,
                  frame_offset=frame_offset, first=first, stop=stop, percussive=False)[0]


def hpss_masks(
    S: Any,
    *,
    kernel_size: int | tuple[int, int] = 31,
    power: float = 2.0,
    margin: float | tuple[float, float] = 1.0,
    lengths: Any = None,
    frame_offset: int = 0,
    first: int | None = None,
    stop: int | None = None,
) -> tuple[Any, Any]:
    """Harmonic and percussive masks for a magnitude spectrogram S (B, F, G) or (F, G).

    ``lengths`` (B,) are the tracks' total frame counts in a zero-padded batch
    (time medians reflect at each track's own end); None means every track
    ends with the frames held. For a time span of a longer track, S holds
    frames [frame_offset, frame_offset + G) and the masks are returned for
    frames [first, stop) only (default: all held), shape (B, F, stop - first);
    the held frames must include the harmonic median's half window around
    them, or the track's ends (see :func:`actors.dsp.median.median_along_time`).
    """
    return _masks(S, kernel_size=kernel_size, power=power, margin=margin, lengths=lengths,
                  frame_offset=frame_offset, first=first, stop=stop, percussive=True)


def hpss(
    S: Any,
    *,
    kernel_size: int | tuple[int, int] = 31,
    power: float = 2.0,
    mask: bool = False,
    margin: float | tuple[float, float] = 1.0,
    lengths: Any = None,
) -> tuple[Any, Any]:
    """``librosa.decompose.hpss`` for S (..., F, T), complex (STFT) or magnitude.

    Returns (H, P) with the input's kind (complex in, complex out, phase kept),
    or the masks (mask_harm, mask_perc) when ``mask=True``. Leading axes are
    batch axes; ``lengths`` (flattened batch,) as in :func:`hpss_masks`.
    """
    xp = get_xp(S)
    S3 = S.reshape((-1, *S.shape[-2:]))
    if xp.iscomplexobj(S3):
        mag = xp.abs(S3)
        phase = S3 / xp.where(mag == 0, 1, mag)
        # librosa's magphase gives phase 1 (angle 0) for zero bins
        phase[mag == 0] = 1
    else:
        mag, phase = S3, None
    m_h, m_p = hpss_masks(mag, kernel_size=kernel_size, power=power, margin=margin,
                          lengths=lengths)
    if mask:
        return m_h.reshape(S.shape), m_p.reshape(S.shape)
    H = mag * m_h
    P = mag * m_p
    if phase is not None:
        H = H * phase
        P = P * phase
    return H.reshape(S.shape), P.reshape(S.shape)
