"""Dashboard API and server tests: a real `python -m jobs.dashboard` process over HTTP.

The database is written with the pipeline.store models (the same rows a job writes);
the browser tests (test_dashboard_browser.py) reuse the helpers below.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import http.client
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.paths import REPO

XSS_NAME = '<img src=x onerror="window.__xss=1">.wav'
SCRIPT_REASON = "decode failed: <script>window.__xss=2</script> & 'quotes'"


# ---------------------------------------------------------------- helpers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def populate(db: Path, *, t0: dt.datetime | None = None) -> dict:
    """A fingerprint run (progress every 10 s, 5 files per step, 2 actors, errors) and a
    train run (loss curves), written through pipeline.store like a job would.

    Returns the ids and the numbers the API must report.
    """
    from sqlalchemy.orm import Session

    from pipeline import store

    eng = store.open_db(db)
    t0 = t0 or store.utcnow() - dt.timedelta(seconds=200)
    fp = store.new_run(eng, "fingerprint", name="demo library", ray_address="127.0.0.1:6379",
                       ray_dashboard_url="127.0.0.1:8265")
    tr = store.new_run(eng, "train", name="tiny lm", ray_dashboard_url="javascript:window.__xss=3//")
    with Session(eng) as s, s.begin():
        run = s.get(store.Run, fp)
        run.started_at = t0
        run.n_total, run.n_done, run.n_errors, run.audio_seconds = 100, 50, 2, 50 * 180.0
        s.get(store.Run, tr).started_at = t0 + dt.timedelta(seconds=1)
        for i in range(11):  # done = 0, 5, ..., 50 at t0 + 0, 10, ..., 100 s
            s.add(store.ProgressEvent(run_id=fp, ts=t0 + dt.timedelta(seconds=10 * i), stage="features",
                                      done=5 * i, total=100, errors=2, audio_seconds=5 * i * 180.0,
                                      detail={"actors": {"feat-0": {"batch": 4}}} if i == 10 else {}))
        for k, (actor, n, peak) in enumerate([("feat-0", 4, 1 << 30), ("feat-0", 8, 3 << 30),
                                              ("feat-1", 6, 2 << 30)]):
            s.add(store.BatchLog(run_id=fp, ts=t0 + dt.timedelta(seconds=k), actor=actor, device="cuda:0",
                                 n_tracks=n, audio_seconds=n * 180.0, oom_splits=k == 1,
                                 budget_bytes=12 << 30, peak_bytes=peak))
        s.add(store.ErrorRow(path=f"/music/{XSS_NAME}", stage="decode", reason=SCRIPT_REASON, run_id=fp))
        s.add(store.ErrorRow(path="/music/empty.flac", content_hash="ab" * 32, stage="features",
                             reason="file has no audio samples", run_id=fp))
        s.add(store.ErrorRow(path="/music/old.mp3", stage="decode", reason="from an older run", run_id="0" * 32))
    store.record_metrics(eng, tr, [{"step": k, "loss": 5.0 / (1 + k), "lr": 1e-3, "split": "train"}
                                   for k in range(20)])
    store.record_metrics(eng, tr, [{"step": k, "loss": 6.0 / (1 + k), "split": "eval"} for k in (0, 10, 19)])
    eng.dispose()
    return {"fp": fp, "train": tr, "t0": t0}


def live_writer(db: str, run_id: str, start_done: int, steps: int, interval: float, total: int) -> None:
    """Append progress rows to ``run_id`` every ``interval`` s (a second process, like a job)."""
    from pipeline import store

    eng = store.open_db(db)
    from sqlalchemy.orm import Session

    for i in range(1, steps + 1):
        done = min(total, start_done + i)
        with Session(eng) as s, s.begin():
            s.add(store.ProgressEvent(run_id=run_id, stage="features", done=done, total=total, errors=2,
                                      audio_seconds=done * 180.0))
            run = s.get(store.Run, run_id)
            run.n_done, run.updated_at = done, store.utcnow()
        time.sleep(interval)
    eng.dispose()


class DashboardServer:
    """`python -m jobs.dashboard --db DB --port P` as a child process."""

    def __init__(self, db: Path, *, host: str | None = None, port: int | None = None) -> None:
        self.db, self.host, self.port = db, host, port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> DashboardServer:
        cmd = [sys.executable, "-m", "jobs.dashboard", "--db", str(self.db), "--port", str(self.port)]
        if self.host:
            cmd += ["--host", self.host]
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dashboard exited: {self.proc.communicate()}")
            try:
                if self.get("/api/status")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        self.__exit__()
        raise RuntimeError("dashboard did not start within 60 s")

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def get(self, raw_path: str) -> tuple[int, dict, bytes]:
        """GET with the path sent byte for byte (no client-side normalisation)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            conn.putrequest("GET", raw_path, skip_accept_encoding=True)
            conn.endheaders()
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def json(self, path: str) -> dict:
        status, _, body = self.get(path)
        assert status == 200, (path, status, body[:300])
        return json.loads(body)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    db = tmp_path_factory.mktemp("dash") / "chromaray.db"
    ids = populate(db)
    with DashboardServer(db) as srv:
        yield srv, ids, db


