"""`chromaray runs`: the runs of a database with the status a reader can prove: a live run is
``running``, one whose process was killed is ``interrupted`` with when it was last seen alive,
both before the next run writes anything (real processes, real SQLite file)."""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time

from pipeline.store import claim_run, finish_run, open_db
from tests.paths import REPO

HOLDER = ("import sys, time; from pipeline.store import claim_run, open_db; "
          "print(claim_run(open_db(sys.argv[1]), 'fingerprint', name=sys.argv[2], heartbeat_s=0.2), flush=True); "
          "time.sleep(600)")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs.cli", "runs", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def _start_holder(db, name):
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(db), name], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    return p, p.stdout.readline().strip()


def test_runs_lists_live_finished_and_interrupted_runs(tmp_path):
    db = tmp_path / "c.db"
    eng = open_db(db)
    done = claim_run(eng, "fingerprint", name="done\x1b]0;pwned\x07")
    finish_run(eng, done, "finished", n_total=3, n_done=3)
    eng.dispose()
    killed, killed_id = _start_holder(db, "killed")
    time.sleep(0.7)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    live, live_id = _start_holder(db, "live")  # the killed one does not block it
    try:
        r = _cli("--db", str(db), "--json")
        assert r.returncode == 0, r.stderr
        rows = {x["id"]: x for x in json.loads(r.stdout)}
        assert [x["name"] for x in json.loads(r.stdout)] == ["live", "killed", "done\x1b]0;pwned\x07"]
        assert rows[live_id]["status"] == "running" and rows[live_id]["pid"] == live.pid
        gone = rows[killed_id]
        assert (gone["status"], gone["alive"], gone["pid"]) == ("interrupted", False, killed.pid)
        # The second claim stored it; the listing shows when it was last alive (its heartbeat).
        assert gone["stored_status"] == "interrupted"
        seen = dt.datetime.fromisoformat(gone["last_seen_at"])
        assert dt.datetime.fromisoformat(gone["started_at"]) < seen < dt.datetime.now(dt.timezone.utc)
        assert rows[done]["status"] == "finished" and rows[done]["n_done"] == 3

        r = _cli("--db", str(db))
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0].startswith("RUN") and len(lines) == 4
        assert lines[1].startswith(live_id[:12]) and " running " in lines[1] and f":{live.pid} " in lines[1]
        assert lines[2].startswith(killed_id[:12]) and " interrupted " in lines[2]
        assert seen.strftime("%Y-%m-%d %H:%M:%S") in lines[2]
        assert "\x1b" not in r.stdout and "done\\x1b]0;pwned\\x07" in lines[3]  # names printed escaped
    finally:
        os.kill(live.pid, signal.SIGKILL)
        live.wait()


def test_runs_of_a_missing_database_is_one_line(tmp_path):
    r = _cli("--db", str(tmp_path / "nope.db"))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "does not exist" in r.stderr
