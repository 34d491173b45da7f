"""End to end: `chromaray fingerprint` on a folder (local Ray), then identify and duplicates."""
from __future__ import annotations

import json

import numpy as np
import soundfile as sf

from benchmarks.bench_identify import SR, add_noise, reencode, synth_song


def test_fingerprint_then_identify_and_duplicates(tmp_path, ray_local, capsys):
    from jobs.cli import main
    from pipeline.ingest.run import run_fingerprint
    from pipeline.search import index
    from pipeline.store import open_db

    music = tmp_path / "music"
    music.mkdir()
    songs = {s: synth_song(s, 15.0) for s in (21, 22, 23)}
    sf.write(music / "a.wav", songs[21], SR)
    sf.write(music / "b.flac", songs[22], SR, format="FLAC")
    sf.write(music / "c.ogg", songs[23], SR, format="OGG", subtype="VORBIS")
    # Same recording as a.wav: low-bitrate MP3, first second cut, quieter.
    sf.write(music / "a-copy.mp3", (songs[21][SR:] * 0.5).astype(np.float32), SR, format="MP3",
             subtype="MPEG_LAYER_III", compression_level=0.9, bitrate_mode="CONSTANT")
    db, out = tmp_path / "lib.sqlite", tmp_path / "out"
    summary = run_fingerprint([str(music)], db=str(db), out=str(out), show_progress=False)
    assert summary is not None

    clip = tmp_path / "query.wav"
    y = reencode(add_noise(songs[22][int(6.2 * SR) + 200: int(13.2 * SR)], 10.0, np.random.default_rng(0)), "ogg")
    sf.write(clip, y, SR)
    stranger = tmp_path / "stranger.wav"
    sf.write(stranger, synth_song(999, 8.0), SR)
    # identify brings the index up to date with the fingerprints table on first use.
    assert main(["identify", str(clip), str(stranger), "--db", str(db), "--json"]) == 0
    res = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert res[0]["match"] is not None and res[0]["match"]["path"].endswith("b.flac")
    assert abs(res[0]["match"]["offset_s"] - 6.2) < 0.1
    assert res[1]["match"] is None
    engine = open_db(db, readonly=True)
    assert not index.is_stale(engine) and index.stats(engine)["tracks"] == 4
    engine.dispose()

    assert main(["duplicates", "--db", str(db), "--json"]) == 0
    groups = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(groups) == 1
    names = sorted(p.rsplit("/", 1)[-1] for m in groups[0]["members"] for p in m["paths"])
    assert names == ["a-copy.mp3", "a.wav"]