# ---------------------------------------------------------------- tests
def test_runs_list_counts_and_latest_stage(demo):
    srv, ids, _ = demo
    st = srv.json("/api/runs")
    assert st["exists"] and st["schema"] and st["error"] is None
    runs = {r["id"]: r for r in st["runs"]}
    assert set(runs) == {ids["fp"], ids["train"]}
    fp = runs[ids["fp"]]
    assert (fp["kind"], fp["n_total"], fp["n_done"], fp["n_errors"]) == ("fingerprint", 100, 50, 2)
    assert fp["stages"]["features"]["done"] == 50 and fp["stages"]["features"]["total"] == 100
    assert fp["started_at"] == pytest.approx(ids["t0"].replace(tzinfo=dt.timezone.utc).timestamp())
    assert st["runs"][0]["id"] == ids["train"]  # newest first


def test_run_detail_throughput_eta_actors_errors(demo):
    srv, ids, _ = demo
    run = srv.json(f"/api/runs/{ids['fp']}")
    st = run["stages"]["features"]
    # 5 files per 10 s everywhere: 0.5 files/s; 100 - 50 done - 2 failed = 48 left -> 96 s.
    assert st["files_per_s_recent"] == pytest.approx(0.5)
    assert st["files_per_s_overall"] == pytest.approx(0.5)
    assert st["eta_s"] == pytest.approx(96.0)
    assert st["latest"] == {**st["latest"], "done": 50, "errors": 2, "handled": 52, "total": 100}
    assert [p["done"] for p in st["series"]] == [5 * i for i in range(11)]
    assert st["series"][0]["files_per_s"] is None
    assert all(p["files_per_s"] == pytest.approx(0.5) for p in st["series"][1:])
    assert all(p["audio_x"] == pytest.approx(90.0) for p in st["series"][1:])  # 5 * 180 s audio per 10 s
    assert st["detail"] == {"actors": {"feat-0": {"batch": 4}}}
    actors = {a["actor"]: a for a in run["actors"]}
    assert actors["feat-0"]["n_batches"] == 2 and actors["feat-0"]["mean_tracks"] == pytest.approx(6.0)
    assert actors["feat-0"]["last_tracks"] == 8 and actors["feat-0"]["peak_bytes"] == 3 << 30
    assert actors["feat-0"]["oom_splits"] == 1 and actors["feat-1"]["max_tracks"] == 6
    # Errors of this run only, verbatim (escaping is the page's job, tested in the browser).
    paths = {e["path"]: e for e in run["errors"]}
    assert set(paths) == {f"/music/{XSS_NAME}", "/music/empty.flac"}
    assert paths[f"/music/{XSS_NAME}"]["reason"] == SCRIPT_REASON
    assert run["ray_dashboard_url"] == "127.0.0.1:8265"
    every = srv.json("/api/errors")
    assert every["n_errors_total"] == 3 and len(every["errors"]) == 3


def test_train_run_loss_series(demo):
    srv, ids, _ = demo
    run = srv.json(f"/api/runs/{ids['train']}")
    tm = run["train_metrics"]
    assert [p["step"] for p in tm["train"]] == list(range(20))
    assert tm["train"][3]["loss"] == pytest.approx(5.0 / 4)
    assert [p["loss"] for p in tm["eval"]] == pytest.approx([6.0, 6.0 / 11, 6.0 / 20])
    assert run["stages"] == {} and run["errors"] == []
    assert run["ray_dashboard_url"] == "javascript:window.__xss=3//"  # verbatim; the page must not link it


def test_unknown_run_is_404(demo):
    srv, _, _ = demo
    assert srv.get("/api/runs/nope")[0] == 404


