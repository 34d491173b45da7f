"""actors.midi.analysis: parsing, notes, chroma, tempo map, key, stats, tokens (generated + real MIDI).

References: note times are compared with pretty_midi's independent parser (atol 1 ms),
chroma and piano roll with pretty_midi's piano roll sampled at the same frame times.
"""
from __future__ import annotations

import io
import json

import numpy as np
import pytest

from actors.config import DSPConfig
from actors.errors import InputFileError
from actors.midi.analysis import (
    TOKENIZER_NAME,
    analyze_midi,
    default_tokenizer,
    estimate_key,
    make_tokenizer,
    midi_features_version,
    n_frames_for,
    vocab_json,
)
from pipeline.synth.midi import chord_progression_piece, random_piece, scale_piece

FR = DSPConfig().frame_rate_hz  # 43.07 Hz, the audio chroma frame rate


def _pm_notes(data: bytes) -> dict[str, np.ndarray]:
    """Reference note table from pretty_midi (a different parser), sorted like ours."""
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(io.BytesIO(data))
    rows = [(n.start, n.pitch, n.end, n.velocity, inst.program, inst.is_drum)
            for inst in pm.instruments for n in inst.notes]
    rows.sort(key=lambda r: (round(r[0], 4), r[1], r[5]))
    a = np.array(rows, dtype=np.float64).reshape(-1, 6)
    return {"start": a[:, 0], "pitch": a[:, 1], "end": a[:, 2], "velocity": a[:, 3], "program": a[:, 4],
            "is_drum": a[:, 5].astype(bool)}


