"""A run killed mid-way (issue #14, defect 6, and the fault suite's kill cases), with real
`chromaray fingerprint` processes on real Ray and real files. After each fault: every track
exactly once in SQLite and in the listed Parquet parts, no listed part missing on disk, and the
re-run completes the library.

- SIGKILL of the driver, preferably between a part's write and its commit: `chromaray runs` shows
  the run ``interrupted`` with when it was last seen alive at once (before: ``running`` forever);
  the re-run stores that status, removes the unlisted leftovers and completes.
- SIGKILL of a feature worker: Ray restarts it and the run completes by itself.
- SIGINT (Ctrl-C): exit 130 with one line, the run ``stopped``; the re-run completes.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.faults import (
    check_consistent,
    committed_tracks,
    descendants,
    feature_workers,
    part_files,
    query,
    start_fingerprint,
    statuses,
    wait_for,
    wait_until_analysing,
)
from tests.paths import REPO

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _runs_json(db) -> list[dict]:
    r = subprocess.run([sys.executable, "-m", "jobs.runs", "--db", str(db), "--json"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _rerun(lib, db, out, tmp_path, library) -> None:
    again = start_fingerprint([lib], db, out, tmp_path, "rerun")
    assert again.wait() == 0, again.stderr[-3000:]
    c = check_consistent(db, out, library)  # whole, and the leftovers removed
    assert (c.audio, c.midi) == (8, 2)
    third = start_fingerprint([lib], db, out, tmp_path, "third")
    assert third.wait() == 0 and "nothing new" in third.stdout, third.stderr[-2000:]


def _reap(ray_procs: list) -> int:
    """After the driver died: give its Ray processes 20 s to follow it, kill the rest; returns how
    many were still running then."""
    import psutil

    def alive(p: psutil.Process) -> bool:
        try:
            return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(alive(p) for p in ray_procs):
        time.sleep(0.5)
    left = [p for p in ray_procs if alive(p)]
    for p in left:
        with contextlib.suppress(psutil.Error):
            p.kill()
    return len(left)


def test_sigkill_of_the_driver_mid_run_then_rerun(fault_library, tmp_path):
    db, out = tmp_path / "c.db", tmp_path / "out"
    lib = fault_library[0].parent
    run = start_fingerprint([lib], db, out, tmp_path, "killed")
    listed = lambda: {n for (n,) in query(db, "SELECT name FROM parquet_parts")}  # noqa: E731
    try:
        wait_until_analysing(run, out)
        # Best: a part written but not yet listed; at the latest once 5 of 10 tracks are in.
        when = wait_for(lambda: ("between write and commit" if part_files(out) - listed() else None)
                        or ("after a commit" if committed_tracks(db) >= 5 else None),
                        interval=0.002, while_alive=run, what="a part being written")
        ray_procs = descendants(run.pid)
        os.kill(run.pid, signal.SIGKILL)
        run.proc.wait()
    finally:
        run.kill()
    left = _reap(ray_procs)
    print(f"driver killed {when}: {committed_tracks(db)} track(s) committed, "
          f"{len(part_files(out) - listed())} unlisted part file(s) left, "
          f"{left} of its {len(ray_procs)} Ray processes still running 20 s later")

    # The killed run is recognised at once by a reader, with when it was last seen alive.
    (view,) = _runs_json(db)
    assert (view["status"], view["stored_status"], view["pid"]) == ("interrupted", "running", run.pid)
    seen = dt.datetime.fromisoformat(view["last_seen_at"])
    assert dt.datetime.fromisoformat(view["started_at"]) < seen <= dt.datetime.now(dt.timezone.utc)
    check_consistent(db, out, orphans_ok=True)  # what was committed is whole

    _rerun(lib, db, out, tmp_path, fault_library)
    st = statuses(db)
    assert st.pop(view["id"]) == "interrupted"  # stored by the next run
    assert set(st.values()) == {"finished"}


def test_sigkill_of_a_feature_worker_mid_run(fault_library, tmp_path):
    db, out = tmp_path / "c.db", tmp_path / "out"
    lib = fault_library[0].parent
    run = start_fingerprint([lib], db, out, tmp_path, "worker")
    try:
        wait_for(lambda: committed_tracks(db) >= 2, while_alive=run, what="two committed tracks")
        workers = wait_for(lambda: feature_workers(run.pid), timeout=60, while_alive=run,
                           what="an AnalyzeStage worker process")
        before = committed_tracks(db)
        workers[0].kill()
        assert run.wait() == 0, run.stderr[-3000:]
    finally:
        run.kill()
    print(f"killed worker pid {workers[0].pid} with {before} of 10 tracks committed")
    c = check_consistent(db, out, fault_library)
    assert (c.audio, c.midi) == (8, 2)
    assert list(statuses(db).values()) == ["finished"]


def test_sigint_mid_run_stops_cleanly_then_rerun(fault_library, tmp_path):
    db, out = tmp_path / "c.db", tmp_path / "out"
    lib = fault_library[0].parent
    run = start_fingerprint([lib], db, out, tmp_path, "sigint")
    try:
        wait_for(lambda: committed_tracks(db) >= 2, while_alive=run, what="two committed tracks")
        os.kill(run.pid, signal.SIGINT)
        rc = run.wait(180)
    finally:
        run.kill()
    assert rc == 130, run.stderr[-3000:]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    assert [r["status"] for r in _runs_json(db)] == ["stopped"]
    check_consistent(db, out, orphans_ok=True)
    _rerun(lib, db, out, tmp_path, fault_library)
