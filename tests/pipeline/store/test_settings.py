"""What the result sink stores about the analysis: the DSP settings of each features version,
each track's true duration and frame/code rates (real feature chain, real SQLite and Parquet)."""
from __future__ import annotations

import pyarrow.parquet as pq
from sqlalchemy import select
from sqlalchemy.orm import Session

from actors.config import DSPConfig
from pipeline.store import (
    AnalysisSettings,
    Feature,
    Fingerprint,
    Track,
    library_settings,
    open_db,
    parts_of,
    track_settings,
)
from pipeline.synth import SR, store_signals, varied_song

HOP256 = DSPConfig(hop_length=256)


def test_sink_stores_settings_rates_and_exact_duration(tmp_path):
    # Lengths that are not multiples of the hop: before, the sink read a TrackFeatures field that
    # did not exist and fell back to (n_frames - 1) * hop / sr, short by up to one hop.
    lengths = {"/m/a.wav": 9 * SR + 1, "/m/b.wav": 7 * SR + 255}
    items = [(p, varied_song(i, 10.0)[:n]) for i, (p, n) in enumerate(lengths.items())]
    engine = open_db(tmp_path / "lib.sqlite")
    hashes = store_signals(engine, tmp_path / "out", items, dsp=HOP256)
    with Session(engine) as s:
        tracks = {t.content_hash: t for t in s.scalars(select(Track))}
        fps = {f.content_hash: f for f in s.scalars(select(Fingerprint))}
        feats = {f.content_hash: f for f in s.scalars(select(Feature))}
        stored = list(s.scalars(select(AnalysisSettings)))
    for (path, _), h in zip(items, hashes):
        assert abs(tracks[h].duration_s - lengths[path] / SR) < 1e-9
        assert tracks[h].n_frames == 1 + lengths[path] // 256
        assert fps[h].frame_rate_hz == SR / 256 / 4
        assert feats[h].frame_rate_hz == SR / 256
    version = tracks[hashes[0]].features_version
    assert [(a.features_version, a.kind, a.dsp) for a in stored] == [(version, "audio", HOP256.to_dict())]
    assert library_settings(engine) == {version: HOP256}
    # The Parquet rows say the same rates and durations.
    out = tmp_path / "out"
    frames = pq.read_table(out / parts_of(engine, "frames")[0], columns=["content_hash", "frame_rate_hz"])
    assert frames.column("frame_rate_hz").to_pylist() == [SR / 256] * 2
    codes = pq.read_table(out / parts_of(engine, "fingerprints")[0], columns=["frame_rate_hz"])
    assert codes.column("frame_rate_hz").to_pylist() == [SR / 256 / 4] * 2
    rows = pq.read_table(out / parts_of(engine, "tracks")[0], columns=["content_hash", "duration_s"]).to_pylist()
    assert {r["content_hash"]: r["duration_s"] for r in rows} == {h: tracks[h].duration_s for h in hashes}
    engine.dispose()


def test_settings_of_two_runs_are_kept_apart(tmp_path):
    engine = open_db(tmp_path / "lib.sqlite")
    a = store_signals(engine, tmp_path / "out", [("/m/a.wav", varied_song(1, 6.0))], dsp=DSPConfig(), run_id="r1")
    b = store_signals(engine, tmp_path / "out", [("/m/b.wav", varied_song(2, 6.0))], dsp=HOP256, run_id="r2")
    settings = library_settings(engine)
    assert track_settings(engine) == {a[0]: DSPConfig(), b[0]: HOP256}
    assert sorted(settings.values(), key=lambda d: d.hop_length) == [HOP256, DSPConfig()]
    engine.dispose()
    # A reader sees the same.
    ro = open_db(tmp_path / "lib.sqlite", readonly=True)
    assert library_settings(ro) == settings
    ro.dispose()


def test_unreadable_stored_settings_are_one_clear_error(tmp_path):
    import pytest

    from actors.errors import ChromarayError

    engine = open_db(tmp_path / "lib.sqlite")
    store_signals(engine, tmp_path / "out", [("/m/a.wav", varied_song(1, 4.0))], dsp=DSPConfig())
    with Session(engine) as s, s.begin():
        row = s.scalars(select(AnalysisSettings)).one()
        row.dsp = dict(row.dsp, hop_lenght=256)
    with pytest.raises(ChromarayError, match=r"unknown option.*hop_lenght"):
        library_settings(engine)
    engine.dispose()


def test_midi_rows_keep_their_frame_rate(tmp_path):
    """MIDI chroma is computed at the run's frame rate (match-midi reads it from the frames row)."""
    import json
    import pickle

    from actors.midi.analysis import analyze_midi
    from actors.stages import empty_row, to_table
    from pipeline.config import ChromarayConfig
    from pipeline.ingest.plan import versions_for
    from pipeline.ingest.sink import ResultSink
    from pipeline.synth import write_demo_midi

    write_demo_midi(tmp_path / "p.mid", 3)
    analysis = analyze_midi((tmp_path / "p.mid").read_bytes(), frame_rate_hz=HOP256.frame_rate_hz)
    engine = open_db(tmp_path / "lib.sqlite")
    versions = versions_for(ChromarayConfig(dsp=HOP256))
    sink = ResultSink(engine, tmp_path / "out", "r", dsp=HOP256, versions=versions, paths_by_hash={})
    sink.add(to_table([empty_row(content_hash="m" * 64, path=str(tmp_path / "p.mid"), kind="midi",
                                 meta=json.dumps({"format": "MIDI"}), payload=pickle.dumps(analysis))]))
    sink.flush()
    with Session(engine) as s:
        assert s.get_one(Feature, "m" * 64).frame_rate_hz == SR / 256
        assert s.get_one(AnalysisSettings, versions["midi"]).dsp == HOP256.to_dict()
    frames = pq.read_table(tmp_path / "out" / parts_of(engine, "frames")[0], columns=["kind", "frame_rate_hz"])
    assert frames.to_pylist() == [{"kind": "midi", "frame_rate_hz": SR / 256}]
    engine.dispose()
