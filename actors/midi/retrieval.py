"""Candidate retrieval for MIDI-to-audio matching: an inverted index of chord-symbol n-grams.

A library of 10^4-10^5 recordings cannot be aligned by DTW against every MIDI file, and a
12-value pitch-class profile per recording does not single out a piece among that many (in
benchmarks/bench_midi.py it kept the true recording among 64 candidates for 17 of 37 MIDI files
at 10^4). The sequence of harmonies does:

1. **Symbols.** Each CENS frame (unit chroma at ~5 Hz, actors.midi.align.cens) becomes the
   nearest of the 24 major/minor triads (cosine to binary templates).
2. **Tempo invariance.** Runs shorter than ``min_run`` frames are dropped (passing notes,
   rendering noise), then repeats are collapsed: the sequence of chord *changes* is the same
   at any tempo.
3. **n-grams.** Each run of ``n`` consecutive symbols is one key. One quantisation is fragile
   (a single mislabelled chord breaks ``n`` keys, and which one breaks depends on ``min_run``),
   so every recording is indexed under several *views* (:data:`VIEWS`: (n, min_run) pairs);
   the union is much steadier than any one (train split, 10^4 recordings: the true recording
   among the best 16 for 38 of 41 MIDI files, against 26-32 for single views).
4. **Votes.** A MIDI file's keys vote for the recordings that hold them, each vote weighted by
   the key's rarity (``log(N / df)``, so the cadences every chorale has count little) and
   divided by the square root of the recording's key count in that view (so a long recording
   is not favoured for holding many keys). Recordings are ranked by the sum over views.

The index is built once per library (:meth:`ChordIndex.build`) and queried per MIDI file
(:meth:`ChordIndex.scores`): a query costs a few posting-list gathers and one ``bincount``.
Pure NumPy, no Ray.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["CHORD_TEMPLATES", "INDEX_VERSION", "VIEWS", "ChordIndex", "chord_keys", "chord_symbols"]

#: Bump when symbols, views or weights change.
INDEX_VERSION = "c1"
#: (n-gram length, shortest run in frames) of each view. Chosen on the train split of
#: benchmarks/bench_midi.py (10^4 recordings): (3,1), (3,2), (3,3) and (2,2) alone kept the true
#: recording among the best 16 for 32, 32, 26 and 32 of 41 MIDI files; summed, for 38.
VIEWS: tuple[tuple[int, int], ...] = ((3, 1), (3, 2), (3, 3), (2, 2))


def _triads() -> np.ndarray:
    rows = []
    for root in range(12):
        for third in (4, 3):  # major, minor: symbol = 2 * root + (0 major, 1 minor)
            v = np.zeros(12)
            v[[root, (root + third) % 12, (root + 7) % 12]] = 1.0
            rows.append(v / np.linalg.norm(v))
    return np.array(rows)


#: (24, 12) unit binary templates of the major and minor triads; row 2r is r major, 2r+1 r minor.
CHORD_TEMPLATES = _triads()
_N_SYMBOLS = len(CHORD_TEMPLATES)


def chord_symbols(feat: np.ndarray, min_run: int = 1) -> np.ndarray:
    """Collapsed chord-symbol sequence (int64, values 0-23) of (12, N) unit-column features:
    each frame's nearest triad, runs shorter than ``min_run`` frames dropped, repeats merged."""
    if feat.shape[1] == 0:
        return np.zeros(0, np.int64)
    best = np.argmax(CHORD_TEMPLATES @ np.asarray(feat, np.float64), axis=0)
    starts = np.r_[0, np.flatnonzero(np.diff(best)) + 1]
    lengths = np.diff(np.r_[starts, len(best)])
    syms = best[starts][lengths >= min_run]
    if len(syms):
        syms = syms[np.r_[True, np.diff(syms) != 0]]
    return syms.astype(np.int64)


