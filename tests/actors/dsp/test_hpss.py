"""HPSS and the sliding medians against librosa 0.11 / scipy.

Tolerances:
* medians: exactly equal to scipy.ndimage.median_filter(mode='reflect') (odd
  and even windows, signals shorter than the window);
* HPSS on the same magnitude input as librosa: masks within 1e-6;
* HPSS on our own float32 STFT: H, P within 1e-5 x max|D|, masks within 1e-4
  (measured ~1e-6: the masks only see the STFT's rounding);
* hard masks (power=inf): >= 99.9 % identical (ties can flip on rounding).
"""
from __future__ import annotations

import librosa
import numpy as np
import pytest
import scipy.ndimage as nd

from actors.dsp import hpss as hp
from actors.dsp.median import median_along_freq, median_along_time
from actors.dsp.stft import stft
from actors.dsp.xp import to_numpy
from actors.errors import ChromarayError
from pipeline.synth import signals as sg

SIGNALS = {
    "music": lambda: sg.music(seconds=3.0),
    "chord": lambda: sg.chord([57, 61, 64], seconds=2.0),
    "clicks": lambda: sg.clicks(bpm=140, seconds=2.0),
    "chirp": lambda: sg.chirp(seconds=2.0),
    "noise": lambda: sg.noise(seconds=2.0),
    "silence": lambda: sg.silence(seconds=1.0),
}


@pytest.mark.parametrize("t", [3, 16, 200])
@pytest.mark.parametrize("size", [1, 4, 5, 30, 31])
def test_medians_equal_scipy_reflect(xp, t, size):
    rng = np.random.default_rng(t * 100 + size)
    X = rng.random((2, 40, t)).astype(np.float32)
    ref_t = np.stack([nd.median_filter(x, size=(1, size), mode="reflect") for x in X])
    ref_f = nd.median_filter(X, size=(1, size, 1), mode="reflect")
    np.testing.assert_array_equal(to_numpy(median_along_time(xp.asarray(X), size=size)), ref_t)
    np.testing.assert_array_equal(to_numpy(median_along_freq(xp.asarray(X), size=size)), ref_f)


def test_median_time_reflects_at_each_tracks_end(xp):
    rng = np.random.default_rng(7)
    X = rng.random((3, 10, 60)).astype(np.float32)
    lengths = [60, 41, 9]
    out = to_numpy(median_along_time(xp.asarray(X), size=31, lengths=xp.asarray(lengths)))
    for i, n in enumerate(lengths):
        ref = nd.median_filter(X[i, :, :n], size=(1, 31), mode="reflect")
        np.testing.assert_array_equal(out[i, :, :n], ref)


def test_median_time_window_of_frames(xp):
    """A slice of frames [first, stop) from held frames [offset, offset + G) equals the
    full filter's slice, including reflection at the track's start and end."""
    rng = np.random.default_rng(8)
    full = rng.random((1, 5, 100)).astype(np.float32)
    ref = nd.median_filter(full[0], size=(1, 31), mode="reflect")
    for first, stop in [(0, 20), (30, 50), (80, 100)]:
        lo, hi = max(0, first - 15), min(100, stop + 15)
        out = median_along_time(xp.asarray(full[..., lo:hi]), size=31, lengths=xp.asarray([100]),
                                frame_offset=lo, first=first, stop=stop)
        np.testing.assert_array_equal(to_numpy(out)[0], ref[:, first:stop])


