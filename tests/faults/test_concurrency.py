"""Two runs on one database (issue #14, defects 1 and 2), with real `chromaray fingerprint`
processes on real Ray and real files.

1. Two runs started together on one --db/--out: exactly one runs, the other refuses at once with
   one line naming the running run (id, host, pid, start); every track is stored once.
   (Before the writer lock both exited 0 and every track was stored twice.)
2. A run paused (SIGSTOP) right after it wrote a Parquet part: a second run on the same database
   started meanwhile (over an empty folder) refuses instead of "cleaning up" the live run's parts;
   nothing on disk is removed; the first run, resumed, completes whole. (Before: the second run
   deleted the parts, the first listed them as committed: listed parts missing, tracks without
   Parquet rows, never recomputed.)
"""
from __future__ import annotations

import os
import signal
import socket

import pytest

from tests.faults import (
    check_consistent,
    committed_tracks,
    part_files,
    query,
    start_fingerprint,
    statuses,
    wait_for,
    wait_until_analysing,
)

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _refusal(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert lines and lines[-1].startswith("chromaray fingerprint: error: another fingerprint run is writing "
                                          "this database: run "), stderr
    return lines[-1]


def _as_parts(names: set[str]) -> set[str]:
    """Part names, a temp file (``frames/.part-x.parquet.tmp``) as the part it becomes."""
    out = set()
    for name in names:
        folder, _, base = name.rpartition("/")
        if base.startswith(".") and base.endswith(".tmp"):
            base = base[1:-len(".tmp")]
        out.add(f"{folder}/{base}")
    return out


def test_two_runs_at_once_one_refuses_and_nothing_is_duplicated(fault_library, tmp_path):
    db, out = tmp_path / "c.db", tmp_path / "out"
    lib = fault_library[0].parent
    a = start_fingerprint([lib], db, out, tmp_path, "a")
    b = start_fingerprint([lib], db, out, tmp_path, "b")
    rcs = {a.name: a.wait(), b.name: b.wait()}
    assert sorted(rcs.values()) == [0, 2], (rcs, a.stderr[-2000:], b.stderr[-2000:])
    winner, loser = (a, b) if rcs["a"] == 0 else (b, a)
    runs = query(db, "SELECT id, pid, status FROM runs")
    assert len(runs) == 1, runs  # the refused run wrote nothing
    ((run_id, pid, status),) = runs
    assert (pid, status) == (winner.pid, "finished")
    line = _refusal(loser.stderr)
    assert f"run {run_id[:12]} on host {socket.gethostname()}, pid {winner.pid}, started 20" in line, line
    c = check_consistent(db, out, fault_library)
    assert (c.audio, c.midi) == (8, 2)
    again = start_fingerprint([lib], db, out, tmp_path, "again")
    assert again.wait() == 0, again.stderr[-2000:]
    assert "nothing new" in again.stdout
    check_consistent(db, out, fault_library)


def test_startup_cleanup_never_removes_parts_of_a_paused_live_run(fault_library, tmp_path):
    db, out = tmp_path / "c.db", tmp_path / "out"
    lib = fault_library[0].parent
    first = start_fingerprint([lib], db, out, tmp_path, "first")
    try:
        # Pause the driver (the one writer) as soon as a part file appears: usually before the
        # transaction that lists it, which is the window the old cleanup destroyed.
        wait_until_analysing(first, out)
        wait_for(lambda: part_files(out), interval=0.002, while_alive=first, what="a first Parquet part")
        os.kill(first.pid, signal.SIGSTOP)
        on_disk = part_files(out)
        listed = {n for (n,) in query(db, "SELECT name FROM parquet_parts")}
        unlisted = on_disk - listed
        empty = tmp_path / "empty"
        empty.mkdir()
        second = start_fingerprint([empty], db, out, tmp_path, "second")
        assert second.wait(180) == 2, second.stderr[-2000:]
        ((run_id,),) = query(db, "SELECT id FROM runs")
        line = _refusal(second.stderr)
        assert f"run {run_id[:12]} on host {socket.gethostname()}, pid {first.pid}, started 20" in line, line
        # Workers write the parts, and they keep going while the driver is paused: a temp file of
        # then may since have been renamed into place, but no part may be gone.
        removed = _as_parts(on_disk) - _as_parts(part_files(out))
        assert not removed, f"removed: {sorted(removed)}"
        os.kill(first.pid, signal.SIGCONT)
        assert first.wait() == 0, first.stderr[-3000:]
    finally:
        first.kill()
    print(f"paused with {len(on_disk)} part file(s) on disk, {len(unlisted)} not yet listed")
    c = check_consistent(db, out, fault_library)
    assert c.tracks == 10 and committed_tracks(db) == 10
    assert list(statuses(db).values()) == ["finished"]