def _sorted_like_ref(notes: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    order = np.lexsort((notes["is_drum"], notes["pitch"], np.round(notes["start"].astype(np.float64), 4)))
    return {k: v[order] for k, v in notes.items()}


def test_scale_notes_chroma_key_tempo():
    data = scale_piece("c-major", tonic=60, bpm=120).to_midi(midi_type=0)
    a = analyze_midi(data, frame_rate_hz=FR)
    n = a.notes
    assert n["pitch"].dtype == np.int16 and n["start"].dtype == np.float32 and n["is_drum"].dtype == bool
    assert n["pitch"].tolist() == [60, 62, 64, 65, 67, 69, 71, 72, 71, 69, 67, 65, 64, 62, 60]
    # eighth notes at 120 BPM = 0.25 s
    np.testing.assert_allclose(n["start"], np.arange(15) * 0.25, atol=1e-6)
    np.testing.assert_allclose(n["end"] - n["start"], 0.25, atol=1e-6)
    assert a.duration_s == pytest.approx(3.75)
    assert a.n_frames == n_frames_for(3.75, FR) == 1 + int(3.75 * FR)
    assert a.chroma.shape == (12, a.n_frames) and a.chroma.dtype == np.float32
    assert a.onset.shape == (a.n_frames,)
    # one note at a time: the chroma is one-hot on the sounding pitch class
    for i, p in enumerate(n["pitch"].tolist()):
        t = int(np.ceil((i * 0.25 + 0.1) * FR))  # a frame well inside note i
        expected = np.zeros(12, np.float32)
        expected[p % 12] = 1.0
        np.testing.assert_array_equal(a.chroma[:, t], expected)
    # every frame, the last one included: one-hot on the note whose span holds the frame centre
    centres = np.arange(a.n_frames) / FR
    expected = np.zeros((12, a.n_frames), np.float32)
    for start, end, p in zip(n["start"].tolist(), n["end"].tolist(), n["pitch"].tolist()):
        expected[p % 12, (centres >= start - 1e-6) & (centres < end - 1e-6)] = 1.0
    assert (expected.sum(axis=0) == 1).all()  # the scale is legato: no frame is silent
    np.testing.assert_array_equal(a.chroma, expected)
    assert a.key == "C major"
    assert a.tempo_map == [(0.0, 120.0)]
    assert a.time_signatures == [(0.0, 4, 4)]
    assert a.stats["n_notes"] == 15 and a.stats["pitch_min"] == 60 and a.stats["pitch_max"] == 72
    assert a.stats["polyphony_max"] == 1 and a.stats["midi_type"] == 0
    assert a.stats["notes_per_s"] == pytest.approx(15 / 3.75, rel=1e-3)
    # onsets: each note adds velocity/127 at its start frame
    assert a.onset.sum() == pytest.approx(15 * 80 / 127, rel=1e-5)


@pytest.mark.parametrize(("tonic", "mode", "key"),
                         [(57, "minor", "A minor"), (62, "major", "D major"), (65, "minor", "F minor")])
def test_chord_progression_chroma_and_key(tonic, mode, key):
    degrees = (0, 3, 4, 0)
    piece = chord_progression_piece("prog", tonic=tonic, mode=mode, degrees=degrees, bpm=60, beats_per_chord=4)
    a = analyze_midi(piece.to_midi(midi_type=1), frame_rate_hz=FR)
    assert a.key == key
    assert a.stats["polyphony_max"] == 3 and a.stats["polyphony_mean"] == pytest.approx(3.0, abs=0.05)
    from pipeline.synth.midi import _triad

    for i, d in enumerate(degrees):  # 4 s per chord at 60 BPM
        t = int((i * 4 + 2) * FR)
        pcs = sorted({p % 12 for p in _triad(tonic, mode, d)})
        assert sorted(np.flatnonzero(a.chroma[:, t]).tolist()) == pcs
        np.testing.assert_allclose(a.chroma[pcs, t], 1.0)  # equal velocities -> all at the max


def test_multitrack_drums_tempo_changes_match_pretty_midi():
    piece = random_piece(3, n_bars=8, tempo_change=True, drums=True)
    data1 = piece.to_midi(midi_type=1)
    a = analyze_midi(data1, frame_rate_hz=FR)
    ref = _pm_notes(data1)
    ours = _sorted_like_ref(a.notes)
    assert len(ours["pitch"]) == len(ref["pitch"])
    np.testing.assert_array_equal(ours["pitch"], ref["pitch"])
    np.testing.assert_allclose(ours["start"], ref["start"], atol=1e-3)
    np.testing.assert_allclose(ours["end"], ref["end"], atol=1e-3)
    np.testing.assert_array_equal(ours["velocity"], ref["velocity"])
    np.testing.assert_array_equal(ours["is_drum"], ref["is_drum"])
    np.testing.assert_array_equal(ours["program"][~ours["is_drum"]], ref["program"][~ref["is_drum"]])
    # tempo map: two tempi, the change at the middle bar, timed in seconds by the first tempo
    assert len(a.tempo_map) == 2
    (t0, b0), (t1, b1) = a.tempo_map
    assert (t0, b0) == (0.0, pytest.approx(piece.tempos[0][1], abs=0.01))
    assert b1 == pytest.approx(piece.tempos[1][1], abs=0.01)
    assert t1 == pytest.approx(piece.tempos[1][0] * 60 / piece.tempos[0][1], abs=1e-3)
    assert a.stats["n_tempo_changes"] == 1
    assert a.stats["tempo_map"] == [list(x) for x in a.tempo_map]
    json.dumps(a.stats)  # goes to SQLite JSON as is
    assert a.stats["n_tracks"] == 4 and a.stats["has_drums"] and a.stats["n_drum_notes"] > 0
    assert a.stats["n_instruments"] == len({(p, d) for _, p, d in piece.tracks})
    # drums are excluded from the chroma: same chroma as the file without its drum track
    no_drums = random_piece(3, n_bars=8, tempo_change=True, drums=False)
    b = analyze_midi(no_drums.to_midi(midi_type=1), frame_rate_hz=FR)
    np.testing.assert_array_equal(a.chroma[:, : b.n_frames], b.chroma)
    # ... but their hits are onsets
    assert a.onset.sum() > b.onset.sum()
    # type 0 rendering of the same piece: identical analysis
    c = analyze_midi(piece.to_midi(midi_type=0), frame_rate_hz=FR)
    for k in a.notes:
        np.testing.assert_array_equal(_sorted_like_ref(c.notes)[k], ours[k])
    assert c.stats["midi_type"] == 0 and a.stats["midi_type"] == 1


def test_piano_roll_and_chroma_against_pretty_midi():
    import pretty_midi

    data = random_piece(5, n_bars=6, drums=True).to_midi()
    a = analyze_midi(data, frame_rate_hz=FR)
    roll = a.piano_roll()
    assert roll.shape == (128, a.n_frames) and roll.dtype == np.float32
    pm = pretty_midi.PrettyMIDI(io.BytesIO(data))
    times = np.arange(a.n_frames) / FR
    ref = pm.get_piano_roll(fs=FR, times=times) > 0  # drums excluded by pretty_midi too
    ours = roll > 0
    # The two samplings differ only at note boundaries (<= 1 frame per note edge).
    agree = (ours == ref).mean()
    assert agree > 0.995, agree
    assert ours.sum() == pytest.approx(ref.sum(), rel=0.05)
    # chroma support = pitch classes of the roll
    pc_roll = np.zeros((12, a.n_frames), bool)
    for p in range(128):
        pc_roll[p % 12] |= ours[p]
    np.testing.assert_array_equal(a.chroma > 0, pc_roll)
    assert a.chroma.max(axis=0)[pc_roll.any(axis=0)].min() == pytest.approx(1.0)  # max-normalised
    assert a.piano_roll(include_drums=True).sum() > roll.sum()


def test_estimate_key_profiles():
    # The Krumhansl-Kessler profiles themselves must map back to their key.
    from actors.midi.analysis import _KK_MAJOR, _KK_MINOR

    assert estimate_key(np.roll(_KK_MAJOR, 7)) == "G major"
    assert estimate_key(np.roll(_KK_MINOR, 4)) == "E minor"
    assert estimate_key(np.zeros(12)) == ""


@pytest.mark.parametrize("data,fragment", [
    (b"", "empty"),
    (b"ID3\x03\x00 this is an mp3", "not a MIDI file"),
    (b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0", "no track chunk"),
    (b"MThd\x00\x00\x00\x06\x00\x02\x00\x01\x01\xe0MTrk\x00\x00\x00\x04\x00\xff\x2f\x00", "type 2"),
    (b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x01\xe0MTrk\x00\x00\x00\x04\x00\xff\x2f\x00", "no notes"),
])
def test_bad_inputs_are_input_file_errors(data, fragment):
    with pytest.raises(InputFileError) as ei:
        analyze_midi(data, frame_rate_hz=FR)
    assert ei.value.stage == "midi"
    assert fragment in ei.value.reason


def test_truncated_file_is_an_error():
    data = random_piece(1, n_bars=4).to_midi()
    with pytest.raises(InputFileError) as ei:
        analyze_midi(data[: len(data) // 2], frame_rate_hz=FR)
    assert ei.value.stage == "midi" and "corrupt" in ei.value.reason


def test_tokens_roundtrip_and_vocab(tmp_path):
    piece = random_piece(7, n_bars=6, drums=True)
    data = piece.to_midi()
    a = analyze_midi(data, frame_rate_hz=FR)
    tok = default_tokenizer()
    assert a.tokenizer_name == TOKENIZER_NAME and len(a.tokens) > 50
    assert min(a.tokens) >= 0 and max(a.tokens) < len(tok)
    # decoding gives back every note within the tokenizer's pitch range
    score = tok.decode(a.tokens)
    in_range = ((a.notes["pitch"] >= 21) & (a.notes["pitch"] < 109)).sum()
    assert score.note_num() == in_range
    # a passed tokenizer is used as is; the default one is built once per process
    assert analyze_midi(data, frame_rate_hz=FR, tokenizer=make_tokenizer()).tokens == a.tokens
    assert default_tokenizer() is tok
    v = json.loads(vocab_json(tok))
    assert v["tokenizer"] == TOKENIZER_NAME and v["vocab_size"] == len(tok) == len(v["vocab"])
    assert sorted(v["vocab"].values()) == list(range(len(tok)))
    # miditok can rebuild the same tokenizer from the stored parameters
    from miditok import REMI

    params = tmp_path / "remi.json"
    params.write_text(json.dumps(v["miditok"]))
    assert REMI(params=params).vocab == tok.vocab
    assert midi_features_version(FR).endswith(TOKENIZER_NAME)


def test_real_midi_all_parse(shared_midi):
    """Every file of the shared real-music folder parses, with tokens, chroma and a key."""
    errors = []
    for f in shared_midi:
        try:
            a = analyze_midi(f.read_bytes(), frame_rate_hz=FR)
        except InputFileError as exc:
            errors.append((f.name, exc.reason))
            continue
        assert a.n_frames == n_frames_for(a.duration_s, FR)
        assert a.stats["n_notes"] > 0 and len(a.tokens) > 0 and a.key
        assert np.isfinite(a.chroma).all() and a.chroma.max() == pytest.approx(1.0)
    assert errors == []


def test_tokens_readable_by_ray_data(tmp_path, ray_local):
    """Token rows written with the contract schema read back through Ray Data."""
    import pyarrow.parquet as pq
    import ray.data

    from pipeline.ingest.sink import midi_tables

    analyses = [analyze_midi(random_piece(s, n_bars=4).to_midi(), frame_rate_hz=FR) for s in range(3)]
    table = midi_tables([(f"h{i}", a) for i, a in enumerate(analyses)], features_version="m-test")["tokens"]
    (tmp_path / "tokens").mkdir()
    pq.write_table(table, tmp_path / "tokens" / "part-0.parquet")
    (tmp_path / "tokens" / "vocab.json").write_text(vocab_json())
    ds = ray.data.read_parquet(str(tmp_path / "tokens" / "part-0.parquet"))
    got = sorted(ds.take_all(), key=lambda r: r["content_hash"])
    assert [r["content_hash"] for r in got] == ["h0", "h1", "h2"]
    for r, a in zip(got, analyses):
        assert list(r["tokens"]) == a.tokens and r["n_tokens"] == len(a.tokens)
        assert r["tokenizer"] == TOKENIZER_NAME


def test_riff_wrapped_rmi_is_unwrapped():
    data = scale_piece("s").to_midi()
    chunk = b"data" + len(data).to_bytes(4, "little") + data
    rmi = b"RIFF" + (4 + len(chunk)).to_bytes(4, "little") + b"RMID" + chunk
    a, b = analyze_midi(rmi, frame_rate_hz=FR), analyze_midi(data, frame_rate_hz=FR)
    np.testing.assert_array_equal(a.chroma, b.chroma)
    assert a.tokens == b.tokens


def test_heard_chroma_decays_held_notes():
    from actors.midi.analysis import midi_heard_chroma
    from pipeline.synth.midi import GenNote, GenPiece

    # C major chord held 8 s (60 BPM: 1 beat = 1 s) under melody notes A4 entering at 4 s
    notes = [GenNote(p, 0, 8, 100, 0) for p in (48, 52, 55)] + [GenNote(69, 4, 1, 100, 0), GenNote(36, 0, 1, 127, 1)]
    piece = GenPiece("held", 0, "major", notes, [("pad", 0, False), ("drums", 0, True)], [(0.0, 60.0)], [(0.0, 4, 4)])
    a = analyze_midi(piece.to_midi(), frame_rate_hz=FR)
    heard = midi_heard_chroma(a.notes, frame_rate_hz=FR, n_frames=a.n_frames, decay_s=2.0, floor=0.1)
    assert heard.shape == a.chroma.shape and heard.dtype == np.float32
    t = int(4.5 * FR)
    # plain chroma: chord and melody equal; heard: the fresh A dominates the 4.5 s old chord
    np.testing.assert_allclose(a.chroma[[0, 4, 7, 9], t], 1.0)
    assert heard[9, t] == pytest.approx(1.0)
    env = lambda k: 0.1 + 0.9 * np.exp(-2 * k / (2.0 * FR))  # noqa: E731  energy k frames after onset
    a_onset = int(np.ceil(4 * FR))  # first frame centre inside the A
    np.testing.assert_allclose(heard[[0, 4, 7], t], env(t) / env(t - a_onset), rtol=1e-4)
    assert heard[0, t] < 0.2
    # before the melody enters the chord is the frame maximum; silence stays zero; drums ignored
    np.testing.assert_allclose(heard[[0, 4, 7], int(2 * FR)], 1.0)
    assert (heard[[1, 2, 3, 5, 6, 8, 10, 11]] == 0).all()
    # the A ends at 5 s: from the first frame centre past it only the held chord sounds, at the frame max
    after = int(np.ceil(5 * FR - 1e-6))
    assert (heard[9, after:] == 0).all()
    np.testing.assert_allclose(heard[[0, 4, 7], after:], 1.0)


def test_real_midi_chroma_is_never_negative(shared_midi):
    """Regression: the note-sum's rounding residue made silent frames slightly negative."""
    from actors.midi.analysis import analyze_midi

    for path in shared_midi[:12]:
        a = analyze_midi(path.read_bytes(), frame_rate_hz=22050 / 512)
        assert a.chroma.min() >= 0.0 and a.chroma.max() <= 1.0, path.name


def _one_tempo_midi(us_per_quarter: int) -> bytes:
    import mido

    mid = mido.MidiFile(ticks_per_beat=480)
    tr = mido.MidiTrack()
    mid.tracks.append(tr)
    tr.append(mido.MetaMessage("set_tempo", tempo=us_per_quarter, time=0))
    for pitch in (60, 64, 67):
        tr.append(mido.Message("note_on", note=pitch, velocity=80, time=0))
        tr.append(mido.Message("note_off", note=pitch, velocity=0, time=480))
    buf = io.BytesIO()
    mid.save(file=buf)
    return buf.getvalue()


@pytest.mark.parametrize("us,fragment", [(0, "0 microseconds per quarter note at tick 0"),
                                         (5, "5 microseconds (12000000 bpm) per quarter note")])
def test_zero_or_absurd_tempo_is_an_error_not_duration_zero(us, fragment, tmp_path):
    """#14 item 11: a tempo of 0 used to give a 0 s track with every note at time 0."""
    from actors.stages import analyze_midi_file

    data = _one_tempo_midi(us)
    with pytest.raises(InputFileError) as ei:
        analyze_midi(data, frame_rate_hz=FR)
    assert ei.value.stage == "midi" and "invalid tempo" in ei.value.reason and fragment in ei.value.reason
    # in the pipeline the file becomes an error row with that reason
    p = tmp_path / "zero-tempo.mid"
    p.write_bytes(data)
    row = analyze_midi_file({"content_hash": "h", "path": str(p), "kind": "midi", "size_bytes": len(data)}, DSPConfig())
    assert isinstance(row, dict) and row["stage"] == "midi" and fragment in row["reason"]
    # a sane tempo gives its true duration: 3 quarter notes at 120 bpm
    assert analyze_midi(_one_tempo_midi(500_000), frame_rate_hz=FR).duration_s == pytest.approx(1.5)
