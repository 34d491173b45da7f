"""End to end: `chromaray fingerprint` on a folder (local Ray), then identify and duplicates."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.synth import SR, add_noise, reencode, varied_song


def test_fingerprint_then_identify_and_duplicates(tmp_path, ray_local, capsys):
    from jobs.cli import main
    from pipeline.ingest.run import run_fingerprint
    from pipeline.search import index
    from pipeline.store import TrackPath, open_db

    music = tmp_path / "music"
    music.mkdir()
    songs = {s: varied_song(s, 15.0) for s in (21, 22, 23)}
    sf.write(music / "a.wav", songs[21], SR)
    sf.write(music / "b.flac", songs[22], SR, format="FLAC")
    sf.write(music / "c.ogg", songs[23], SR, format="OGG", subtype="VORBIS")
    # Same recording as a.wav: low-bitrate MP3, first second cut, quieter.
    sf.write(music / "a-copy.mp3", (songs[21][SR:] * 0.5).astype(np.float32), SR, format="MP3",
             subtype="MPEG_LAYER_III", compression_level=0.9, bitrate_mode="CONSTANT")
    db, out = tmp_path / "lib.sqlite", tmp_path / "out"
    summary = run_fingerprint([str(music)], db=str(db), out=str(out), show_progress=False)
    assert (summary.discovered, summary.processed, summary.skipped, summary.errors) == (4, 4, 0, 0)
    assert summary.audio_seconds == pytest.approx(3 * 15.0 + 14.0, abs=0.1)  # the MP3 decodes to about 14 s

    clip = tmp_path / "query.wav"
    y = reencode(add_noise(songs[22][int(6.2 * SR) + 200: int(13.2 * SR)], 10.0, np.random.default_rng(0)), "ogg")
    sf.write(clip, y, SR)
    stranger = tmp_path / "stranger.wav"
    sf.write(stranger, varied_song(999, 8.0), SR)
    # identify brings the index up to date with the fingerprints table on first use.
    assert main(["identify", str(clip), str(stranger), "--db", str(db), "--json"]) == 0
    res = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["clip"] for r in res] == [str(clip), str(stranger)]
    engine = open_db(db, readonly=True)
    with Session(engine) as s:
        hash_of = dict(s.execute(select(TrackPath.path, TrackPath.content_hash)).tuples().all())
    hit = res[0]["match"]
    assert hit is not None and hit["path"] == str(music / "b.flac")
    assert hit["content_hash"] == hash_of[str(music / "b.flac")] and hit["paths"] == [str(music / "b.flac")]
    assert abs(hit["offset_s"] - (6.2 + 200 / SR)) < 0.1 and hit["speed"] == 1.0 and hit["confidence"] > 0.5
    assert res[1]["match"] is None
    assert not index.is_stale(engine) and index.stats(engine)["tracks"] == 4
    engine.dispose()

    assert main(["duplicates", "--db", str(db), "--json"]) == 0
    groups = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(groups) == 1
    members = {m["paths"][0].rsplit("/", 1)[-1]: m for m in groups[0]["members"]}
    assert sorted(members) == ["a-copy.mp3", "a.wav"]
    assert {m["content_hash"] for m in members.values()} == {hash_of[str(music / n)] for n in members}
    # The copy lacks a.wav's first second (its MP3 encoder delay gives back ~0.05 s).
    assert abs(members["a-copy.mp3"]["offset_s"] - members["a.wav"]["offset_s"] + 1.0) < 0.15


def test_library_with_own_dsp_settings_identifies_clip(tmp_path, ray_local, shared_audio, capsys):
    """A library fingerprinted with ``dsp: {hop_length: 256}`` (README's --config) stores those
    settings; identify analyses the clip with them. Before, identify used the default hop (512)
    and the index guessed the frame rate: the same clip gave ``"match": null``."""
    from actors.decode import decode_file
    from jobs.cli import main
    from pipeline.config import load_config
    from pipeline.ingest.run import run_fingerprint
    from pipeline.search import index
    from pipeline.store import Fingerprint, Track, library_settings, open_db

    music = tmp_path / "music"
    music.mkdir()
    # 45 s of three real tracks at the analysis rate: decoding them again gives the same samples.
    cut = 45 * SR + 101  # not a multiple of the hop: the stored duration must still be exact
    tracks = {}
    for f in shared_audio[:3]:
        y = decode_file(str(f), SR)[:cut]
        sf.write(music / f"{f.stem}.flac", y, SR, format="FLAC")
        tracks[f.stem] = y
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text("dsp: {hop_length: 256}\n")
    cfg = load_config(cfg_file)
    db, out = tmp_path / "lib.sqlite", tmp_path / "out"
    summary = run_fingerprint([str(music)], db=str(db), out=str(out), cfg=cfg, show_progress=False)
    assert (summary.processed, summary.errors) == (3, 0)

    engine = open_db(db, readonly=True)
    settings = library_settings(engine)
    with Session(engine) as s:
        versions = set(s.scalars(select(Track.features_version)))
        durations = sorted(s.scalars(select(Track.duration_s)))
        rates = set(s.scalars(select(Fingerprint.frame_rate_hz)))
    assert versions <= set(settings) and len(versions) == 1
    assert settings[versions.pop()] == cfg.dsp
    assert rates == {SR / 256 / 4}
    assert all(abs(d - cut / SR) < 1e-9 for d in durations) and len(durations) == 3
    idx = index.FingerprintIndex.open(engine)
    assert {t.frame_rate_hz for t in idx.tracks.values()} == {SR / 256}
    engine.dispose()

    name = sorted(tracks)[1]
    a = int(30.0 * SR) + 37
    clip = tmp_path / "clip.wav"
    sf.write(clip, tracks[name][a: a + 10 * SR], SR)
    assert main(["identify", str(clip), "--db", str(db), "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip())
    assert res["match"] is not None, res
    assert res["match"]["path"].endswith(f"{name}.flac")
    assert abs(res["match"]["offset_s"] - a / SR) < 0.1
