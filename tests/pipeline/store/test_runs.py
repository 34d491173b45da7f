"""One writer per database and dead-run detection (pipeline/store/runs.py), on real SQLite
files with real processes: the claim is atomic across processes, a live holder (even a stopped
one) refuses the next claim in one line, a killed one is taken over and stored as
``interrupted`` with the time it was last seen alive; readers are not blocked by a writer."""
from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, select, text
from sqlalchemy.orm import Session

from actors.errors import ChromarayError
from pipeline.store import (
    SCHEMA_VERSION,
    Meta,
    Run,
    WriterBusy,
    check_schema,
    claim_run,
    finish_run,
    list_runs,
    new_run,
    open_db,
)
from pipeline.store.runs import STALE_S, live_writer, liveness, this_process
from tests.paths import REPO

HOLDER = textwrap.dedent("""
    import sys, time
    from pipeline.store import claim_run, open_db
    eng = open_db(sys.argv[1])
    print(claim_run(eng, "fingerprint", heartbeat_s=float(sys.argv[2])), flush=True)
    time.sleep(600)
""")


def _holder(db: Path, heartbeat_s: float = 0.2) -> tuple[subprocess.Popen, str]:
    """A separate process holding the writer role of ``db``; returns it and its run id."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(db), str(heartbeat_s)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert len(line) == 32, (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc, line


def _row(db: Path, run_id: str) -> Run:
    eng = open_db(db)
    with Session(eng) as s:
        row = s.get_one(Run, run_id)
        s.expunge(row)
    eng.dispose()
    return row


def test_a_second_writer_is_refused_in_one_line_naming_the_live_run(tmp_path):
    db = tmp_path / "c.db"
    eng = open_db(db)
    first = claim_run(eng, "fingerprint", name="first")
    with pytest.raises(WriterBusy) as err:
        claim_run(eng, "fingerprint", name="second")
    msg = str(err.value)
    started = _row(db, first).started_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    assert "\n" not in msg
    assert f"run {first[:12]} on host {socket.gethostname()}, pid {os.getpid()}, started {started}" in msg
    with Session(eng) as s:  # the refused claim wrote nothing
        assert [r.name for r in s.scalars(select(Run))] == ["first"]
    # Other kinds (train, a plain new_run row) do not hold the fingerprint writer role.
    new_run(eng, "train")
    assert live_writer(eng)["id"] == first  # what a reader checks before it would write
    finish_run(eng, first, "finished")
    assert live_writer(eng) is None
    second = claim_run(eng, "fingerprint", name="second")
    finish_run(eng, second, "finished")
    eng.dispose()


@pytest.mark.parametrize("database", ["new", "version 3"])
def test_claims_from_many_processes_at_once_admit_exactly_one(tmp_path, database):
    """Four processes open the database (a new one: they race to create the tables; one of
    schema 3: to upgrade it) and claim it at the same moment: one wins, three refuse in one line."""
    db = tmp_path / "c.db"
    if database == "version 3":
        _version_3(db)
    go = tmp_path / "go"
    script = textwrap.dedent("""
        import os, sys, time
        from pipeline.store import WriterBusy, claim_run, finish_run, open_db
        while not os.path.exists(sys.argv[2]):
            time.sleep(0.001)
        eng = open_db(sys.argv[1])
        try:
            rid = claim_run(eng, "fingerprint")
        except WriterBusy as exc:
            print("refused", exc, flush=True)
            sys.exit(0)
        print("claimed", rid, flush=True)
        while not os.path.exists(sys.argv[3]):  # hold it until the others have tried, however slow they are
            time.sleep(0.01)
        finish_run(eng, rid, "finished")
    """)
    release = tmp_path / "release"
    procs = [subprocess.Popen([sys.executable, "-c", script, str(db), str(go), str(release)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    time.sleep(1.0)
    go.touch()
    deadline = time.monotonic() + 60
    while sum(p.poll() is not None for p in procs) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    release.touch()
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    claimed = [o for o in outs if o.startswith("claimed")]
    assert len(claimed) == 1, outs
    winner = claimed[0].split()[1]
    assert all(o.startswith("refused") and winner[:12] in o for o in outs if o not in claimed), outs
    eng = open_db(db)
    with Session(eng) as s:
        assert [(r.id, r.status) for r in s.scalars(select(Run)) if r.id != "old1"] == [(winner, "finished")]
    assert check_schema(eng, write=False) == SCHEMA_VERSION
    eng.dispose()


def test_a_stopped_holder_still_holds_and_a_killed_one_is_interrupted(tmp_path):
    db = tmp_path / "c.db"
    open_db(db).dispose()
    proc, held = _holder(db)
    try:
        time.sleep(0.8)
        beat1 = _row(db, held).heartbeat_at
        time.sleep(0.8)
        beat2 = _row(db, held).heartbeat_at
        assert beat2 > beat1  # the heartbeat thread stamps the row while the run lives
        os.kill(proc.pid, signal.SIGSTOP)  # paused (as by a debugger, or Ctrl-Z): still alive
        eng = open_db(db)
        with pytest.raises(WriterBusy, match=f"run {held[:12]} on host .*, pid {proc.pid}, started "):
            claim_run(eng, "fingerprint")
        assert [r["status"] for r in list_runs(eng)] == ["running"]
        os.kill(proc.pid, signal.SIGCONT)
        time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        seen = _row(db, held).heartbeat_at
        # Readers see it at once, before anything is written back.
        (view,) = list_runs(eng)
        assert (view["status"], view["stored_status"], view["alive"]) == ("interrupted", "running", False)
        assert view["last_seen_at"] == seen
        mine = claim_run(eng, "fingerprint")  # not blocked by the dead holder
        row = _row(db, held)
        assert (row.status, row.heartbeat_at, row.finished_at) == ("interrupted", seen, None)
        finish_run(eng, mine, "finished")
        eng.dispose()
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait()


def _foreign_run(db: Path, *, host: str, pid: int, pid_started: float | None, seen_s_ago: float,
                 heartbeat_s: float | None = 5.0) -> str:
    eng = open_db(db)
    t = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(seconds=seen_s_ago)
    run_id = f"{host[:8]:x<8}{pid:08d}{int(seen_s_ago):016d}"[:32]
    with Session(eng) as s, s.begin():
        s.add(Run(id=run_id, kind="fingerprint", status="running", started_at=t - dt.timedelta(hours=1),
                  updated_at=t, host=host, pid=pid, pid_started=pid_started, heartbeat_at=t,
                  heartbeat_s=heartbeat_s))
    eng.dispose()
    return run_id


def test_a_run_of_another_host_lives_by_its_heartbeat(tmp_path):
    db = tmp_path / "c.db"
    recent = _foreign_run(db, host="gpu-node-7", pid=4242, pid_started=1.0, seen_s_ago=5)
    eng = open_db(db)
    with pytest.raises(WriterBusy, match=f"run {recent[:12]} on host gpu-node-7, pid 4242, .* 5 s ago"):
        claim_run(eng, "fingerprint")
    with Session(eng) as s, s.begin():  # the same run, silent for longer than the stale window
        row = s.get_one(Run, recent)
        row.heartbeat_at -= dt.timedelta(seconds=STALE_S)
        row.updated_at = row.heartbeat_at
    assert [r["status"] for r in list_runs(eng)] == ["interrupted"]
    mine = claim_run(eng, "fingerprint")
    with Session(eng) as s:
        assert s.get_one(Run, recent).status == "interrupted"
    finish_run(eng, mine, "finished")
    # Another host's run without a heartbeat (a train run): nothing tells, so it is left alone.
    quiet = _foreign_run(db, host="gpu-node-8", pid=1, pid_started=None, seen_s_ago=3600, heartbeat_s=None)
    with Session(eng) as s:
        assert liveness(s.get_one(Run, quiet)) == "unknown"
    eng.dispose()


def test_a_reused_pid_or_a_zombie_is_not_the_run(tmp_path):
    db = tmp_path / "c.db"
    me = this_process()
    # pid 1 exists, but it started long before this run claimed to: another process.
    reused = _foreign_run(db, host=me.host, pid=1, pid_started=12345.0, seen_s_ago=1)
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    time.sleep(1.0)  # exited, not reaped: its pid is still there, as a zombie
    import psutil

    z = _foreign_run(db, host=me.host, pid=zombie.pid, pid_started=psutil.Process(zombie.pid).create_time(),
                     seen_s_ago=2)
    eng = open_db(db)
    with Session(eng) as s:
        assert liveness(s.get_one(Run, reused)) == "dead"
        assert liveness(s.get_one(Run, z)) == "dead"
    zombie.wait()
    eng.dispose()


def test_readers_are_not_blocked_by_a_writer(tmp_path):
    """WAL: while a writer holds the write lock with rows not yet committed, a read-only reader
    (identify, the dashboard, chromaray runs) reads the committed state at once."""
    db = tmp_path / "c.db"
    eng = open_db(db)
    done = claim_run(eng, "fingerprint", name="done")
    finish_run(eng, done, "finished")
    with eng.connect() as base:
        conn = base.execution_options(isolation_level="AUTOCOMMIT")
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        conn.execute(text("UPDATE runs SET name = 'uncommitted'"))
        ro = open_db(db, readonly=True)
        t0 = time.monotonic()
        names = [r["name"] for r in list_runs(ro)]
        assert time.monotonic() - t0 < 2.0
        assert names == ["done"]
        ro.dispose()
        conn.exec_driver_sql("ROLLBACK")
    eng.dispose()


def _version_3(db: Path) -> dt.datetime:
    """A database as schema 3 had it (runs without the process columns) with run ``old1`` left
    ``running`` by a job killed long ago; returns its last update."""
    open_db(db).dispose()
    raw = create_engine(f"sqlite:///{db}")
    old = dt.datetime(2026, 1, 2, 3, 4, 5)
    with raw.begin() as conn:
        for col in ("host", "pid", "pid_started", "heartbeat_at", "heartbeat_s"):
            conn.exec_driver_sql(f"ALTER TABLE runs DROP COLUMN {col}")
        conn.exec_driver_sql("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
        conn.execute(text("INSERT INTO runs (id, kind, status, started_at, updated_at, config, n_total, n_done, "
                          "n_skipped, n_errors, audio_seconds, summary) VALUES ('old1', 'fingerprint', 'running', "
                          ":t, :t, '{}', 10, 4, 0, 0, 60.0, '{}')"), {"t": old})
    raw.dispose()
    return old


def test_a_version_3_database_is_read_as_is_and_upgraded_in_place(tmp_path):
    """A database of schema 3 (runs without the process columns) with a run left ``running`` by a
    killed job: a reader shows it interrupted (judged by its last update), a writer adds the
    columns, keeps every row and stores the status."""
    db = tmp_path / "v3.db"
    old = _version_3(db)
    ro = open_db(db, readonly=True)
    assert check_schema(ro, write=False) == 3
    (view,) = list_runs(ro)
    assert (view["id"], view["status"], view["last_seen_at"], view["host"]) == ("old1", "interrupted", old, None)
    ro.dispose()

    eng = open_db(db)
    assert check_schema(eng, write=False) == SCHEMA_VERSION == 5
    assert {"host", "pid", "pid_started", "heartbeat_at", "heartbeat_s"} <= {
        c["name"] for c in inspect(eng).get_columns("runs")}
    with Session(eng) as s:
        assert s.get_one(Meta, "schema_version").value == str(SCHEMA_VERSION)
        row = s.get_one(Run, "old1")
        assert (row.status, row.n_done, row.host, row.updated_at) == ("running", 4, None, old)
    mine = claim_run(eng, "fingerprint")
    with Session(eng) as s:
        assert s.get_one(Run, "old1").status == "interrupted"
    finish_run(eng, mine, "finished")
    eng.dispose()


FOLDER_HOLDER = textwrap.dedent("""
    import sys, time
    from pipeline.store import claim_run, open_db
    print(claim_run(open_db(sys.argv[1]), "fingerprint", out_dir=sys.argv[2]), flush=True)
    time.sleep(600)
