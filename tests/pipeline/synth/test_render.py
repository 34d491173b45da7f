"""pipeline.synth.render: FluidSynth renderings (pitch, tempo, noise level) and its missing-tool errors.

References: the pitch of a rendered A4 against 440 Hz (spectral peak, +-1 %), the duration
against the MIDI file's own (the tempo map rewritten), the noise power against the asked SNR
(+-0.2 dB). Skipped when fluidsynth or the GM soundfont is not installed.
"""
from __future__ import annotations

import numpy as np
import pytest

from actors.errors import ChromarayError
from actors.midi.analysis import analyze_midi
from pipeline.synth.midi import GenNote, GenPiece
from pipeline.synth.render import fluidsynth_available, render_fluidsynth, scale_tempo

SR = 22050
needs_fluidsynth = pytest.mark.skipif(fluidsynth_available() is not None, reason=str(fluidsynth_available()))


def _a4_piece(beats: float = 4.0) -> bytes:
    """A4 on piano (program 0) for ``beats`` beats at 60 bpm, then a second A4 (one beat)."""
    notes = [GenNote(69, 0, beats, 100, 0), GenNote(69, beats, 1, 100, 0)]
    return GenPiece("a4", 9, "major", notes, [("piano", 0, False)], [(0.0, 60.0)], [(0.0, 4, 4)]).to_midi()


def test_scale_tempo_rewrites_the_tempo_map():
    data = _a4_piece()
    base = analyze_midi(data, frame_rate_hz=43.0).duration_s
    assert base == pytest.approx(5.0)
    assert analyze_midi(scale_tempo(data, 1.25), frame_rate_hz=43.0).duration_s == pytest.approx(4.0, rel=1e-4)
    with pytest.raises(ValueError):
        scale_tempo(data, 0.0)


def test_missing_soundfont_is_one_clear_error(tmp_path):
    missing = tmp_path / "none.sf2"
    why = fluidsynth_available(missing)
    assert why is not None and str(missing) in why and "fluid-soundfont-gm" in why
    with pytest.raises(ChromarayError, match="not found"):
        render_fluidsynth(_a4_piece(), soundfont=missing)


@needs_fluidsynth
def test_rendering_has_the_pitch_and_the_tempo_of_the_file():
    y = render_fluidsynth(_a4_piece(), sample_rate=SR, tempo_factor=1.25)
    assert y.dtype == np.float32 and y.ndim == 1
    # 5 beats at 75 bpm = 4 s of notes, plus the release tail FluidSynth renders (< 3 s)
    assert 4.0 <= len(y) / SR <= 7.0
    seg = y[int(0.2 * SR): int(2.2 * SR)].astype(np.float64)
    spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
    f = np.fft.rfftfreq(len(seg), 1 / SR)
    peak = f[np.argmax(spec * (f > 100))]
    assert peak == pytest.approx(440.0, rel=0.01)  # tempo changed, pitch kept
    # the second A4 starts at 4 beats / 75 bpm = 3.2 s: energy rises again there
    env = np.convolve(y.astype(np.float64) ** 2, np.ones(256) / 256, mode="same")
    assert env[int(3.3 * SR)] > 2 * env[int(3.15 * SR)]


@needs_fluidsynth
def test_noise_is_added_at_the_asked_snr():
    clean = render_fluidsynth(_a4_piece(), sample_rate=SR)
    noisy = render_fluidsynth(_a4_piece(), sample_rate=SR, noise_snr_db=10.0, seed=3)
    assert len(noisy) == len(clean)
    scale = 1.0
    if np.abs(noisy).max() >= 0.99 - 1e-6:  # rescaled to avoid clipping: undo it for the check
        scale = float(np.dot(noisy, clean) / np.dot(clean, clean))
    noise = noisy / scale - clean
    snr = 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2))
    assert snr == pytest.approx(10.0, abs=0.2)