@pytest.mark.parametrize("split_zeros", [False, True])
@pytest.mark.parametrize("power", [1.0, 2.0, np.inf])
def test_softmask_matches_librosa(xp, split_zeros, power):
    rng = np.random.default_rng(1)
    X = rng.random((30, 40)).astype(np.float32)
    R = rng.random((30, 40)).astype(np.float32)
    X[:5] = 0
    R[:5] = 0  # both zero: split or zero
    ref = librosa.util.softmask(X, R, power=power, split_zeros=split_zeros)
    out = to_numpy(hp.softmask(xp.asarray(X), xp.asarray(R), power=power, split_zeros=split_zeros))
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", sorted(SIGNALS))
def test_hpss_same_input_as_librosa(xp, name):
    S = np.abs(librosa.stft(SIGNALS[name]()))
    ref_h, ref_p = librosa.decompose.hpss(S, mask=True)
    m_h, m_p = hp.hpss(xp.asarray(S), mask=True)
    np.testing.assert_allclose(to_numpy(m_h), ref_h, rtol=0, atol=1e-6)
    np.testing.assert_allclose(to_numpy(m_p), ref_p, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", sorted(SIGNALS))
def test_hpss_complex_matches_librosa(xp, name):
    y = SIGNALS[name]()
    D_ref = librosa.stft(y)
    H_ref, P_ref = librosa.decompose.hpss(D_ref)
    D = stft(xp.asarray(y))
    H, P = hp.hpss(D)
    assert H.dtype == xp.complex64
    scale = max(float(np.abs(D_ref).max()), 1e-30)
    np.testing.assert_allclose(to_numpy(H), H_ref, rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(to_numpy(P), P_ref, rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("kw", [
    {"kernel_size": (17, 31)},
    {"kernel_size": 30},  # even: scipy's upper median, generic path
    {"margin": 3.0},
    {"margin": (1.0, 2.0), "power": 1.0},
])
def test_hpss_options_match_librosa(xp, kw):
    y = sg.music(seconds=2.0)
    D_ref = librosa.stft(y)
    ref = librosa.decompose.hpss(D_ref, mask=True, **kw)
    out = hp.hpss(stft(xp.asarray(y)), mask=True, **kw)
    for o, r in zip(out, ref):
        np.testing.assert_allclose(to_numpy(o), r, rtol=0, atol=1e-4)


def test_hard_masks(xp):
    y = sg.music(seconds=2.0)
    ref = librosa.decompose.hpss(librosa.stft(y), mask=True, power=np.inf)
    out = hp.hpss(stft(xp.asarray(y)), mask=True, power=np.inf)
    for o, r in zip(out, ref):
        assert to_numpy(o).dtype == bool
        assert np.mean(to_numpy(o) == r) >= 0.999


def test_padded_batch_equals_each_track_alone(xp):
    ys = [sg.music(seconds=2.0), sg.chord([60, 63], seconds=0.9), sg.clicks(seconds=0.3)]
    n = max(len(y) for y in ys)
    D = stft(xp.asarray(np.stack([np.pad(y, (0, n - len(y))) for y in ys])))
    lengths = [1 + len(y) // 512 for y in ys]
    m_h, m_p = hp.hpss(D, mask=True, lengths=xp.asarray(lengths))
    for i, y in enumerate(ys):
        s_h, s_p = hp.hpss(stft(xp.asarray(y)), mask=True)
        t = lengths[i]
        np.testing.assert_allclose(to_numpy(m_h)[i, :, :t], to_numpy(s_h), rtol=0, atol=1e-6)
        np.testing.assert_allclose(to_numpy(m_p)[i, :, :t], to_numpy(s_p), rtol=0, atol=1e-6)


def test_margin_below_one_rejected(xp):
    with pytest.raises(ChromarayError):
        hp.hpss(xp.ones((5, 5), dtype=xp.float32), margin=0.5)


@pytest.mark.parametrize("kw", [{}, {"kernel_size": (17, 31), "margin": (1.0, 2.0)},
                                {"margin": 3.0, "power": 1.0}])
def test_masks_of_a_time_span_equal_the_whole_tracks(xp, kw):
    """Frames [first, stop) from held frames [offset, offset + G) (the chain's spans):
    bit-identical to the slice of the whole-track masks, at the track's ends too."""
    S = xp.asarray(np.abs(librosa.stft(sg.music(seconds=2.4))))[None]
    t = S.shape[-1]
    whole = [to_numpy(m)[0] for m in hp.hpss_masks(S, **kw)]
    for first, stop in [(0, 20), (30, 50), (t - 20, t)]:
        lo, hi = max(0, first - 15), min(t, stop + 15)
        part = hp.hpss_masks(S[..., lo:hi], lengths=xp.asarray([t]), frame_offset=lo, first=first,
                             stop=stop, **kw)
        for p, w in zip(part, whole):
            assert p.shape == (1, S.shape[1], stop - first)
            np.testing.assert_array_equal(to_numpy(p)[0], w[:, first:stop])


@pytest.mark.parametrize("margin", [1.0, 3.0, (1.0, 2.0), (2.0, 1.0)])
@pytest.mark.parametrize("power", [1.0, 2.0, np.inf])
def test_harmonic_mask_is_the_first_of_hpss_masks(xp, margin, power):
    S = xp.asarray(np.abs(librosa.stft(sg.chord([57, 61, 64], seconds=1.0) + sg.clicks(seconds=1.0))))
    m_h, _ = hp.hpss_masks(S, margin=margin, power=power)
    np.testing.assert_array_equal(to_numpy(hp.harmonic_mask(S, margin=margin, power=power)), to_numpy(m_h))
    sub = hp.harmonic_mask(S, margin=margin, power=power, first=3, stop=9)
    np.testing.assert_array_equal(to_numpy(sub), to_numpy(m_h)[:, 3:9])


def test_span_outside_the_held_frames_rejected(xp):
    S = xp.ones((1, 5, 20), dtype=xp.float32)
    with pytest.raises(ChromarayError, match="not inside"):
        hp.hpss_masks(S, frame_offset=10, first=5, stop=15)
    with pytest.raises(ChromarayError, match="not inside"):
        hp.harmonic_mask(S, frame_offset=10, first=12, stop=31)
