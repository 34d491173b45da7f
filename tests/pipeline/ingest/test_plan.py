"""pipeline.ingest.plan: what a run must do, from the manifest and the database."""
from __future__ import annotations

from sqlalchemy.orm import Session

from pipeline.ingest.discover import ManifestRow, input_root
from pipeline.ingest.plan import plan_work
from pipeline.store import Track, TrackPath, open_db

VERSIONS = {"audio": "a1", "midi": "m1"}


def _record(engine, path: str, content_hash: str) -> None:
    with Session(engine) as s, s.begin():
        s.add(Track(content_hash=content_hash, kind="audio", format="WAV", size_bytes=10, duration_s=1.0,
                    features_version="a1", run_id="r0"))
        s.add(TrackPath(path=path, content_hash=content_hash, size_bytes=10, mtime_ns=1, last_seen_run="r0"))


def test_tilde_roots_find_deleted_files_like_discover_does(tmp_path, monkeypatch):
    """`chromaray fingerprint ~/Music`: discover expands ~, so plan_work must too, or files
    deleted under ~ keep their paths forever."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "lib").mkdir()
    engine = open_db(tmp_path / "c.db")
    gone, kept = str(tmp_path / "lib" / "gone.wav"), str(tmp_path / "lib" / "kept.wav")
    _record(engine, gone, "h-gone")
    _record(engine, kept, "h-kept")
    _record(engine, str(tmp_path / "elsewhere.wav"), "h-other")  # outside the scanned root: untouched
    manifest = [ManifestRow(kept, "audio", 10, 1, "h-kept")]
    plan = plan_work(engine, manifest, ["~/lib"], VERSIONS)
    assert plan.stale_paths == [gone]
    assert plan.skipped == 1 and not plan.to_process and not plan.path_updates


def test_input_root_expands_and_absolutises(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert input_root("~/Music") == str(tmp_path / "Music")
    assert input_root("rel/dir") == str(tmp_path / "rel" / "dir")
