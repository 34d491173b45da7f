"""identify's vote counting (pipeline.search.identify._cells) against a plain-Python reference:
one vote per (query frame, track, offset), pooled over ±1 frame, best cells first (ties to the
lower track and offset), cells within 2 codes of a kept one of the same track dropped."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from actors.fingerprint import DECIMATE
from pipeline.search.identify import _cells


def reference(qi, keys, frames, qj, n_best):
    votes = Counter()
    for track, (frame, j) in {(int(k), (int(f), int(qj[i]))) for i, k, f in zip(qi, keys, frames)}:
        votes[(track, frame * DECIMATE - j)] += 1
    pooled = {c: v + votes.get((c[0], c[1] - 1), 0) + votes.get((c[0], c[1] + 1), 0) for c, v in votes.items()}
    kept = []
    for (track, off), v in sorted(pooled.items(), key=lambda kv: (-kv[1], kv[0])):
        if any(t == track and abs(o - off) <= 2 * DECIMATE for t, o, _ in kept):
            continue
        kept.append((track, off, v))
        if len(kept) == n_best:
            break
    return kept


@pytest.mark.parametrize("probes_per_frame", [1, 4])
@pytest.mark.parametrize("seed", range(6))
def test_cells_match_the_reference(seed, probes_per_frame):
    rng = np.random.default_rng(seed)
    t = 200
    qj = np.tile(np.arange(20, 180), probes_per_frame)  # the query frame of each lookup
    n = int(rng.integers(50, 4000))
    qi = rng.integers(0, len(qj), n)
    keys = rng.integers(0, 6, n).astype(np.uint32)  # few tracks and frames: many ties and neighbours
    # code frames near a true alignment (so that votes pile up) or anywhere
    aligned = (qj[qi] + 40 * keys.astype(np.int64)) // DECIMATE
    frames = np.where(rng.random(n) < 0.5, aligned + rng.integers(-1, 2, n), rng.integers(0, 120, n)).clip(0)
    # A lookup returns each posting of its code once.
    qi, keys, frames = np.unique(np.stack([qi, keys, frames]).astype(np.int64), axis=1)
    keys, frames = keys.astype(np.uint32), frames.astype(np.uint32)
    for n_best in (1, 3, 10, 40):
        got = [(c.key, c.offset, c.votes) for c in _cells(qi, keys, frames, qj, t, n_best)]
        assert got == reference(qi, keys, frames, qj, n_best)


def test_no_postings_no_cells():
    z = np.zeros(0, dtype=np.int64)
    assert _cells(z, z.astype(np.uint32), z.astype(np.uint32), np.arange(10), 10, 5) == []
