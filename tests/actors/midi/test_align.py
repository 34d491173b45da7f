"""actors.midi.align: the compiled subsequence DTW against librosa's (the reference), the
alignment's time map; actors.midi.analysis: the harmonic and release model of heard chroma."""
from __future__ import annotations

import numpy as np
import pytest

from actors.midi.align import _STEP_WEIGHTS, _STEPS, align, subsequence_dtw, unit_columns


@pytest.mark.parametrize("shape", [(2, 3), (7, 19), (60, 140), (150, 151)])
def test_subsequence_dtw_equals_librosa(shape):
    import librosa

    rng = np.random.default_rng(shape[0])
    # few distinct chroma vectors: many equal costs, so the same step must win as in librosa
    pool = unit_columns(rng.random((12, 5)))
    q, r = pool[:, rng.integers(5, size=shape[0])], pool[:, rng.integers(5, size=shape[1])]
    cost = np.clip(1.0 - q.T.astype(np.float64) @ r.astype(np.float64), 0.0, 2.0)
    want_d, want_wp = librosa.sequence.dtw(C=cost, subseq=True, step_sizes_sigma=_STEPS, weights_mul=_STEP_WEIGHTS,
                                           backtrack=True)
    d, wp = subsequence_dtw(q, r)
    np.testing.assert_allclose(d, want_d, rtol=1e-12)
    np.testing.assert_array_equal(wp, np.asarray(want_wp))


def test_time_map_follows_a_tempo_change():
    """A sequence played 1.25x slower: audio time = 1.25 x MIDI time along the path."""
    rng = np.random.default_rng(3)
    midi = unit_columns(np.repeat(rng.random((12, 40)), 4, axis=1))  # 160 frames at 5 Hz
    idx = np.minimum((np.arange(200) / 1.25).astype(int), midi.shape[1] - 1)
    audio = midi[:, idx]
    al = align(midi, audio, rate_hz=5.0)
    assert al is not None and al.score > 0.9
    m, a = al.time_map()
    # one time per MIDI frame on the path ((2, 1) steps skip one)
    assert 0.9 * midi.shape[1] <= len(m) <= midi.shape[1] and (np.diff(m) > 0).all() and (np.diff(a) >= 0).all()
    assert np.polyfit(m, a, 1)[0] == pytest.approx(1.25, rel=0.02)
    assert al.tempo_ratio == pytest.approx(0.8, rel=0.02)


def test_harmonic_template_folds_partials_to_pitch_classes():
    from actors.midi.analysis import harmonic_template

    r = 0.6
    t = harmonic_template(6, r)
    # partials 1, 2, 4 -> unison; 3, 6 -> fifth (+7); 5 -> major third (+4)
    want = np.zeros(12)
    want[0], want[7], want[4] = 1 + r ** 2 + r ** 6, r ** 4 + r ** 10, r ** 8
    np.testing.assert_allclose(t, want, rtol=1e-12)
    np.testing.assert_array_equal(harmonic_template(1, r), np.eye(12)[0])
    with pytest.raises(ValueError):
        harmonic_template(0, r)


def test_heard_chroma_partials_and_release_tail():
    from actors.midi.analysis import analyze_midi, harmonic_template, midi_heard_chroma
    from pipeline.synth.midi import GenNote, GenPiece

    fr = 20.0
    # C4 for 1 s (60 bpm), then 2 s of silence, and a drum hit (ignored)
    piece = GenPiece("c", 0, "major", [GenNote(60, 0, 1, 127, 0), GenNote(38, 0, 3, 127, 1)],
                     [("piano", 0, False), ("drums", 0, True)], [(0.0, 60.0)], [(0.0, 4, 4)])
    a = analyze_midi(piece.to_midi(), frame_rate_hz=fr)
    n = a.n_frames
    plain = midi_heard_chroma(a.notes, frame_rate_hz=fr, n_frames=n, decay_s=2.0, floor=0.1)
    heard = midi_heard_chroma(a.notes, frame_rate_hz=fr, n_frames=n, decay_s=2.0, floor=0.1, n_partials=6,
                              rolloff=0.6, release_s=0.4)
    t = harmonic_template(6, 0.6)
    np.testing.assert_allclose(heard[:, 5], t / t.max(), rtol=1e-5)  # max-normalised frame
    # after the note-off (frame 20) only the release sounds: still the note's shape, decaying ...
    assert (plain[:, 20:] == 0).all()
    np.testing.assert_allclose(heard[:, 22], t / t.max(), rtol=1e-5)
    # ... and gone once 1e-3 of the energy is reached: 0.2 s * ln(1000) = 1.38 s -> 28 frames
    assert heard[0, 20 + 27] > 0 and (heard[:, 20 + 28:] == 0).all()
