"""pipeline.search.score against a plain per-bit reference (Python ints, one bit at a time) on
random codes: every offset, overlapping or not, negative ones included, with and without a
validity mask. Scores are ratios of integer counts, so they must agree exactly."""
from __future__ import annotations

import numpy as np
import pytest

from actors.fingerprint import DECIMATE
from pipeline.search.score import DELTA_MASK, Verification, contrast, query_contrast, verify_codes, verify_query

SHIFTS = (-8, -4, 4, 8)


def ref_verify(a, b, d, valid=None) -> tuple[float, int, float]:
    """(BER, codes compared, BER of bits 12-23) of a[i] against b[i + d], bit by bit."""
    errors = errors_delta = n = 0
    for i in range(len(a)):
        j = i + d
        if not 0 <= j < len(b) or (valid is not None and not valid[i]):
            continue
        n += 1
        x = int(a[i]) ^ int(b[j])
        for bit in range(32):
            if (x >> bit) & 1:
                errors += 1
                errors_delta += 12 <= bit < 24
    if n == 0:
        return 1.0, 0, 1.0
    return errors / (32 * n), n, errors_delta / (12 * n)


def ref_verify_query(q, valid, lib, offset) -> tuple[float, int, float]:
    """Query frame j (one code per analysis frame) meets library code k when its library analysis
    frame j + offset is k * DECIMATE."""
    pairs = [(int(q[j]), int(lib[(j + offset) // DECIMATE])) for j in range(len(q))
             if (j + offset) % DECIMATE == 0 and 0 <= (j + offset) // DECIMATE < len(lib) and valid[j]]
    return ref_verify([x for x, _ in pairs], [y for _, y in pairs], 0)


def ref_contrast(score_at, d, min_codes) -> float:
    shifted = [s for s, n in (score_at(d + k) for k in SHIFTS) if n >= min_codes]
    return float(np.median(shifted)) - score_at(d)[0] if shifted else 0.0


def _score(v: tuple[float, int, float]) -> tuple[float, int]:
    return 0.5 * (v[0] + v[2]), v[1]


def _codes(rng, n) -> np.ndarray:
    return rng.integers(0, 2**32, size=n, dtype=np.uint64).astype(np.uint32)


def _noisy_copy(rng, a, p=0.1) -> np.ndarray:
    """``a`` with each bit flipped with probability ``p`` (a re-encoded copy)."""
    flips = (rng.random((len(a), 32)) < p) @ (np.uint64(1) << np.arange(32, dtype=np.uint64))
    return (a.astype(np.uint64) ^ flips).astype(np.uint32)


@pytest.fixture()
def pair():
    """a (50 codes) and b (80 codes) holding a noisy copy of a at b[17:67]."""
    rng = np.random.default_rng(42)
    a = _codes(rng, 50)
    b = _codes(rng, 80)
    b[17:67] = _noisy_copy(rng, a)
    valid = rng.random(50) < 0.7
    return a, b, valid


def test_delta_mask_is_bits_12_to_23():
    assert int(DELTA_MASK) == sum(1 << bit for bit in range(12, 24))
    assert Verification(0.2, 5, 0.4).score == pytest.approx(0.3)


def test_verify_codes_matches_reference_at_every_offset(pair):
    a, b, valid = pair
    for d in range(-len(a) - 3, len(b) + 3):  # no overlap at both ends
        for mask in (None, valid):
            got = verify_codes(a, b, d, mask)
            assert (got.ber, got.n, got.ber_delta) == ref_verify(a, b, d, mask), (d, mask is not None)
    # The true offset stands out: ~10 % flipped bits against ~50 % elsewhere.
    best = min(range(-len(a) + 1, len(b)), key=lambda d: verify_codes(a, b, d).score)
    v = verify_codes(a, b, best)
    assert best == 17 and v.n == 50 and 0.05 < v.ber < 0.15
    assert verify_codes(a, b, 16).ber > 0.4


def test_verify_codes_edge_cases(pair):
    a, b, _ = pair
    none = Verification(1.0, 0, 1.0)
    assert verify_codes(a, b, len(b)) == none  # a starts after b ends
    assert verify_codes(a, b, -len(a)) == none  # a ends before b starts
    assert verify_codes(a, b, 0, np.zeros(len(a), bool)) == none  # nothing valid
    assert verify_codes(a[:0], b, 0) == none and verify_codes(a, b[:0], 0) == none
    assert verify_codes(a, b, -len(a) + 1).n == 1  # one code of overlap at a negative offset
    same = verify_codes(a, a, 0)
    assert (same.ber, same.n, same.ber_delta, same.score) == (0.0, 50, 0.0, 0.0)
    inverted = verify_codes(a, ~a, 0)
    assert (inverted.ber, inverted.ber_delta) == (1.0, 1.0)


def test_verify_query_matches_reference_on_the_code_grid():
    rng = np.random.default_rng(7)
    lib = _codes(rng, 40)
    q = _codes(rng, 120)
    # Frames 10, 14, ... of the query fall on library codes 3, 4, ... at offset 2 (10 + 2 = 12 = 3 * 4).
    q[10::DECIMATE] = _noisy_copy(rng, lib[3:31])  # 28 frames: 10, 14, ..., 118
    valid = rng.random(120) < 0.8
    for offset in range(-len(q) - 5, len(lib) * DECIMATE + 5):
        got = verify_query(q, valid, lib, offset)
        assert (got.ber, got.n, got.ber_delta) == ref_verify_query(q, valid, lib, offset), offset
    assert min(range(-100, 150), key=lambda o: verify_query(q, np.ones(120, bool), lib, o).score) == 2
    assert verify_query(q, np.zeros(120, bool), lib, 2) == Verification(1.0, 0, 1.0)


def test_contrast_matches_reference(pair):
    a, b, valid = pair
    for d in (-60, -45, -3, 0, 17, 30, 70, 85):
        for mask in (None, valid):
            want = ref_contrast(lambda x, mask=mask: _score(ref_verify(a, b, x, mask)), d, min_codes=10)
            assert contrast(a, b, d, shifts=SHIFTS, min_codes=10, valid=mask) == pytest.approx(want, abs=1e-12)
    # Aligned codes beat their shifted selves by about chance minus the noise; no usable shift: 0.
    assert contrast(a, b, 17, shifts=SHIFTS, min_codes=10) > 0.3
    assert contrast(a, b, 17, shifts=SHIFTS, min_codes=1000) == 0.0
    # Static codes agree at every shift: no contrast.
    static = np.full(50, 0x12345678, np.uint32)
    assert contrast(static, np.full(80, 0x12345678, np.uint32), 10, shifts=SHIFTS, min_codes=10) == 0.0


def test_query_contrast_matches_reference():
    rng = np.random.default_rng(9)
    lib = _codes(rng, 60)
    q = _codes(rng, 160)
    q[1::DECIMATE][:40] = _noisy_copy(rng, lib[5:45])  # offset 19: 1 + 19 = 20 = 5 * 4
    valid = rng.random(160) < 0.9
    for offset in (-30, -1, 0, 19, 20, 101):
        want = ref_contrast(lambda k, o=offset: _score(ref_verify_query(q, valid, lib, o + k * DECIMATE)), 0,
                            min_codes=5)
        got = query_contrast(q, valid, lib, offset, shifts=SHIFTS, min_codes=5)
        assert got == pytest.approx(want, abs=1e-12), offset
    assert query_contrast(q, valid, lib, 19, shifts=SHIFTS, min_codes=5) > 0.3


# -- windowed (partial) verification: against ref_verify window by window ---------------------

def ref_windows(a, b, d, valid, window) -> list[float]:
    """Score (BER + temporal BER) / 2 of each window of ``window`` codes of ``a`` at ``d``, by
    ref_verify, for windows with at least half their codes compared (the others are NaN)."""
    out = []
    for w in range(len(a) // window):
        sl = slice(w * window, (w + 1) * window)
        m = None if valid is None else valid[sl]
        # ref_verify of the window's codes alone, aligned at d + its start
        ber, n, ber_d = ref_verify(a[sl], b, d + w * window, m)
        out.append(0.5 * (ber + ber_d) if 2 * n >= window else float("nan"))
    return out


@pytest.mark.parametrize("masked", [False, True])
def test_window_matrix_matches_the_reference_at_every_alignment(masked: bool) -> None:
    from pipeline.search.score import window_matrix, window_scores

    rng = np.random.default_rng(5)
    b = rng.integers(0, 2**32, 60, dtype=np.uint64).astype(np.uint32)
    a = b[10:47] ^ (rng.random(37) < 0.2).astype(np.uint32) << np.uint32(3)
    valid = rng.random(len(a)) < 0.7 if masked else None
    ds = np.arange(-40, 70)
    got = window_matrix(a, b, ds, valid, window=8)
    assert got.shape == (len(ds), 37 // 8)
    for i, d in enumerate(ds):
        want = ref_windows(a, b, int(d), valid, 8)
        np.testing.assert_allclose(got[i], want, rtol=0, atol=1e-12)  # NaN where a window is left out
        assert np.allclose(window_scores(a, b, int(d), valid, window=8), [w for w in want if not np.isnan(w)])


def test_partial_scores_and_the_sweep() -> None:
    from pipeline.search.score import alignment_sweep, partial_score, partial_scores, window_matrix

    w = np.array([[0.1, 0.4, np.nan, 0.2, 0.3], [np.nan] * 5, [0.5, 0.0, 0.25, 0.25, 0.5]])
    # best half of 4 windows: mean(0.1, 0.2); no window: chance; best 2 (round(2.5)) of 5: 0.125
    np.testing.assert_allclose(partial_scores(w, 0.5), [0.15, 0.5, 0.125])
    assert partial_scores(w, 0.5, min_windows=5).tolist() == [0.5, 0.5, 0.125]
    assert partial_score(np.array([0.3, 0.1]), 1.0) == pytest.approx(0.2)
    rng = np.random.default_rng(9)
    b = rng.integers(0, 2**32, 300, dtype=np.uint64).astype(np.uint32)
    a = b[120:184].copy()
    a[:32] = rng.integers(0, 2**32, 32, dtype=np.uint64).astype(np.uint32)  # half the clip drowned
    ds, sweep = alignment_sweep(a, b, window=8, keep=0.5, min_windows=3)
    assert ds[0] == -(64 - 24) and ds[-1] == 300 - 24 and len(sweep) == len(ds)
    for d in (-40, -3, 0, 77, 120, 250, 276):
        assert sweep[d - ds[0]] == pytest.approx(partial_scores(window_matrix(a, b, np.array([d]), window=8),
                                                                0.5, 3)[0])
    # The agreeing half scores 0 at the true alignment; the whole-clip score there is near chance.
    assert int(ds[np.argmin(sweep)]) == 120 and sweep.min() == 0.0
    assert verify_codes(a, b, 120).score > 0.2


@pytest.mark.parametrize(("n_b", "masked"), [(300, True), (40, True), (64, False)])
def test_sweep_equals_the_windowed_score_at_every_alignment(n_b: int, masked: bool) -> None:
    """The sweep (integer errors summed along diagonals) against window_matrix + partial_scores,
    alignment by alignment: a clip longer than its window multiple, invalid codes, a track
    shorter than the clip."""
    from pipeline.search.score import alignment_sweep, partial_scores, window_matrix

    rng = np.random.default_rng(11)
    b = rng.integers(0, 2**32, n_b, dtype=np.uint64).astype(np.uint32)
    a = rng.integers(0, 2**32, 53, dtype=np.uint64).astype(np.uint32)
    m = min(30, n_b - 7)
    a[5: 5 + m] = b[7: 7 + m] ^ (rng.random(m) < 0.3).astype(np.uint32) << np.uint32(13)
    valid = rng.random(len(a)) < 0.8 if masked else None
    ds, sweep = alignment_sweep(a, b, valid, window=8, keep=0.5, min_windows=2)
    assert ds[0] == -(53 - 16) and ds[-1] == n_b - 16
    want = partial_scores(window_matrix(a, b, ds, valid, window=8), 0.5, 2)
    np.testing.assert_allclose(sweep, want, rtol=0, atol=1e-12)
    assert int(ds[np.argmin(sweep)]) == 2  # b[7 + i] against a[5 + i]
