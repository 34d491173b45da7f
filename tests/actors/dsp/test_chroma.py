"""Chroma from power against librosa.feature.chroma_stft(S=..., tuning=0, norm=inf).

Tolerance: same power spectrogram in -> within 1e-6 (max-normalised, values in [0, 1]).
"""
from __future__ import annotations

import librosa
import numpy as np
import pytest

from actors.dsp.chroma import chroma_filterbank, chroma_from_power
from actors.dsp.xp import to_numpy
from pipeline.synth import signals as sg

SR = 22050
SIGNALS = {
    "chord": lambda: sg.chord([60, 64, 67], seconds=1.0),
    "chirp": lambda: sg.chirp(seconds=1.0),
    "noise": lambda: sg.noise(seconds=1.0),
    "clicks": lambda: sg.clicks(seconds=1.0),
    "silence": lambda: sg.silence(seconds=1.0),
}


def test_filterbank_is_librosas(xp):
    fb = chroma_filterbank(sr=SR, n_fft=2048, xp=xp)
    ref = librosa.filters.chroma(sr=SR, n_fft=2048, tuning=0.0)
    assert fb.dtype == xp.float32 and fb.shape == (12, 1025)
    np.testing.assert_allclose(to_numpy(fb), ref, rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", sorted(SIGNALS))
def test_chroma_matches_librosa(xp, name):
    S = np.abs(librosa.stft(SIGNALS[name]())) ** 2
    ref = librosa.feature.chroma_stft(S=S, sr=SR, tuning=0)
    out = chroma_from_power(xp.asarray(S), chroma_filterbank(sr=SR, n_fft=2048, xp=xp))
    assert out.shape == ref.shape and out.dtype == xp.float32
    np.testing.assert_allclose(to_numpy(out), ref, rtol=0, atol=1e-6)


def test_chord_pitch_classes(xp):
    """C major (C E G) -> the three strongest chroma bins are 0, 4, 7 (independent of librosa)."""
    S = np.abs(librosa.stft(sg.chord([60, 64, 67], seconds=1.0, harmonics=1))) ** 2
    c = to_numpy(chroma_from_power(xp.asarray(S), chroma_filterbank(sr=SR, n_fft=2048, xp=xp)))
    assert sorted(np.argsort(c.mean(axis=1))[-3:]) == [0, 4, 7]
    assert np.allclose(c.max(axis=0), 1.0)


def test_batch_axis(xp):
    S = np.stack([np.abs(librosa.stft(SIGNALS[n]())) ** 2 for n in ("chord", "noise")])
    fb = chroma_filterbank(sr=SR, n_fft=2048, xp=xp)
    out = to_numpy(chroma_from_power(xp.asarray(S), fb))
    for i in range(2):
        np.testing.assert_allclose(out[i], to_numpy(chroma_from_power(xp.asarray(S[i]), fb)),
                                   rtol=0, atol=1e-6)