def test_page_and_assets_are_served_with_csp(demo):
    srv, _, _ = demo
    status, headers, body = srv.get("/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'src="/assets/app.js"' in body
    assert "script-src 'self'" in headers["content-security-policy"]
    status, headers, body = srv.get("/assets/app.js")
    assert status == 200 and "javascript" in headers["content-type"] and b"textContent" in body
    assert b"innerHTML" not in body  # data never goes through the HTML parser


@pytest.mark.parametrize("raw", [
    "/assets/../dashboard.py", "/assets/..%2fdashboard.py", "/assets/..%2Fdashboard.py",
    "/assets/%2e%2e%2fdashboard.py", "/assets/%2e%2e/%2e%2e/store.py", "/assets/..%5cdashboard.py",
    "/assets/%2fetc%2fpasswd", "/assets//etc/passwd", "/assets/....//....//etc/passwd",
    "/../../../../etc/passwd", "/..%2f..%2f..%2f..%2fetc%2fpasswd", "/dashboard_assets/../dashboard.py",
    "/assets/..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd", "/assets/%252e%252e%252fdashboard.py",
    "/assets/", "/assets/.", "/assets/..", "/pipeline/dashboard.py", "/docs", "/openapi.json",
])
def test_no_file_outside_assets(demo, raw):
    srv, _, _ = demo
    status, _, body = srv.get(raw)
    assert status in (400, 404), (raw, status)
    assert b"root:" not in body and b"DashboardData" not in body and b"sqlalchemy" not in body


def test_read_only_never_writes(demo):
    """Every endpoint leaves the file byte-identical, and the engine refuses writes."""
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from pipeline.web.dashboard import DashboardData

    srv, ids, db = demo
    before = hashlib.sha256(db.read_bytes()).hexdigest(), db.stat().st_mtime_ns
    for p in ["/", "/api/status", "/api/runs", f"/api/runs/{ids['fp']}", f"/api/runs/{ids['train']}", "/api/errors"]:
        assert srv.get(p)[0] == 200
    assert (hashlib.sha256(db.read_bytes()).hexdigest(), db.stat().st_mtime_ns) == before
    data = DashboardData(db)
    with data.engine().connect() as conn:
        # both locks on every pooled connection, the one the schema check opened first included
        assert conn.exec_driver_sql("PRAGMA query_only").scalar() == 1
        with pytest.raises(OperationalError, match=r"readonly|read-only|query_only|attempt to write"):
            conn.execute(text("CREATE TABLE sneaky(x)"))
        with pytest.raises(OperationalError):
            conn.execute(text("DELETE FROM runs"))
    data.engine().dispose()


def test_missing_file_is_reported_then_picked_up(tmp_path):
    db = tmp_path / "later" / "chromaray.db"
    with DashboardServer(db) as srv:
        st = srv.json("/api/runs")
        assert st == {**st, "exists": False, "schema": False, "runs": []}
        assert st["db_path"] == str(db)
        assert srv.get("/")[0] == 200  # the page is there to say so
        err = srv.proc  # the one-line warning on stderr is checked after exit
        ids = populate(db)  # the job starts and creates the file
        st = srv.json("/api/runs")
        assert st["exists"] and {r["id"] for r in st["runs"]} == {ids["fp"], ids["train"]}
    assert "does not exist yet" in err.stderr.read()


def test_empty_and_foreign_files(tmp_path):
    empty = tmp_path / "empty.db"
    empty.touch()
    with DashboardServer(empty) as srv:
        st = srv.json("/api/runs")
        assert st["exists"] and not st["schema"] and st["error"] is None and st["runs"] == []
        assert srv.json("/api/errors")["errors"] == []
        assert srv.get("/api/runs/abc")[0] == 404
    assert empty.stat().st_size == 0  # still empty: nothing created

    junk = tmp_path / "notes.txt"
    junk.write_text("this is not sqlite\n" * 100)
    with DashboardServer(junk) as srv:
        st = srv.json("/api/runs")
        assert st["error"] and "not a database" in st["error"] and st["runs"] == []


def test_binds_localhost_by_default(demo):
    import psutil

    srv, _, _ = demo
    listening = [c for c in psutil.Process(srv.proc.pid).net_connections(kind="tcp")
                 if c.status == psutil.CONN_LISTEN]
    assert [(c.laddr.ip, c.laddr.port) for c in listening] == [("127.0.0.1", srv.port)]


def test_port_in_use_is_one_line_error(demo, tmp_path):
    srv, _, _ = demo
    r = subprocess.run([sys.executable, "-m", "jobs.dashboard", "--db", str(tmp_path / "x.db"),
                        "--port", str(srv.port)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("chromaray dashboard: error: cannot listen on 127.0.0.1:")


def test_live_rows_from_a_second_process(tmp_path):
    """A writer process appends progress while the server answers: counts move."""
    db = tmp_path / "live.db"
    ids = populate(db)
    with DashboardServer(db) as srv:
        first = srv.json(f"/api/runs/{ids['fp']}")["stages"]["features"]["latest"]["done"]
        w = subprocess.Popen([sys.executable, "-c",
                              "import sys; from tests.pipeline.web.test_dashboard import live_writer; "
                              f"live_writer(sys.argv[1], {ids['fp']!r}, 50, 5, 0.2, 100)", str(db)], cwd=REPO)
        seen = {first}
        with contextlib.ExitStack() as stack:
            stack.callback(w.kill)
            while w.poll() is None:
                seen.add(srv.json(f"/api/runs/{ids['fp']}")["stages"]["features"]["latest"]["done"])
                time.sleep(0.1)
        assert w.returncode == 0
        seen.add(srv.json(f"/api/runs/{ids['fp']}")["stages"]["features"]["latest"]["done"])
        assert first == 50 and max(seen) == 55 and len(seen) >= 3
