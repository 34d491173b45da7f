"""Onset strength and tempo against librosa 0.11.

Tolerances: onset within 1e-4 (dB flux; values up to ~30, measured ~3e-6);
tempo equal to librosa.feature.tempo on the same onset envelope (same lag
picked), and within one autocorrelation lag (~2-5 %) of the true BPM on click tracks.
"""
from __future__ import annotations

import librosa
import numpy as np
import pytest

from actors.dsp.onset import mel_filterbank, onset_strength_from_power, tempo
from actors.dsp.stft import power_spectrogram, stft
from actors.dsp.xp import to_numpy
from tests import signals as sg

SR = 22050
SIGNALS = {
    "music": lambda: sg.music(seconds=3.0),
    "drums": lambda: sg.drum_pattern(bpm=100, seconds=3.0),
    "clicks": lambda: sg.clicks(bpm=120, seconds=3.0),
    "chirp": lambda: sg.chirp(seconds=2.0),
    "noise": lambda: sg.noise(seconds=2.0),
    "silence": lambda: sg.silence(seconds=1.0),
}


def _onset(xp, y, **kw):
    return onset_strength_from_power(power_spectrogram(stft(xp.asarray(y))),
                                     mel_filterbank(sr=SR, n_fft=2048, xp=xp), **kw)


def test_mel_filterbank_is_librosas(xp):
    ref = librosa.filters.mel(sr=SR, n_fft=2048, n_mels=128, fmax=SR / 2)
    np.testing.assert_allclose(to_numpy(mel_filterbank(sr=SR, n_fft=2048, xp=xp)), ref,
                               rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", sorted(SIGNALS))
def test_onset_matches_librosa(xp, name):
    y = SIGNALS[name]()
    ref = librosa.onset.onset_strength(y=y, sr=SR)
    out = _onset(xp, y)
    assert out.shape == ref.shape and out.dtype == xp.float32
    np.testing.assert_allclose(to_numpy(out), ref, rtol=0, atol=1e-4)


def test_onset_lag_and_max_size(xp):
    y = sg.music(seconds=2.0)
    ref = librosa.onset.onset_strength(y=y, sr=SR, lag=2, max_size=3)
    out = _onset(xp, y, lag=2, max_size=3)
    np.testing.assert_allclose(to_numpy(out), ref, rtol=0, atol=1e-4)


def test_top_db_reference_is_per_track(xp):
    """A quiet track next to a loud one keeps its own onset (librosa on the stacked
    batch would clip it against the loud track's max)."""
    loud = sg.music(seconds=2.0)
    quiet = 1e-4 * sg.music(seconds=2.0, seed=5)  # 80 dB down
    out = to_numpy(_onset(xp, np.stack([loud, quiet])))
    for i, y in enumerate((loud, quiet)):
        np.testing.assert_allclose(out[i], librosa.onset.onset_strength(y=y, sr=SR),
                                   rtol=0, atol=1e-4)
    batch_ref = librosa.onset.onset_strength(y=np.stack([loud, quiet]), sr=SR)
    assert not np.allclose(batch_ref[1], out[1], atol=1e-2)  # the difference is real


def test_padded_batch_uses_valid_frames_only(xp):
    ys = [sg.music(seconds=2.0), sg.clicks(seconds=0.7)]
    n = max(len(y) for y in ys)
    lengths = [1 + len(y) // 512 for y in ys]
    out = to_numpy(_onset(xp, np.stack([np.pad(y, (0, n - len(y))) for y in ys]),
                          lengths=xp.asarray(lengths)))
    for i, y in enumerate(ys):
        np.testing.assert_allclose(out[i, : lengths[i]], librosa.onset.onset_strength(y=y, sr=SR),
                                   rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", ["music", "drums", "clicks", "noise", "silence"])
def test_tempo_matches_librosa(xp, name):
    env = librosa.onset.onset_strength(y=SIGNALS[name](), sr=SR)
    ref = float(librosa.feature.tempo(onset_envelope=env, sr=SR)[0])
    assert tempo(xp.asarray(env), sr=SR) == pytest.approx(ref, rel=1e-9)
    assert tempo(xp.asarray(env), sr=SR, block_frames=7) == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize("bpm", [100.0, 120.0, 130.0])
def test_tempo_of_click_track(xp, bpm):
    env = to_numpy(_onset(xp, sg.clicks(bpm=bpm, seconds=10.0)))
    est = tempo(env, sr=SR)
    # the estimate lives on a grid of integer lags (frames per beat): within one lag
    frames_per_beat = 60.0 * SR / 512
    assert abs(frames_per_beat / est - frames_per_beat / bpm) <= 1.0
    assert est == pytest.approx(float(librosa.feature.tempo(onset_envelope=env, sr=SR)[0]))
