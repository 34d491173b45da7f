"""Onset strength and tempo against librosa 0.11.

Tolerances: onset within 1e-4 (dB flux; values up to ~30, measured ~3e-6);
tempo equal to librosa.feature.tempo on the same onset envelope (same lag
picked), and within one autocorrelation lag (~2-5 %) of the true BPM on click tracks.
"""
from __future__ import annotations

import librosa
import numpy as np
import pytest

from actors.dsp.onset import (
    db_reference,
    mel_db,
    mel_filterbank,
    onset_from_flux,
    onset_pad_width,
    onset_strength_from_mel_db,
    onset_strength_from_power,
    tempo,
)
from actors.dsp.stft import power_spectrogram, stft
from actors.dsp.xp import to_numpy
from actors.errors import ChromarayError
from pipeline.synth import signals as sg

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


def test_onset_from_flux_shift_and_trim(xp):
    """onset[t] = flux[t - pad - frame_offset] where it exists and t >= pad, else 0."""
    flux = xp.asarray([[1, 2, 3, 4, 5]], dtype=xp.float32)
    got = [to_numpy(onset_from_flux(flux, pad=2, first=a, stop=b, frame_offset=o))[0].tolist()
           for a, b, o in [(0, 8, 0), (4, 9, 3), (0, 4, -3)]]
    assert got == [[0, 0, 1, 2, 3, 4, 5, 0], [0, 1, 2, 3, 4], [0, 0, 4, 5]]
    empty = onset_from_flux(xp.zeros((2, 0), dtype=xp.float32), pad=2, first=0, stop=3)
    assert empty.shape == (2, 3) and not to_numpy(empty).any()
    with pytest.raises(ChromarayError):
        onset_from_flux(flux, pad=2, first=5, stop=4)


def test_db_reference_counts_only_the_tracks_frames(xp):
    rng = np.random.default_rng(3)
    M = rng.normal(-40, 10, (2, 8, 30)).astype(np.float32)
    M[0, 2, 4] = 5.0  # before frame 0 when the frames held start at -5
    M[1, 3, 27] = 9.0  # past track 1's end (frame 20 - 5 + 1 = 16 held frames in)
    ref = to_numpy(db_reference(xp.asarray(M), lengths=xp.asarray([25, 20]), frame_offset=-5))
    np.testing.assert_array_equal(ref, [M[0, :, 5:30].max(), M[1, :, 5:25].max()])
    np.testing.assert_array_equal(to_numpy(db_reference(xp.asarray(M))), M.max(axis=(1, 2)))
    assert float(db_reference(xp.asarray(M[0]))) == M[0].max()  # (n_mels, T) -> scalar


@pytest.mark.parametrize("kw", [{}, {"lag": 2, "max_size": 3}])
def test_onset_of_a_time_span_equals_the_whole_tracks(xp, kw):
    """Frames [first, stop) from held frames [offset, ...) with the track's reference:
    bit-identical to the slice of the whole-track onset (the chain's spans)."""
    y = sg.music(seconds=2.4)
    M = mel_db(power_spectrogram(stft(xp.asarray(y)))[None], mel_filterbank(sr=SR, n_fft=2048, xp=xp))
    t = M.shape[-1]
    whole = to_numpy(onset_strength_from_mel_db(M, **kw))
    np.testing.assert_array_equal(whole, to_numpy(_onset(xp, y[None], **kw)))
    ref = db_reference(M)
    pad = onset_pad_width(n_fft=2048, hop_length=512, **{k: v for k, v in kw.items() if k == "lag"})
    for first, stop in [(0, 10), (1, 40), (50, 70), (t - 9, t)]:
        lo = max(0, first - pad)
        part = onset_strength_from_mel_db(M[..., lo:stop], ref_db=ref, frame_offset=lo, first=first, stop=stop,
                                          lengths=xp.asarray([t]), **kw)
        np.testing.assert_array_equal(to_numpy(part), whole[:, first:stop])
