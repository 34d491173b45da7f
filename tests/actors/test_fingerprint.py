"""actors.fingerprint: bit layout against a plain per-bit reference, xp parity, invariances."""
from __future__ import annotations

import numpy as np
import pytest

from actors import fingerprint as fp
from actors.dsp.xp import to_numpy

RATE = 22050 / 512


def _reference_codes(chroma: np.ndarray, rate: float) -> np.ndarray:
    """Straight loops over the documented definition (no vectorisation tricks)."""
    w, d = fp.frames_for(rate)
    t_len = chroma.shape[1]
    s = np.zeros((12, t_len))
    for t in range(t_len):
        for k in range(12):
            acc = 0.0
            for u in range(t - w // 2, t - w // 2 + w):
                acc += float(chroma[k, min(max(u, 0), t_len - 1)])
            s[k, t] = acc / w
    codes = np.zeros(t_len, dtype=np.uint32)
    for t in range(t_len):
        code = 0
        for k in range(12):
            if s[k, t] > s[(k + 1) % 12, t]:
                code |= 1 << k
            if s[k, min(t + d, t_len - 1)] > s[k, max(t - d, 0)]:
                code |= 1 << (12 + k)
        for k in range(fp.N_FOURTH_BITS):
            if s[k, t] > s[(k + fp.FOURTH) % 12, t]:
                code |= 1 << (24 + k)
        codes[t] = code
    return codes[:: fp.DECIMATE]


def _chroma(seed: int, t: int = 120) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.random((12, t)).astype(np.float32) ** 3
    return c / c.max(axis=0, keepdims=True)


def test_codes_match_reference_definition():
    c = _chroma(0)
    got = fp.fingerprint_codes(c, frame_rate_hz=RATE)
    ref = _reference_codes(c, RATE)
    assert got.dtype == np.uint32
    assert got.shape == (len(range(0, 120, fp.DECIMATE)),)
    # Sums of 16 float32 values in float64 are exact enough that no comparison flips.
    np.testing.assert_array_equal(got, ref)


def test_xp_parity_and_batch(xp):
    cs = np.stack([_chroma(1, 200), _chroma(2, 200)])  # (2, 12, 200)
    want = np.stack([_reference_codes(c, RATE) for c in cs])
    got = to_numpy(fp.fingerprint_codes(xp.asarray(cs), frame_rate_hz=RATE))
    np.testing.assert_array_equal(got, want)
    q, rel = fp.query_codes(xp.asarray(cs[0]), frame_rate_hz=RATE)
    np.testing.assert_array_equal(to_numpy(q)[:: fp.DECIMATE], want[0])
    assert to_numpy(rel).shape == (32, 200) and float(to_numpy(rel).min()) >= 0


def test_gain_invariance_and_sensitivity():
    c = _chroma(3, 300)
    a = fp.fingerprint_codes(c, frame_rate_hz=RATE)
    np.testing.assert_array_equal(a, fp.fingerprint_codes(c * np.float32(0.125), frame_rate_hz=RATE))
    b = fp.fingerprint_codes(_chroma(4, 300), frame_rate_hz=RATE)
    ber = fp.popcount32(a ^ b).sum() / (32 * len(a))
    assert 0.35 < ber < 0.65  # unrelated chroma: about half the bits differ


def test_popcount_and_edge_cases():
    x = np.array([0, 1, 3, 0xFFFFFFFF, 0x80000000, 0x12345678], dtype=np.uint32)
    np.testing.assert_array_equal(fp.popcount32(x), [bin(int(v)).count("1") for v in x])
    assert fp.fingerprint_codes(np.zeros((12, 0), np.float32), frame_rate_hz=RATE).shape == (0,)
    with pytest.raises(ValueError):
        fp.fingerprint_codes(np.zeros((11, 10), np.float32), frame_rate_hz=RATE)
    # Parameters are part of the version: the stored version names this algorithm.
    assert fp.FP_VERSION.startswith("cfp1-")
    assert abs(fp.FP_FRAME_RATE_HZ - RATE / 4) < 1e-9


def test_codes_robust_to_noise_on_real_chroma():
    """Harmonic chroma of a synthetic song vs. the same song at 10 dB SNR: few bits flip."""
    from actors.config import BatchConfig, DSPConfig
    from actors.features import FeatureExtractor
    from pipeline.synth import add_noise, varied_song

    y = varied_song(5, 12.0)
    fx = FeatureExtractor(DSPConfig(), BatchConfig(device="cpu"))
    clean, noisy = (np.asarray(f.chroma) for f in fx([y, add_noise(y, 10.0, np.random.default_rng(0))]))
    a = fp.fingerprint_codes(clean, frame_rate_hz=RATE)
    b = fp.fingerprint_codes(noisy, frame_rate_hz=RATE)
    ber = fp.popcount32(a ^ b).sum() / (32 * len(a))
    assert ber < 0.06, ber
