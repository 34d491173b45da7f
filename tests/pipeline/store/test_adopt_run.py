"""A run resumed by a later process (``chromaray train`` with a known name) names that process and
beats: before, its row kept the dead process's pid and no heartbeat, so the next writer's claim
stored the live training run as ``interrupted`` (real SQLite, a real process that exits)."""
from __future__ import annotations

import subprocess
import sys
import time

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from pipeline.store import Run, adopt_run, claim_run, finish_run, new_run, open_db
from pipeline.store.runs import ProcessId, liveness, this_process


def _row(engine, run_id):
    with Session(engine) as s:
        return s.scalars(select(Run).where(Run.id == run_id)).one()


def _resumed_by_a_later_process(engine) -> str:
    """A train run row left by a process that has exited, then reopened (status running)."""
    run_id = new_run(engine, "train", name="tokens")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    with engine.begin() as conn:
        conn.execute(update(Run).where(Run.id == run_id).values(pid=int(gone.stdout), pid_started=1.0))
    return run_id


def test_a_resumed_run_without_adoption_is_taken_for_dead(tmp_path):
    # The defect the driver's adopt_run call fixes, shown on the row itself.
    engine = open_db(tmp_path / "lib.sqlite")
    run_id = _resumed_by_a_later_process(engine)
    assert liveness(_row(engine, run_id)) == "dead"
    finish_run(engine, claim_run(engine, "fingerprint"), "finished")
    assert _row(engine, run_id).status == "interrupted"
    engine.dispose()


def test_an_adopted_run_lives_beats_and_survives_the_next_claim(tmp_path):
    engine = open_db(tmp_path / "lib.sqlite")
    run_id = _resumed_by_a_later_process(engine)
    adopt_run(engine, run_id, heartbeat_s=0.2)
    row = _row(engine, run_id)
    me = this_process()
    assert (row.host, row.pid, row.heartbeat_s) == (me.host, me.pid, 0.2)
    assert liveness(row) == "alive"
    first = row.heartbeat_at
    time.sleep(0.6)
    assert _row(engine, run_id).heartbeat_at > first  # the heartbeat stamps
    # Another host sees it alive by its heartbeat alone.
    assert liveness(_row(engine, run_id), me=ProcessId("other-host", 1, None)) == "alive"
    finish_run(engine, claim_run(engine, "fingerprint"), "finished")
    assert _row(engine, run_id).status == "running"
    finish_run(engine, run_id, "finished")
    stamped = _row(engine, run_id).heartbeat_at
    time.sleep(0.5)
    row = _row(engine, run_id)
    assert row.status == "finished" and row.heartbeat_at == stamped  # the heartbeat stopped with the run
    assert liveness(row) == "ended"
    engine.dispose()
