"""End to end: `chromaray fingerprint` on a folder of MIDI files, their renderings and broken
files, then `chromaray match-midi --json` (both as subprocesses, like a user runs them)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.synth.midi import random_piece, render
from tests.paths import REPO as ROOT


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", HF_HUB_OFFLINE="1",
               PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
@pytest.mark.ray
def test_fingerprint_then_match_midi(tmp_path):
    import soundfile as sf

    from pipeline.store import ErrorRow, Track, open_db, parts_of

    lib = tmp_path / "lib"
    (lib / "midi").mkdir(parents=True)
    (lib / "audio").mkdir()
    rng = np.random.default_rng(5)
    for i in range(4):
        data = random_piece(500 + i, n_bars=6, tempo_change=i % 2 == 0).to_midi(midi_type=i % 2)
        (lib / "midi" / f"p{i}.mid").write_bytes(data)
        if i < 3:  # p3 has no recording
            y = render(data, tempo_factor=float(rng.uniform(0.9, 1.1)), warp=0.03, noise_snr_db=10.0, seed=i)
            sf.write(lib / "audio" / f"p{i}_rec.ogg", y, 22050, format="OGG", subtype="VORBIS")
    (lib / "midi" / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk\x00\x00\x01\x00\x90")
    (lib / "midi" / "notmidi.midi").write_bytes(b"RIFF....WAVEfmt definitely not midi")
    db, out = tmp_path / "db.sqlite", tmp_path / "out"

    fp = _run("jobs.fingerprint", str(lib), "--db", str(db), "--out", str(out), "--num-cpus", "2", "--no-progress")
    assert fp.returncode == 0, fp.stderr[-3000:]

    engine = open_db(db)
    with Session(engine) as s:
        kinds = sorted(s.scalars(select(Track.kind)))
        errors = {Path(e.path).name: (e.stage, e.reason) for e in s.scalars(select(ErrorRow))}
    assert kinds == ["audio"] * 3 + ["midi"] * 4  # MIDI rows beside audio rows, one run
    assert set(errors) == {"broken.mid", "notmidi.midi"} and {st for st, _ in errors.values()} == {"midi"}
    frames_kinds = set()
    for rel in parts_of(engine, "frames"):
        frames_kinds |= set(pq.read_table(out / rel, columns=["kind"]).column("kind").to_pylist())
    assert frames_kinds == {"audio", "midi"}
    tok_parts = parts_of(engine, "tokens")
    assert tok_parts and sum(pq.read_metadata(out / p).num_rows for p in tok_parts) == 4

    mm = _run("jobs.match_midi", "--db", str(db), "--out", str(out), "--json")
    assert mm.returncode == 0, mm.stderr[-3000:]
    lines = {Path(o["midi"]).stem: o for o in map(json.loads, mm.stdout.splitlines())}
    assert sorted(lines) == ["p0", "p1", "p2", "p3"]
    for i in range(3):
        assert Path(lines[f"p{i}"]["matches"][0]["path"]).name == f"p{i}_rec.ogg"
    assert lines["p3"]["matches"] == []
    # the vocabulary ships with the tokens (written by the sink with actors.midi.analysis.vocab_json)
    vocab = json.loads((out / "tokens" / "vocab.json").read_text())
    assert vocab["vocab_size"] > 100
    # naming a file the fingerprint run rejected says why, exit 2
    bad = _run("jobs.match_midi", "--db", str(db), "--out", str(out), str(lib / "midi" / "broken.mid"))
    assert bad.returncode == 2 and "could not be used by `chromaray fingerprint`: corrupt MIDI file" in bad.stderr
