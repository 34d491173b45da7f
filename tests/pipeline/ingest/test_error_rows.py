"""Error rows say what is wrong with each path *now*: a path fixed since, a file gone, or a path that
holds other content has no old error left (real runs on a real local Ray, real SQLite)."""
from __future__ import annotations

import os
import shutil

from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.ingest.run import run_fingerprint
from pipeline.store import ErrorRow, TrackPath, open_db
from pipeline.synth import write_song


def _errors(db) -> dict[str, str]:
    engine = open_db(db)
    with Session(engine) as s:
        rows = {os.path.basename(p): stage for p, stage in s.execute(select(ErrorRow.path, ErrorRow.stage))}
    engine.dispose()
    return rows


def test_fixed_gone_and_replaced_paths_lose_their_old_errors(tmp_path, ray_local):
    music, db, out = tmp_path / "music", tmp_path / "db.sqlite", tmp_path / "out"
    music.mkdir()
    write_song(music / "good.wav", seed=1, seconds=2.0)
    os.symlink(music / "nowhere.wav", music / "link.wav")  # dangling: skipped at discovery
    os.symlink(music / "nowhere.wav", music / "gone.wav")
    (music / "broken.wav").write_bytes(b"RIFF" + os.urandom(3000))  # fails to decode
    (music / "still_broken.wav").write_bytes(b"RIFF" + os.urandom(3000))
    run_fingerprint([str(music)], db=str(db), out=str(out), show_progress=False)
    assert _errors(db) == {"link.wav": "discover", "gone.wav": "discover", "broken.wav": "decode",
                           "still_broken.wav": "decode"}

    # The user fixes things: the link now points at a real file (known content: no work), the
    # other dangling link is deleted, the broken file is replaced by a good recording (new content).
    os.unlink(music / "link.wav")
    shutil.copy(music / "good.wav", music / "link.wav")
    os.unlink(music / "gone.wav")
    write_song(music / "broken.wav", seed=2, seconds=2.0)
    summary = run_fingerprint([str(music)], db=str(db), out=str(out), show_progress=False)
    assert summary.processed == 1 and summary.errors == 0
    assert _errors(db) == {"still_broken.wav": "decode"}  # what is still wrong stays
    engine = open_db(db)
    with Session(engine) as s:
        paths = sorted(os.path.basename(p) for p in s.scalars(select(TrackPath.path)))
    engine.dispose()
    assert paths == ["broken.wav", "good.wav", "link.wav"]

    # A broken file turning into another broken file keeps one row, for its current bytes.
    (music / "still_broken.wav").write_bytes(b"RIFF" + os.urandom(2000))
    run_fingerprint([str(music)], db=str(db), out=str(out), show_progress=False)
    engine = open_db(db)
    with Session(engine) as s:
        rows = list(s.execute(select(ErrorRow.path, ErrorRow.content_hash)))
    engine.dispose()
    assert len(rows) == 1 and rows[0][0].endswith("still_broken.wav")