""")


def test_one_writer_per_output_folder_across_databases(tmp_path):
    """Two databases, one --out: the second run would take the first one's parts for leftovers,
    so it is refused, naming the run and its database; the lock goes with the process."""
    out = tmp_path / "out"
    out.mkdir()
    db1, db2 = tmp_path / "one.db", tmp_path / "two.db"
    open_db(db1).dispose()
    proc = subprocess.Popen([sys.executable, "-c", FOLDER_HOLDER, str(db1), str(out)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        held = proc.stdout.readline().strip()
        eng = open_db(db2)
        with pytest.raises(ChromarayError) as err:
            claim_run(eng, "fingerprint", out_dir=out)
        msg = str(err.value)
        assert "\n" not in msg and msg.startswith(f"another run is writing to the output folder {out}: run {held[:12]} "
                                                  f"on host {socket.gethostname()}, pid {proc.pid}, started 20")
        assert msg.endswith(f"database {db1}. Wait for it to end, or use another --out")
        with Session(eng) as s:
            assert s.scalars(select(Run)).all() == []  # refused before writing anything
        other = tmp_path / "other"
        other.mkdir()
        finish_run(eng, claim_run(eng, "fingerprint", out_dir=other), "finished")  # another folder is free
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        mine = claim_run(eng, "fingerprint", out_dir=out)  # the OS released the dead holder's lock
        with pytest.raises(ChromarayError, match="another run is writing to the output folder"):
            claim_run(open_db(tmp_path / "three.db"), "fingerprint", out_dir=out)
        finish_run(eng, mine, "finished")
        finish_run(eng, claim_run(eng, "fingerprint", out_dir=out), "finished")  # released by finish_run
        eng.dispose()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
