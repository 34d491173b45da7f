"""Chroma fingerprints: 32-bit sub-fingerprints from harmonic chroma (NumPy or CuPy).

Design (our own; no coefficients copied from any project)
---------------------------------------------------------
Input is the pipeline's harmonic chroma ``C`` (12, T) at the analysis frame rate (22050/512 ≈
43.07 Hz), max-normalised per frame. Everything below is a comparison between two smoothed
chroma values, so the code is invariant to gain and to any monotonic per-frame loudness change,
and only the *sign* of a difference is kept (robust to broadband noise, which mostly lifts all
12 bins together, and to lossy codecs, which blur detail but keep the dominant pitch classes).

1. Smooth each pitch class over time with a box of ``SMOOTH_S`` (≈0.37 s, 16 frames). This
   makes the code nearly insensitive to where the analysis frame grid falls (a query starts at an
   arbitrary sample, i.e. up to half a hop = 11.6 ms off the library's grid; MP3 adds a ~1100
   sample encoder delay) and averages noise down.
2. 32 bits per frame t of the smoothed chroma S (LSB first):
   - bits 0-11  ``S[k, t] > S[k+1, t]`` (k+1 mod 12): contrast of adjacent pitch classes, i.e.
     the shape of the chord/melody at t. Very robust (BER ≈ 1 % at 10 dB SNR).
   - bits 12-23 ``S[k, t+D] > S[k, t-D]`` with D = ``DELTA_S`` (≈0.19 s): is pitch class k
     rising or falling around t. These carry most of the entropy (chords last seconds, so the
     first group repeats), at a higher bit error rate (≈5 % at 10 dB SNR).
   - bits 24-31 ``S[k, t] > S[k+5, t]`` for k = 0..7: contrast at a fourth, a second view of the
     harmonic shape that does not share its neighbours with bits 0-11.
   Measured on this project's generated songs (benchmarks/bench_identify.py): random pairs of
   songs differ in ≈50 % of bits, the same song under MP3 + 10 dB noise in ≈4 %.
3. Library codes are kept every ``DECIMATE``-th frame (4 → ≈10.77 codes/s, ≈0.093 s per code):
   with the 0.37 s smoothing, neighbouring codes are strongly correlated, so keeping all frames
   would cost 4x the storage for little information. A query instead keeps *every* frame
   (:func:`query_codes`): whatever the query's offset modulo the decimation, one quarter of its
   frames falls on the library's grid — the "several shifted code sets" of the design.
4. :func:`query_codes` also returns a per-bit reliability (|difference| normalised per bit
   group); the index looks up, for each query frame, the code itself and the codes with one of
   its least reliable bits flipped, which recovers frames with one wrong bit.

Speed changes of ±2 % (tempo and pitch ≈ ±34 cents) are not handled here but by the query
(pipeline.search.identify): it resamples the clip by the candidate speed factors before analysis,
which undoes both exactly.

Everything is xp-generic: the same code runs on NumPy arrays in CPU actors and CuPy arrays on
GPUs; leading batch dimensions are allowed (``(..., 12, T)``).
"""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from actors.dsp.xp import get_xp

__all__ = ["DECIMATE", "DELTA_S", "FOURTH", "FP_FRAME_RATE_HZ", "FP_VERSION", "GROUPS", "N_BITS", "N_FOURTH_BITS",
           "REF_FRAME_RATE_HZ", "SMOOTH_S", "bit_values", "fingerprint_codes", "frames_for", "pack_bits",
           "popcount32", "query_codes"]


#: The frame rate the windows below were designed at (DSPConfig's defaults, 22050 / 512): they are
#: fixed in seconds, so other analysis rates get the same time scales (:func:`frames_for`).
REF_FRAME_RATE_HZ = 22050 / 512
#: Time smoothing (box) of the chroma before comparisons, seconds (16 frames at 43.07 Hz).
SMOOTH_S = 16 / REF_FRAME_RATE_HZ
#: Half-distance of the temporal comparison, seconds (8 frames at 43.07 Hz).
DELTA_S = 8 / REF_FRAME_RATE_HZ
#: One code is stored every DECIMATE analysis frames.
DECIMATE = 4
#: Pitch-class partner of the third bit group (a fourth up) and how many classes use it.
FOURTH = 5
N_FOURTH_BITS = 8
N_BITS = 32
#: Bit groups, used for reliability normalisation: (first bit, n bits).
GROUPS = ((0, 12), (12, 12), (24, N_FOURTH_BITS))

_PARAMS = {"smooth": 16, "delta": 8, "decimate": DECIMATE, "fourth": FOURTH, "n4": N_FOURTH_BITS,
           "layout": "adj12-dt12-p4x8"}
#: Changes whenever the algorithm or a parameter changes: stored codes of another version are
#: recomputed (pipeline) and never mixed into one index.
FP_VERSION = "cfp1-" + hashlib.sha1(repr(sorted(_PARAMS.items())).encode()).hexdigest()[:8]
#: Code rate of library fingerprints at the default analysis rate, codes per second. A library
#: stores its own (analysis frame rate / DECIMATE) in ``fingerprints.frame_rate_hz``.
FP_FRAME_RATE_HZ = REF_FRAME_RATE_HZ / DECIMATE