def chord_keys(feat: np.ndarray, views: Sequence[tuple[int, int]] = VIEWS) -> list[np.ndarray]:
    """The distinct n-gram keys (sorted int64) of each view of (12, N) unit-column features."""
    out = []
    for n, min_run in views:
        syms = chord_symbols(feat, min_run)
        if len(syms) < n:
            out.append(np.zeros(0, np.int64))
            continue
        key = np.zeros(len(syms) - n + 1, np.int64)
        for k in range(n):
            key = key * _N_SYMBOLS + syms[k:len(syms) - n + 1 + k]
        out.append(np.unique(key))
    return out


@dataclass
class ChordIndex:
    """Inverted index of chord n-grams over a library of recordings (see module doc).

    ``keys``: sorted distinct (view, n-gram) keys; ``starts``: where each key's postings begin
    in ``ids`` / ``weights`` (length len(keys) + 1); ``ids``: recording numbers (int32, in the
    order given to :meth:`build`); ``weights``: the vote of each posting (float32: the key's
    ``log(N / df)`` over the square root of that recording's key count in the view)."""

    n: int
    keys: np.ndarray
    starts: np.ndarray
    ids: np.ndarray
    weights: np.ndarray
    views: tuple[tuple[int, int], ...] = VIEWS

    @classmethod
    def build(cls, feats: Sequence[np.ndarray], views: Sequence[tuple[int, int]] = VIEWS) -> ChordIndex:
        """The index of (12, N) unit-column feature sequences (one per recording)."""
        views = tuple((int(n), int(r)) for n, r in views)
        span = np.int64(_N_SYMBOLS ** max(n for n, _ in views))  # keys of one view stay below it
        all_keys, all_ids, all_norm = [], [], []
        for i, f in enumerate(feats):
            for v, ks in enumerate(chord_keys(f, views)):
                if len(ks):
                    all_keys.append(ks + v * span)
                    all_ids.append(np.full(len(ks), i, np.int32))
                    all_norm.append(np.full(len(ks), 1.0 / np.sqrt(len(ks)), np.float32))
        if not all_keys:
            z = np.zeros(0, np.int64)
            return cls(len(feats), z, np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32), views)
        keys, ids, norm = np.concatenate(all_keys), np.concatenate(all_ids), np.concatenate(all_norm)
        order = np.argsort(keys, kind="stable")
        keys, ids, norm = keys[order], ids[order], norm[order]
        uniq, first, df = np.unique(keys, return_index=True, return_counts=True)  # a key once per recording
        idf = np.log(max(len(feats), 1) / df).astype(np.float32)
        weights = norm * np.repeat(idf, df)
        starts = np.r_[first, len(keys)].astype(np.int64)
        return cls(len(feats), uniq, starts, ids, weights.astype(np.float32), views)

    def scores(self, feat: np.ndarray) -> np.ndarray:
        """(n,) float64 vote of each recording for the (12, N) unit-column query ``feat``."""
        if self.n == 0 or len(self.keys) == 0:
            return np.zeros(self.n)
        span = np.int64(_N_SYMBOLS ** max(n for n, _ in self.views))
        q = np.concatenate([ks + v * span for v, ks in enumerate(chord_keys(feat, self.views))])
        if len(q) == 0:
            return np.zeros(self.n)
        loc = np.minimum(np.searchsorted(self.keys, q), len(self.keys) - 1)
        loc = loc[self.keys[loc] == q]
        if len(loc) == 0:
            return np.zeros(self.n)
        lo, counts = self.starts[loc], np.diff(self.starts)[loc]
        # the postings of every hit key, gathered without a Python loop
        idx = np.repeat(lo - np.r_[0, np.cumsum(counts)[:-1]], counts) + np.arange(int(counts.sum()))
        return np.bincount(self.ids[idx], weights=self.weights[idx], minlength=self.n)

    @property
    def nbytes(self) -> int:
        return int(self.keys.nbytes + self.starts.nbytes + self.ids.nbytes + self.weights.nbytes)
