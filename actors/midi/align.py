"""Chroma alignment kernels for MIDI-to-audio matching (pure NumPy + librosa DTW).

Pipeline per pair (Müller, "Fundamentals of Music Processing", ch. 3 and 7):
1. ``cens``: chroma energy normalised statistics at ~``target_rate_hz`` from frame chroma
   of either kind (L1 per frame, logarithmic-like quantisation, Hann smoothing,
   downsampling, L2). The quantisation discards loudness and most of the overtone/noise
   detail that separates a rendering from its score, the smoothing absorbs local timing.
2. ``align``: subsequence DTW (:func:`subsequence_dtw`, compiled with numba; the same result
   as librosa.sequence.dtw, tested) of the shorter sequence inside the longer one, cosine
   cost, step sizes (1,1), (1,2), (2,1) so the local tempo ratio stays within [1/2, 2] and a
   path cannot degenerate into a horizontal/vertical run.
3. Score: the mean cosine similarity along the path, rescaled against the pair's chance
   similarity (mean over the whole cost matrix): ``(s_path - s_all) / (1 - s_all)``.
   Tonal music shares keys and chords, so raw similarities of unrelated pieces are high
   (0.6-0.8); the chance-corrected score is lower for them than for a rendering of the same
   piece, but the two overlap on real instrument sound, so pipeline.midi_match calibrates
   acceptance by the same score at the other 11 transpositions (figures there).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

__all__ = ["DEFAULT_RATE_HZ", "DEFAULT_SMOOTH_S", "MATCH_VERSION", "Alignment", "align", "cens", "coarsen", "profile",
           "subsequence_dtw", "unit_columns"]


#: Bump when the CENS / DTW / score definition changes (stored with match rows).
MATCH_VERSION = "a3"
DEFAULT_RATE_HZ = 5.0
DEFAULT_SMOOTH_S = 1.0
_STEPS = np.array([[1, 1], [1, 2], [2, 1]])
# A step covering two frames of one sequence pays its cell cost twice, so all paths
# over the same stretch weigh about the same and the mean cost is comparable.
_STEP_WEIGHTS = np.array([1.0, 2.0, 2.0])
_CENS_THRESHOLDS = (0.4, 0.2, 0.1, 0.05)  # librosa/Müller CENS quantisation steps


def cens(chroma: np.ndarray, *, frame_rate_hz: float, target_rate_hz: float = DEFAULT_RATE_HZ,
         smooth_s: float = DEFAULT_SMOOTH_S) -> tuple[np.ndarray, float]:
    """CENS features of (12, T) chroma: ((12, T') float32 unit columns, rate of T' in Hz).

    Silent frames become the uniform unit vector (cosine to anything ~0.29-0.5), so
    silences neither match each other perfectly nor break the cosine.
    """
    c = np.asarray(chroma, np.float64)
    if c.ndim != 2 or c.shape[0] != 12:
        raise ValueError(f"chroma must be (12, T), got {c.shape}")
    hop = max(1, round(frame_rate_hz / target_rate_hz))
    s = c.sum(axis=0, keepdims=True)
    c = np.divide(c, s, out=np.zeros_like(c), where=s > 1e-12)
    q = np.zeros_like(c)
    for th in _CENS_THRESHOLDS:
        q += (c > th) * 0.25
    win = max(3, round(smooth_s * frame_rate_hz) | 1)
    w = np.hanning(win + 2)[1:-1]
    w /= w.sum()
    if q.shape[1]:
        from scipy.ndimage import convolve1d

        q = convolve1d(q, w, axis=1, mode="constant")
    q = q[:, hop // 2::hop] if q.shape[1] > hop // 2 else q[:, :1]
    return unit_columns(q), frame_rate_hz / hop


def unit_columns(x: np.ndarray) -> np.ndarray:
    """L2-normalised columns (float32); all-zero columns become uniform unit vectors."""
    x = np.asarray(x, np.float64)
    n = np.linalg.norm(x, axis=0, keepdims=True)
    out = np.divide(x, n, out=np.full_like(x, 1.0 / np.sqrt(x.shape[0])), where=n > 1e-9)
    return out.astype(np.float32)


def coarsen(feat: np.ndarray, factor: int) -> np.ndarray:
    """Unit-column features pooled over blocks of ``factor`` frames (for a cheap first DTW pass)."""
    if factor <= 1 or feat.shape[1] == 0:
        return feat
    n = -(-feat.shape[1] // factor)
    pad = n * factor - feat.shape[1]
    x = np.pad(feat.astype(np.float64), ((0, 0), (0, pad)), mode="edge")
    return unit_columns(x.reshape(feat.shape[0], n, factor).mean(axis=2))


def profile(feat: np.ndarray) -> np.ndarray:
    """(12,) unit pitch-class profile of unit-column features (for candidate pruning)."""
    if feat.shape[1] == 0:
        return np.full(12, 1 / np.sqrt(12), np.float32)
    return unit_columns(feat.mean(axis=1, keepdims=True))[:, 0]


@dataclass(frozen=True)
class Alignment:
    """Result of aligning a MIDI file with one audio recording.

    score: chance-corrected similarity (<= 1; see module doc). similarity: mean cosine along
    the path. chance: mean cosine over all pairs. audio_start_s/audio_end_s: matched span
    in the audio; midi_start_s/midi_end_s: in the MIDI. tempo_ratio: MIDI seconds per
    audio second along the middle of the path (> 1 when the recording plays faster).
    path: (L, 2) int64 DTW path as (MIDI frame, audio frame), increasing, at ``rate_hz``.
    """

    score: float
    similarity: float
    chance: float
    audio_start_s: float
    audio_end_s: float
    midi_start_s: float
    midi_end_s: float
    tempo_ratio: float
    path: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64), repr=False, compare=False)
    rate_hz: float = DEFAULT_RATE_HZ

    def time_map(self) -> tuple[np.ndarray, np.ndarray]:
        """(MIDI seconds, audio seconds) float32 along the path, strictly increasing in MIDI time:
        where the path holds one MIDI frame over several audio frames, their mean audio time."""
        if len(self.path) == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.float32)
        m, a = self.path[:, 0], self.path[:, 1].astype(np.float64)
        uniq, first, counts = np.unique(m, return_index=True, return_counts=True)
        sums = np.add.reduceat(a, first)
        return ((uniq / self.rate_hz).astype(np.float32), (sums / counts / self.rate_hz).astype(np.float32))


@numba.njit(cache=True, nogil=True)
def _cell(q: np.ndarray, r: np.ndarray, i: int, j: int) -> float:
    """Cosine cost of query frame i and reference frame j (unit rows), clipped to [0, 2]."""
    d = 0.0
    for k in range(q.shape[1]):
        d += q[i, k] * r[j, k]
    return min(max(1.0 - d, 0.0), 2.0)


@numba.njit(cache=True, nogil=True)
def _subseq_dtw(q: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Same recurrence, weights and tie-breaking as librosa.sequence.dtw(subseq=True,
    # step_sizes_sigma=_STEPS, weights_mul=_STEP_WEIGHTS) on C = clip(1 - q @ r.T, 0, 2),
    # which the tests check against; ~10x faster than it (cells computed on the fly: no
    # cost matrix, no padded copies, no generic step loop).
    n, m = q.shape[0], r.shape[0]
    acc = np.full((n, m), np.inf)
    step = np.zeros((n, m), np.int8)
    for j in range(m):
        acc[0, j] = _cell(q, r, 0, j)
    for i in range(1, n):
        for j in range(1, m):
            c = _cell(q, r, i, j)
            best = acc[i - 1, j - 1] + c
            st = 0
            if j >= 2:
                v = acc[i - 1, j - 2] + 2.0 * c
                if v < best:
                    best, st = v, 1
            if i >= 2:
                v = acc[i - 2, j - 1] + 2.0 * c
                if v < best:
                    best, st = v, 2
            acc[i, j] = best
            step[i, j] = st
    end = int(np.argmin(acc[n - 1]))
    path = np.zeros((n + m, 2), np.int64)
    k, i, j = 0, n - 1, end
    while True:
        path[k, 0], path[k, 1] = i, j
        k += 1
        if i == 0 or not np.isfinite(acc[i, j]):
            break
        st = step[i, j]
        if st == 0:
            i, j = i - 1, j - 1
        elif st == 1:
            i, j = i - 1, j - 2
        else:
            i, j = i - 2, j - 1
    return acc, path[:k]


def subsequence_dtw(query: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Subsequence DTW of (12, N) unit-column ``query`` inside (12, M) ``ref`` with cosine cost
    ``clip(1 - q.r, 0, 2)``: (accumulated cost (N, M), path (L, 2) of (query, ref) frames from
    the end back to row 0); steps (1,1), (1,2), (2,1) weighted 1, 2, 2."""
    return _subseq_dtw(np.ascontiguousarray(query.T, dtype=np.float64), np.ascontiguousarray(ref.T, dtype=np.float64))


def align(midi_feat: np.ndarray, audio_feat: np.ndarray, *, rate_hz: float) -> Alignment | None:
    """Subsequence DTW of the shorter of two (12, N) unit-column sequences in the longer.

    Both must be at the same ``rate_hz``. Returns None when no path with a tempo ratio in
    [1/2, 2] exists (one is more than twice as long as the other's best span allows; a
    sequence under 2 frames).
    """
    if midi_feat.shape[1] < 2 or audio_feat.shape[1] < 2:
        return None
    swap = midi_feat.shape[1] > audio_feat.shape[1]  # query = the shorter one
    q, r = (audio_feat, midi_feat) if swap else (midi_feat, audio_feat)
    d, wp = subsequence_dtw(q, r)
    wp = np.asarray(wp)[::-1]  # (L, 2) increasing (query, ref)
    total = float(d[wp[-1, 0], wp[-1, 1]])
    if not np.isfinite(total) or len(wp) < 2:
        return None
    steps = np.diff(wp, axis=0)
    weight = 1.0 + float(np.sum(np.where((steps == [1, 1]).all(axis=1), 1.0, 2.0)))
    similarity = 1.0 - total / weight
    # mean cosine over all frame pairs = dot product of the mean frames (no N x M matrix)
    chance = float(q.astype(np.float64).mean(axis=1) @ r.astype(np.float64).mean(axis=1))
    score = (similarity - chance) / max(1.0 - chance, 1e-6)
    q0, q1 = wp[0, 0], wp[-1, 0]
    r0, r1 = wp[0, 1], wp[-1, 1]
    if swap:
        (a0, a1), (m0, m1) = (q0, q1), (r0, r1)
    else:
        (a0, a1), (m0, m1) = (r0, r1), (q0, q1)
    # Tempo ratio = slope of the path (MIDI frames per audio frame) fitted on its middle
    # 80 %: the ends are smeared by silences and note releases that either side may lack.
    am = wp[:, 1] if not swap else wp[:, 0]
    mm = wp[:, 0] if not swap else wp[:, 1]
    lo, hi = int(0.1 * len(wp)), max(int(0.9 * len(wp)), int(0.1 * len(wp)) + 2)
    seg_a, seg_m = am[lo:hi].astype(np.float64), mm[lo:hi].astype(np.float64)
    if np.ptp(seg_a) > 0:
        tempo_ratio = float(np.polyfit(seg_a, seg_m, 1)[0])
    else:
        tempo_ratio = float((m1 - m0 + 1) / max(a1 - a0 + 1, 1))
    return Alignment(score=float(score), similarity=float(similarity), chance=chance,
                     audio_start_s=a0 / rate_hz, audio_end_s=(a1 + 1) / rate_hz,
                     midi_start_s=m0 / rate_hz, midi_end_s=(m1 + 1) / rate_hz,
                     tempo_ratio=tempo_ratio, path=np.stack([mm, am], axis=1).astype(np.int64), rate_hz=rate_hz)
