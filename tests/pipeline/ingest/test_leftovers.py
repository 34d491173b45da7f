"""What interrupted runs leave under --out is gone after the next run starts (real files, no Ray:
nothing to analyse)."""
from __future__ import annotations

from actors.stages import ATTEMPTS_DIR
from pipeline.ingest.run import run_fingerprint


def test_crash_journals_of_stopped_runs_are_removed_by_the_next_run(tmp_path):
    music, out = tmp_path / "music", tmp_path / "out"
    music.mkdir()
    journal = out / ATTEMPTS_DIR / ("a" * 32)
    journal.mkdir(parents=True)
    (journal / ("f" * 64)).write_text("2")  # a file that had crashed its worker twice when the run stopped
    summary = run_fingerprint([str(music)], db=str(tmp_path / "db.sqlite"), out=str(out), show_progress=False)
    assert summary.discovered == 0
    assert list((out / ATTEMPTS_DIR).iterdir()) == []


def test_an_unlisted_alignment_part_is_removed_and_a_listed_one_kept(tmp_path):
    """match-midi writes midi_alignments parts, then lists them; one a crash left unlisted is a
    leftover like any worker's part."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sqlalchemy.orm import Session

    from pipeline.store import ParquetPart, open_db

    music, out, db = tmp_path / "music", tmp_path / "out", tmp_path / "db.sqlite"
    music.mkdir()
    (out / "midi_alignments").mkdir(parents=True)
    for name in ("part-listed.parquet", "part-crashed.parquet"):
        pq.write_table(pa.table({"midi_hash": ["m" * 64]}), out / "midi_alignments" / name)
    engine = open_db(db)
    with Session(engine) as s, s.begin():
        s.add(ParquetPart(name="midi_alignments/part-listed.parquet", dataset="midi_alignments", run_id="m1",
                          n_rows=1))
    engine.dispose()
    run_fingerprint([str(music)], db=str(db), out=str(out), show_progress=False)
    assert sorted(p.name for p in (out / "midi_alignments").iterdir()) == ["part-listed.parquet"]
