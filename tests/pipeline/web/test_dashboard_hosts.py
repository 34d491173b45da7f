"""The dashboard answers only the Host names it is meant for (DNS rebinding), warns when it
listens beyond this machine, and shows a run whose process died as interrupted (a real
`python -m jobs.dashboard` process over HTTP, a real killed writer process)."""
from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from pipeline.web.dashboard import allowed_hosts, host_name, is_loopback
from tests.paths import REPO
from tests.pipeline.web.test_dashboard import DashboardServer, free_port, populate


def _get(port: int, path: str, host: str | None) -> tuple[int, bytes]:
    """GET with exactly the Host header given (None: no Host header at all)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        if host is not None:
            conn.putheader("Host", host)
        conn.endheaders()
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_host_header_names():
    assert host_name("127.0.0.1:8280") == "127.0.0.1"
    assert host_name("LocalHost.:80") == "localhost"
    assert host_name("[::1]:8280") == "::1" and host_name("[::1]") == "::1"
    assert host_name("evil.example") == "evil.example"
    for bad in ("", "::1", "[::1", "[::1]x", "a:b", "a:", "[::1]:x"):
        assert host_name(bad) is None, bad
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.3.4.5", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.2", "example.org"))
    assert allowed_hosts("127.0.0.1") == {"127.0.0.1", "localhost", "::1"}
    assert allowed_hosts("10.1.2.3", ["Dash.Example."]) == {"127.0.0.1", "localhost", "::1", "10.1.2.3",
                                                             "dash.example"}
    assert socket.gethostname().lower() in (allowed_hosts("0.0.0.0") or set())
    assert allowed_hosts("0.0.0.0", ["*"]) is None


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    db = tmp_path_factory.mktemp("hosts") / "chromaray.db"
    populate(db)
    with DashboardServer(db) as srv:
        yield srv


@pytest.mark.parametrize("path", ["/", "/api/errors", "/api/runs", "/api/status", "/assets/app.js"])
def test_a_foreign_host_header_is_refused(served, path):
    for host in ("evil.example", f"evil.example:{served.port}", "127.0.0.1.evil.example", None):
        status, body = _get(served.port, path, host)
        assert status == 400, (host, status)
        assert b"/music/" not in body
    for host in (f"127.0.0.1:{served.port}", f"localhost:{served.port}", "localhost", f"[::1]:{served.port}"):
        assert _get(served.port, path, host)[0] == 200, host


def test_binding_beyond_loopback_warns_and_still_checks_hosts(tmp_path):
    db = tmp_path / "c.db"
    populate(db)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "jobs.dashboard", "--db", str(db), "--host", "0.0.0.0",
                             "--port", str(port), "--allow-host", "dash.example"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            try:
                if _get(port, "/api/status", "localhost")[0] == 200:
                    break
            except OSError:
                time.sleep(0.2)
        assert _get(port, "/api/errors", "evil.example")[0] == 400
        assert _get(port, "/api/errors", f"{socket.gethostname()}:{port}")[0] == 200
        assert _get(port, "/api/errors", f"dash.example:{port}")[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    warning = [line for line in err.splitlines() if "warning" in line]
    assert len(warning) == 1 and "listening on 0.0.0.0, beyond this machine" in warning[0], err
    assert "dash.example" in warning[0]


def test_loopback_binding_does_not_warn(tmp_path):
    db = tmp_path / "c.db"
    populate(db)
    with DashboardServer(db) as srv:
        assert srv.proc is not None
    _, err = srv.proc.communicate(timeout=30)
    assert "chromaray dashboard: http://127.0.0.1:" in err and "warning" not in err, err


HOLDER = ("import sys, time; from pipeline.store import claim_run, open_db; "
          "print(claim_run(open_db(sys.argv[1]), 'fingerprint', heartbeat_s=0.2), flush=True); time.sleep(600)")


def test_a_killed_run_shows_interrupted_with_when_it_was_last_seen(tmp_path):
    db = tmp_path / "c.db"
    populate(db)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(db)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    run_id = holder.stdout.readline().strip()
    with DashboardServer(db) as srv:
        runs = {r["id"]: r for r in srv.json("/api/runs")["runs"]}
        assert runs[run_id]["status"] == "running" and runs[run_id]["pid"] == holder.pid
        time.sleep(0.6)
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        runs = {r["id"]: r for r in srv.json("/api/runs")["runs"]}
        dead = runs[run_id]
        assert (dead["status"], dead["stored_status"]) == ("interrupted", "running")
        assert dead["started_at"] < dead["last_seen_at"] <= time.time()
        detail = json.loads(srv.get(f"/api/runs/{run_id}")[2])
        assert detail["status"] == "interrupted" and detail["last_seen_at"] == dead["last_seen_at"]
        # The populated runs of this (live) test process still read as running.
        assert sorted(r["status"] for i, r in runs.items() if i != run_id) == ["running", "running"]


def test_a_version_3_database_is_shown_as_it_is(tmp_path):
    """A read-only page over a database of before the process columns: its runs are listed, and
    one left ``running`` long ago by a killed job reads interrupted (judged by its last update)."""
    from tests.pipeline.store.test_runs import _version_3

    db = tmp_path / "v3.db"
    old = _version_3(db)
    with DashboardServer(db) as srv:
        (run,) = srv.json("/api/runs")["runs"]
        assert (run["id"], run["status"], run["stored_status"], run["host"]) == ("old1", "interrupted", "running",
                                                                                 None)
        assert run["last_seen_at"] == old.replace(tzinfo=dt.timezone.utc).timestamp()
        assert srv.json("/api/runs/old1")["status"] == "interrupted"
