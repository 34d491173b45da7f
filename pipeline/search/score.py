"""Verification of an alignment between two fingerprints: the one bit-error-rate score that
identify (a clip against a track) and duplicates (a track against a track) both decide on.

score = (BER of all 32 bits + BER of the 12 temporal bits) / 2. The temporal bits (12-23) are
the ones that tell apart two songs playing the same chords; weighting them separates in- from
out-of-library queries better than the plain BER (see pipeline.config.IdentifyConfig).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from actors.fingerprint import DECIMATE, N_BITS, popcount32

__all__ = ["DELTA_MASK", "Verification", "alignment_sweep", "contrast", "on_code_grid", "partial_score",
           "partial_scores", "query_contrast", "verify_codes", "verify_query", "window_matrix", "window_scores"]

DELTA_MASK = np.uint32(0x00FFF000)  # bits 12-23: temporal comparisons
_N_DELTA_BITS = 12


class Verification(NamedTuple):
    ber: float  # over all 32 bits
    n: int  # codes compared
    ber_delta: float  # over the 12 temporal bits

    @property
    def score(self) -> float:
        return 0.5 * (self.ber + self.ber_delta)


_NO_OVERLAP = Verification(1.0, 0, 1.0)


def verify_codes(a: np.ndarray, b: np.ndarray, d: int, valid: np.ndarray | None = None) -> Verification:
    """Codes ``a`` against ``b`` on the same code grid, ``b[i + d]`` aligned to ``a[i]``; only
    the codes of ``a`` where ``valid`` (a mask like ``a``) is true count."""
    lo = max(0, -d)
    hi = min(len(a), len(b) - d)
    if hi <= lo:
        return _NO_OVERLAP
    x = a[lo:hi] ^ b[lo + d: hi + d]
    if valid is not None:
        x = x[valid[lo:hi]]
    n = len(x)
    if n == 0:
        return _NO_OVERLAP
    errors = popcount32(x).sum()
    errors_d = popcount32(x & DELTA_MASK).sum()
    return Verification(float(errors) / (N_BITS * n), n, float(errors_d) / (_N_DELTA_BITS * n))


def window_matrix(a: np.ndarray, b: np.ndarray, ds: np.ndarray, valid: np.ndarray | None = None, *,
                  window: int) -> np.ndarray:
    """Scores of consecutive windows of ``window`` codes of ``a`` against ``b`` at each alignment
    of ``ds`` (``b[i + d]`` aligned to ``a[i]``): (len(ds), len(a) // window), the score of
    :func:`verify_codes` over each window; NaN for a window with fewer than half its codes valid
    and overlapping ``b``. With another song mixed in, the target dominates some windows and not
    others: per-window scores let a verification count only the ones that agree."""
    nw = len(a) // window
    ds = np.asarray(ds, dtype=np.int64)
    if nw == 0 or len(ds) == 0:
        return np.full((len(ds), nw), np.nan)
    n = nw * window
    a = a[:n]
    ok_a = np.ones(n, dtype=bool) if valid is None else np.asarray(valid[:n], dtype=bool)
    idx = ds[:, None] + np.arange(n)[None, :]  # (D, n) positions in b
    inside = (idx >= 0) & (idx < len(b)) & ok_a[None, :]
    x = a[None, :] ^ np.asarray(b, dtype=np.uint32)[np.clip(idx, 0, max(0, len(b) - 1))] if len(b) else \
        np.zeros(idx.shape, dtype=np.uint32)
    per = 0.5 * (popcount32(x) / N_BITS + popcount32(x & DELTA_MASK) / _N_DELTA_BITS)
    per = np.where(inside, per, 0.0).reshape(len(ds), nw, window)
    counts = inside.reshape(len(ds), nw, window).sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = per.sum(axis=2) / counts
    return np.where(counts * 2 >= window, out, np.nan)


def window_scores(a: np.ndarray, b: np.ndarray, d: int, valid: np.ndarray | None = None, *,
                  window: int) -> np.ndarray:
    """The window scores of :func:`window_matrix` at one alignment ``d``, dropped windows left out."""
    w = window_matrix(a, b, np.array([d]), valid, window=window)[0]
    return w[np.isfinite(w)]


def partial_scores(windows: np.ndarray, keep: float, min_windows: int = 1) -> np.ndarray:
    """Per row of ``windows`` (NaN: left out), the mean of its best (lowest) ``keep`` fraction of
    window scores (at least one window); 0.5 (chance) for a row with fewer than ``min_windows``
    windows. ``keep`` = 1 is the score of the whole aligned clip (windows weighted equally)."""
    w = np.atleast_2d(windows)
    n = np.isfinite(w).sum(axis=1)
    srt = np.sort(np.where(np.isfinite(w), w, np.inf), axis=1)
    k = np.maximum(1, np.rint(keep * n).astype(np.int64))
    cs = np.cumsum(np.where(np.isfinite(srt), srt, 0.0), axis=1)
    out = np.full(len(w), 0.5)
    ok = n >= max(1, min_windows)
    if w.shape[1]:
        out[ok] = cs[ok, k[ok] - 1] / k[ok]
    return out


def partial_score(windows: np.ndarray, keep: float) -> float:
    """:func:`partial_scores` of one set of window scores."""
    return float(partial_scores(np.asarray(windows, dtype=np.float64)[None, :], keep)[0])


def _popcount16(x: np.ndarray) -> np.ndarray:
    """Set bits of each uint32 as int16 (no int64 temporaries on NumPy >= 2)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x).astype(np.int16)
    return popcount32(x).astype(np.int16)