def frames_for(frame_rate_hz: float) -> tuple[int, int]:
    """(smoothing window, temporal half-distance) in analysis frames at ``frame_rate_hz``."""
    w = max(1, round(SMOOTH_S * frame_rate_hz))
    d = max(1, round(DELTA_S * frame_rate_hz))
    return w, d


def _box_smooth(xp: Any, c: Any, w: int) -> Any:
    """Moving average over the last axis, window ``w`` frames, edges repeated (like 'nearest').

    Output frame t averages input frames [t - w//2, t - w//2 + w). Cumulative sums in float64 keep
    the result exact enough that NumPy and CuPy agree bit for bit on the signs that follow.
    """
    lo = w // 2
    hi = w - lo
    pad = [(0, 0)] * (c.ndim - 1) + [(lo, hi)]
    cp = xp.pad(c.astype(xp.float64), pad, mode="edge")
    cs = xp.cumsum(cp, axis=-1)
    cs = xp.concatenate([xp.zeros((*cs.shape[:-1], 1), dtype=cs.dtype), cs], axis=-1)
    t = c.shape[-1]
    return (cs[..., w: w + t] - cs[..., :t]) / w


def bit_values(chroma: Any, *, frame_rate_hz: float) -> Any:
    """The 32 signed comparison values per frame: (..., 32, T) float64, bit = value > 0.

    ``chroma``: (..., 12, T) harmonic chroma (any non-negative scale) at ``frame_rate_hz``.
    """
    xp = get_xp(chroma)
    c = xp.asarray(chroma)
    if c.ndim < 2 or c.shape[-2] != 12:
        raise ValueError(f"chroma must have shape (..., 12, T), got {tuple(c.shape)}")
    w, d = frames_for(frame_rate_hz)
    s = _box_smooth(xp, c, w)
    adj = s - xp.roll(s, -1, axis=-2)
    pad = [(0, 0)] * (s.ndim - 1) + [(d, d)]
    sp = xp.pad(s, pad, mode="edge")
    t = s.shape[-1]
    delta = sp[..., 2 * d: 2 * d + t] - sp[..., :t]
    fourth = (s - xp.roll(s, -FOURTH, axis=-2))[..., :N_FOURTH_BITS, :]
    return xp.concatenate([adj, delta, fourth], axis=-2)


def pack_bits(values: Any) -> Any:
    """(..., 32, T) comparison values -> (..., T) uint32 codes, bit i = values[..., i, :] > 0."""
    xp = get_xp(values)
    bits = (values > 0).astype(xp.uint32)
    weights = (xp.uint32(1) << xp.arange(N_BITS, dtype=xp.uint32)).reshape((N_BITS, 1))
    # Sum of distinct powers of two: exact in uint64, then narrowed.
    return (bits.astype(xp.uint64) * weights.astype(xp.uint64)).sum(axis=-2).astype(xp.uint32)


def fingerprint_codes(chroma: Any, *, frame_rate_hz: float) -> Any:
    """Library fingerprint: (..., 12, T) chroma -> (..., ceil(T / DECIMATE)) uint32 codes.

    Code i describes analysis frame ``i * DECIMATE``, i.e. time ``i * DECIMATE / frame_rate_hz``
    seconds. Same array module as the input.
    """
    xp = get_xp(chroma)
    if xp.asarray(chroma).shape[-1] == 0:
        return xp.zeros((*xp.asarray(chroma).shape[:-2], 0), dtype=xp.uint32)
    return pack_bits(bit_values(chroma, frame_rate_hz=frame_rate_hz)[..., ::DECIMATE])


def query_codes(chroma: Any, *, frame_rate_hz: float) -> tuple[Any, Any]:
    """Query fingerprint at *every* analysis frame, with per-bit reliability.

    Returns ``(codes, reliability)``: codes (..., T) uint32, reliability (..., 32, T) float32 =
    |comparison value| divided by the median |value| of its bit group over the clip (a bit with
    reliability << 1 is likely to flip under noise).
    """
    xp = get_xp(chroma)
    v = bit_values(chroma, frame_rate_hz=frame_rate_hz)
    a = xp.abs(v)
    rel = xp.empty_like(a)
    for start, n in GROUPS:
        g = a[..., start: start + n, :]
        scale = xp.median(g.reshape((*g.shape[:-2], -1)), axis=-1)[..., None, None] + 1e-12
        rel[..., start: start + n, :] = g / scale
    return pack_bits(v), rel.astype(xp.float32)


def popcount32(x: np.ndarray) -> np.ndarray:
    """Number of set bits of each uint32 (NumPy; vectorised SWAR)."""
    x = np.asarray(x, dtype=np.uint32)
    if hasattr(np, "bitwise_count"):  # NumPy >= 2.0
        return np.bitwise_count(x).astype(np.int64)
    x = x - ((x >> 1) & 0x55555555)
    x = (x & 0x33333333) + ((x >> 2) & 0x33333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F
    return ((x * 0x01010101) & 0xFFFFFFFF) >> 24
