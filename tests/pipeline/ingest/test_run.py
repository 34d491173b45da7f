"""The fingerprint job end to end on a real local Ray: row counts, idempotence,
incremental adds, moves and copies, error rows, Parquet and SQLite agreeing."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pipeline.config import load_config
from pipeline.ingest.run import run_fingerprint
from pipeline.store import ErrorRow, Feature, Fingerprint, ParquetPart, Track, TrackPath, open_db, parts_of
from pipeline.synth import broken_files, good_library, write_song
from tests.paths import REPO as ROOT


def counts(db: Path) -> dict[str, int]:
    eng = open_db(db)
    with Session(eng) as s:
        return {name: s.scalar(select(func.count()).select_from(model)) for name, model in
                [("tracks", Track), ("paths", TrackPath), ("features", Feature), ("fingerprints", Fingerprint),
                 ("errors", ErrorRow), ("parts", ParquetPart)]}


def parquet_hashes(out: Path, db: Path, dataset: str) -> list[str]:
    eng = open_db(db)
    hashes: list[str] = []
    for rel in parts_of(eng, dataset):
        hashes += pq.read_table(out / rel, columns=["content_hash"]).column("content_hash").to_pylist()
    return hashes


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    root = tmp_path_factory.mktemp("lib")
    good = good_library(root / "music", n=6, seconds=4.0)
    expect = broken_files(root / "music" / "broken")
    midi_src = sorted((ROOT.parent / "shared" / "data" / "midi").glob("*.mid"))[:2]
    for m in midi_src:
        shutil.copy(m, root / "music" / m.name)
    return root, good, expect, len(midi_src)


@pytest.fixture(scope="module")
def first_run(library, ray_local, tmp_path_factory):
    root, good, expect, n_midi = library
    work = tmp_path_factory.mktemp("work")
    db, out = work / "db.sqlite", work / "out"
    summary = run_fingerprint([str(root / "music")], db=str(db), out=str(out), show_progress=False)
    return root, good, expect, n_midi, db, out, summary


def test_first_run_processes_good_files_and_records_broken_ones(first_run):
    _root, good, expect, n_midi, db, _out, summary = first_run
    c = counts(db)
    assert summary.processed == len(good) + n_midi
    assert c["tracks"] == c["features"] == len(good) + n_midi
    assert c["fingerprints"] == len(good)
    assert summary.errors == len(expect) == c["errors"]
    eng = open_db(db)
    with Session(eng) as s:
        rows = {os.path.basename(e.path): e for e in s.scalars(select(ErrorRow))}
    assert set(rows) == set(expect)
    for name, words in expect.items():
        assert rows[name].reason and words.lower() in rows[name].reason.lower(), (name, rows[name].reason)
        assert rows[name].stage in {"decode", "midi", "read"}


def test_parquet_and_sqlite_agree(first_run):
    _root, _good, _expect, _n_midi, db, out, _summary = first_run
    eng = open_db(db)
    with Session(eng) as s:
        tracks = {t.content_hash: t for t in s.scalars(select(Track))}
    frames = [pq.read_table(out / rel) for rel in parts_of(eng, "frames")]
    rows = [r for t in frames for r in t.to_pylist()]
    assert sorted(r["content_hash"] for r in rows) == sorted(tracks)
    for r in rows:
        t = tracks[r["content_hash"]]
        assert r["kind"] == t.kind and r["n_frames"] == t.n_frames == len(r["chroma"]) == len(r["onset"])
        chroma = np.asarray(r["chroma"], dtype=np.float32)
        assert chroma.shape[1] == 12 and np.all(chroma >= 0) and np.all(chroma <= 1.0 + 1e-5)
        if t.kind == "audio":
            # 4 s of audio at 22050 Hz, hop 512, centred frames
            assert r["n_frames"] == 1 + round(t.duration_s * 22050) // 512
    assert sorted(parquet_hashes(out, db, "fingerprints")) == sorted(h for h, t in tracks.items() if t.kind == "audio")
    assert sorted(parquet_hashes(out, db, "tokens")) == sorted(h for h, t in tracks.items() if t.kind == "midi")
    # nothing on disk that the database does not list
    on_disk = {f"{p.parent.name}/{p.name}" for p in out.glob("*/*.parquet")}
    assert on_disk == {rel for d in ("frames", "tracks", "fingerprints", "midi_notes", "tokens")
                       for rel in parts_of(eng, d)}


def test_second_run_is_a_noop(first_run):
    root, good, expect, n_midi, db, out, _summary = first_run
    before = counts(db)
    again = run_fingerprint([str(root / "music")], db=str(db), out=str(out), show_progress=False)
    assert again.processed == 0 and again.errors == 0
    assert again.skipped == len(good) + n_midi
    assert again.known_errors >= len(expect) - 2  # unreadable/empty files have no content to remember
    assert counts(db) == before


def test_adding_moving_and_copying_files(first_run):
    root, good, _expect, _n_midi, db, out, _summary = first_run
    music = root / "music"
    for i in range(3):
        write_song(music / "new" / f"added{i}.wav", 500 + i, 3.0) if (music / "new").mkdir(exist_ok=True) is None \
            else None
    added = run_fingerprint([str(music)], db=str(db), out=str(out), show_progress=False)
    assert added.processed == 3
    before = counts(db)

    moved = music / "renamed.flac"
    good[1].rename(moved)
    shutil.copy(good[2], music / "copy-of-2.ogg")
    res = run_fingerprint([str(music)], db=str(db), out=str(out), show_progress=False)
    assert res.processed == 0 and res.path_updates == 2
    after = counts(db)
    assert after["tracks"] == before["tracks"] and after["paths"] == before["paths"] + 1
    eng = open_db(db)
    with Session(eng) as s:
        paths = dict(s.execute(select(TrackPath.path, TrackPath.content_hash)).all())
    assert str(good[1]) not in paths and paths[str(moved)]
    assert paths[str(music / "copy-of-2.ogg")] == paths[str(good[2])]
    # no content appears twice anywhere
    frames = parquet_hashes(out, db, "frames")
    assert len(frames) == len(set(frames)) == after["tracks"]


def test_long_file_in_spans_equals_whole(tmp_path, ray_local):
    """A file longer than chunk_seconds streams through in spans; the joined
    features equal the single-pass ones."""
    lib = tmp_path / "lib"
    lib.mkdir()
    write_song(lib / "long.flac", 7, 9.0, fmt="FLAC", sr=44100)
    results = {}
    for label, chunk in (("whole", 300.0), ("spans", 2.0)):
        cfg = load_config(overrides={"pipeline": {"chunk_seconds": chunk}})
        db, out = tmp_path / f"{label}.db", tmp_path / label
        run_fingerprint([str(lib)], db=str(db), out=str(out), cfg=cfg, show_progress=False)
        rel = parts_of(open_db(db), "frames")
        results[label] = pq.read_table(out / rel[0]).to_pylist()[0]
    w, s = results["whole"], results["spans"]
    assert w["n_frames"] == s["n_frames"]
    np.testing.assert_allclose(np.asarray(s["chroma"]), np.asarray(w["chroma"]), atol=1e-5)
    # onset too: the decode stage's reference pass gives every span the track's top_db reference
    np.testing.assert_allclose(np.asarray(s["onset"]), np.asarray(w["onset"]), rtol=1e-4, atol=1e-4)
    assert s["content_hash"] == w["content_hash"]


def test_cli_user_errors_are_one_line(tmp_path):
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    cmd = [sys.executable, "-m", "jobs.fingerprint", str(tmp_path / "missing"), "--db", str(tmp_path / "x.db"),
           "--out", str(tmp_path / "o")]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert p.returncode == 2
    assert "does not exist" in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "file").write_text("x")
    cmd = [sys.executable, "-m", "jobs.fingerprint", str(tmp_path), "--db", str(tmp_path / "y.db"),
           "--out", str(ro / "file" / "sub")]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "output directory" in p.stderr
    p = subprocess.run([sys.executable, "-m", "jobs.fingerprint", "--memory-fraction", "7", str(tmp_path)],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "memory_fraction must be in (0, 1], got 7.0" in p.stderr


@pytest.mark.ray
def test_cli_output_is_quiet_and_ends_with_a_summary(tmp_path):
    """Normal output: a progress bar and a summary, none of Ray's own log lines (they go to
    OUT/ray-driver.log); exit 0 when something was processed even with a broken file."""
    lib = tmp_path / "lib"
    good_library(lib, n=2, seconds=2.0)
    (lib / "broken.wav").write_bytes(b"RIFF....WAVEjunk")
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    cmd = [sys.executable, "-m", "jobs.fingerprint", str(lib), "--db", str(tmp_path / "db.sqlite"),
           "--out", str(tmp_path / "out"), "--num-cpus", "2"]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "done: 2 processed" in p.stdout and "1 errors" in p.stdout
    assert "broken.wav" in p.stderr  # the error is reported to the user
    noise = [line for line in p.stderr.splitlines()
             if "core_worker" in line or " INFO " in line or "WARNING" in line or "Traceback" in line]
    assert noise == [], noise
    assert (tmp_path / "out" / "ray-driver.log").exists()
