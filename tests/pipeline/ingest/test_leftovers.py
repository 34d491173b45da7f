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
