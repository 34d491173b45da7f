"""STFT kernels against librosa 0.11.

Tolerance: librosa frames and transforms in float64 and casts to complex64;
we stay in float32, so |ours - librosa| <= 1e-6 x max|librosa| (measured ~6e-8).
"""
from __future__ import annotations

import librosa
import numpy as np
import pytest

from actors.dsp import stft as st
from actors.dsp.xp import to_numpy
from actors.errors import ChromarayError
from pipeline.synth import signals as sg

SIGNALS = {
    "chirp": lambda: sg.chirp(seconds=1.5),
    "chord": lambda: sg.chord([60, 64, 67], seconds=1.5),
    "clicks": lambda: sg.clicks(bpm=120, seconds=1.5),
    "noise": lambda: sg.noise(seconds=1.5),
    "silence": lambda: sg.silence(seconds=1.5),
}
REL = 1e-6


def _close(ours, ref):
    ours = to_numpy(ours)
    scale = max(float(np.abs(ref).max()), 1e-30)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= REL * scale + 1e-12


@pytest.mark.parametrize("name", sorted(SIGNALS))
@pytest.mark.parametrize("n_fft,hop", [(2048, 512), (512, 128)])
@pytest.mark.parametrize("center", [True, False])
def test_stft_matches_librosa(xp, name, n_fft, hop, center):
    y = SIGNALS[name]()[: 22050 + 77]  # odd length: partial last hop
    ref = librosa.stft(y, n_fft=n_fft, hop_length=hop, center=center)
    D = st.stft(xp.asarray(y), n_fft=n_fft, hop_length=hop, center=center)
    assert D.dtype == xp.complex64
    assert type(D) is type(xp.asarray(y))  # stays on the input's device
    _close(D, ref)
    assert D.shape[-1] == st.n_frames(len(y), n_fft=n_fft, hop_length=hop, center=center)


def test_frame_is_librosa_frame_transposed(xp):
    y = sg.noise(seconds=0.3)
    ref = librosa.util.frame(y, frame_length=256, hop_length=100)
    fr = st.frame(xp.asarray(y), frame_length=256, hop_length=100)
    np.testing.assert_array_equal(to_numpy(fr), ref.T)


def test_batch_padding_gives_each_track_its_solo_frames(xp):
    ys = [sg.chirp(seconds=1.0), sg.noise(seconds=0.37, seed=3), sg.clicks(seconds=0.8)]
    n_max = max(len(y) for y in ys)
    batch = np.stack([np.pad(y, (0, n_max - len(y))) for y in ys])
    D = to_numpy(st.stft(xp.asarray(batch)))
    for i, y in enumerate(ys):
        solo = to_numpy(st.stft(xp.asarray(y)))
        t = solo.shape[-1]
        assert t == 1 + len(y) // 512
        np.testing.assert_allclose(D[i, :, :t], solo, rtol=0, atol=1e-6 * np.abs(solo).max())


def test_short_signal_and_spectrograms(xp):
    y = sg.noise(seconds=0.01)  # shorter than n_fft: centre padding still gives frames
    ref = librosa.stft(y)
    D = st.stft(xp.asarray(y))
    _close(D, ref)
    _close(st.power_spectrogram(D), np.abs(ref) ** 2)
    _close(st.magnitude_spectrogram(D), np.abs(ref))


def test_errors(xp):
    with pytest.raises(ChromarayError):
        st.stft(xp.zeros(100, dtype=xp.float32), center=False)
    with pytest.raises(ChromarayError):
        st.stft(xp.zeros(4096, dtype=xp.float32), pad_mode="reflect")