def alignment_sweep(a: np.ndarray, b: np.ndarray, valid: np.ndarray | None = None, *, window: int,
                    keep: float, min_windows: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`partial_scores` of ``a`` against ``b`` at every alignment ``d`` where ``a`` could
    have ``min_windows`` windows inside ``b``: (alignments, scores; 0.5 where fewer windows
    overlap). The brute-force view of one track that a candidate alignment is judged against
    (its best *wrong* alignment), and the music-over-music search's sweep of a candidate track.

    Equal to :func:`window_matrix` + :func:`partial_scores` at each alignment (to float rounding),
    computed without one gather per alignment: the integer errors of every (query code, track
    code) pair once, then summed along the diagonals of that matrix (a strided view), ~20x faster."""
    a = np.asarray(a, dtype=np.uint32)
    b = np.asarray(b, dtype=np.uint32)
    nw = len(a) // window
    n = nw * window
    span = min_windows * window
    ds = np.arange(-(len(a) - span), len(b) - span + 1)
    scores = np.full(len(ds), 0.5)
    if nw == 0 or len(ds) == 0 or len(b) == 0:
        return ds, scores
    ok = np.ones(n, dtype=bool) if valid is None else np.asarray(valid[:n], dtype=bool)
    a = a[:n]
    # 768 * per-code score = 12 * (errors of 32 bits) + 32 * (errors of the 12 temporal bits):
    # exact in int16, as is a window's sum (<= 768 * window for window <= 42).
    scale = 2 * N_BITS * _N_DELTA_BITS
    assert window * scale < 2 ** 15, "window too long for int16 sums"
    starts = np.arange(nw) * window
    pre = np.r_[0, np.cumsum(ok)]  # valid codes of a before index i
    for c0 in range(0, len(ds), 4096):  # bounded memory: 4096 alignments at a time
        dd = ds[c0: c0 + 4096]
        lo_b, hi_b = max(0, int(dd[0])), min(len(b), int(dd[-1]) + n)  # track codes these alignments touch
        x = a[:, None] ^ b[None, lo_b:hi_b]
        e = _popcount16(x) * np.int16(_N_DELTA_BITS)
        e += _popcount16(x & DELTA_MASK) * np.int16(N_BITS)
        e[~ok] = 0
        # padded so that row i, column i + (d - lo_b) + n is code b[d + i]; zeros outside b
        width = hi_b - lo_b
        ep = np.zeros((n, width + 2 * n), dtype=np.int16)
        ep[:, n: n + width] = e
        st = ep.strides
        diag = np.lib.stride_tricks.as_strided(ep, shape=(n, width + n + 1), strides=(st[0] + st[1], st[1]),
                                               writeable=False)
        c_lo = int(dd[0]) - lo_b + n
        sums = diag[:, c_lo: c_lo + len(dd)].reshape(nw, window, len(dd)).sum(axis=1, dtype=np.int32)
        # valid codes i of each window with 0 <= i + d < len(b)
        lo_i = np.clip(np.maximum(starts[:, None], -dd[None, :]), 0, n)
        hi_i = np.clip(np.minimum(starts[:, None] + window, len(b) - dd[None, :]), 0, n)
        counts = np.where(hi_i > lo_i, pre[hi_i] - pre[lo_i], 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            w = np.where(counts * 2 >= window, sums / (scale * counts.astype(np.float64)), np.nan)
        scores[c0: c0 + 4096] = partial_scores(w.T, keep, min_windows)
    return ds, scores


def on_code_grid(qcodes: np.ndarray, valid: np.ndarray, offset: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The query frames that fall on the library's code grid at ``offset`` (library analysis
    frame = query frame + offset; library codes every DECIMATE-th frame), their validity and
    the library code index of the first one."""
    j0 = (-offset) % DECIMATE
    return qcodes[j0::DECIMATE], valid[j0::DECIMATE], (j0 + offset) // DECIMATE


def verify_query(qcodes: np.ndarray, valid: np.ndarray, lib: np.ndarray, offset: int) -> Verification:
    """Query codes (one per analysis frame, ``valid`` mask) against library codes (one every
    DECIMATE-th frame) at ``offset`` (library analysis frame = query frame + offset)."""
    a, va, d = on_code_grid(qcodes, valid, offset)
    return verify_codes(a, lib, d, va)


def contrast(a: np.ndarray, b: np.ndarray, d: int, *, shifts: Sequence[int], min_codes: int,
             valid: np.ndarray | None = None) -> float:
    """Median score at ``d + shifts`` (codes) minus the score at ``d``: how much better the
    alignment is than the same codes slid by a few seconds along the same track. Static chroma
    (drum loops, drones) agrees at any offset and has a contrast near 0. Shifts comparing fewer
    than ``min_codes`` codes are left out; 0 when none is left."""
    aligned = verify_codes(a, b, d, valid).score
    shifted = [v.score for v in (verify_codes(a, b, d + k, valid) for k in shifts) if v.n >= min_codes]
    return float(np.median(shifted)) - aligned if shifted else 0.0


def query_contrast(qcodes: np.ndarray, valid: np.ndarray, lib: np.ndarray, offset: int, *,
                   shifts: Sequence[int], min_codes: int) -> float:
    """:func:`contrast` of a query (one code per analysis frame) at ``offset`` analysis frames."""
    a, va, d = on_code_grid(qcodes, valid, offset)
    return contrast(a, lib, d, shifts=shifts, min_codes=min_codes, valid=va)
