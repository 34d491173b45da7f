"""Progress dashboard: a read-only FastAPI app over the results database.

Serves one static page (``pipeline/web/assets/``) that polls a small JSON API:

- ``GET /api/status``            database path, whether it exists, schema present
- ``GET /api/runs``              every run with its counters and latest per-stage progress
- ``GET /api/runs/{run_id}``     one run: per-stage progress series, throughput, ETA,
                                 per-actor batch sizes and memory, its errors, training metrics
- ``GET /api/errors``            all error rows (most recent first)

Read-only by construction: the database is opened with SQLite ``mode=ro`` (via
``pipeline.store.open_db(readonly=True)``) plus ``PRAGMA query_only``, so no
statement can write, and no table is ever created. Missing tables (an empty file,
or a job that has not created them yet) read as "no rows". Only the files listed in
the assets folder at start-up are served, looked up by exact name, so no request
path can reach any other file. The page puts every database string into the DOM
with ``textContent`` and the responses carry a strict Content-Security-Policy.

Times in the API are seconds since the Unix epoch (UTC); the database stores naive UTC.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import threading
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DatabaseError, OperationalError

from actors.errors import ChromarayError
from pipeline import store
from pipeline.store.runs import last_seen, run_rows
from pipeline.text import shown

__all__ = ["ASSETS_DIR", "DEFAULT_PORT", "LOOPBACK_HOSTS", "DashboardData", "allowed_hosts", "create_app",
           "host_name", "is_loopback", "serve"]


ASSETS_DIR = Path(__file__).resolve().parent / "assets"
DEFAULT_PORT = 8280
MAX_SERIES_POINTS = 400  # per plotted line; long runs are thinned, ends kept
ETA_WINDOW_S = 120.0  # throughput for the ETA is measured over the last two minutes
ERRORS_LIMIT = 1000
BATCH_ROWS_LIMIT = 50

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def _epoch(value: dt.datetime | str | None) -> float | None:
    """Naive-UTC datetime (as SQLAlchemy returns it) to Unix seconds."""
    if value is None:
        return None
    if isinstance(value, str):  # a row written by something other than SQLAlchemy
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.timestamp()


def _thin(rows: list[Any], limit: int = MAX_SERIES_POINTS) -> list[Any]:
    """At most ``limit`` evenly spaced rows, always keeping the first and the last."""
    n = len(rows)
    if n <= limit:
        return rows
    idx = sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)})
    return [rows[i] for i in idx]


class DashboardData:
    """Queries behind the API, on a database that may not exist yet.

    The engine is opened lazily, the first time the file exists, so the
    dashboard can be started before the job that creates the database.
    """

    def __init__(self, db_path: str | Path) -> None:
        self.db_path = Path(db_path).expanduser().resolve()
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    # -- connection -------------------------------------------------------
    def engine(self) -> Engine | None:
        if self._engine is not None:
            return self._engine
        with self._lock:
            if self._engine is None and self.db_path.exists():
                # mode=ro and query_only on every connection: even a bug in a query cannot write
                self._engine = store.open_db(self.db_path, readonly=True)
        return self._engine

    @staticmethod
    def _tables(conn: Connection) -> set[str]:
        return set(conn.execute(text("SELECT name FROM sqlite_master WHERE type='table'")).scalars())

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"db_path": str(self.db_path), "exists": self.db_path.exists(),
                               "schema": False, "error": None, "now": _epoch(store.utcnow())}
        if not out["exists"]:
            return out
        try:
            eng = self.engine()
            assert eng is not None
            with eng.connect() as conn:
                out["schema"] = "runs" in self._tables(conn)
        except (DatabaseError, ChromarayError) as exc:
            out["error"] = _db_error_text(exc)
        return out

    # -- runs -------------------------------------------------------------
    @staticmethod
    def _run_dict(r: Any, now: dt.datetime) -> dict[str, Any]:
        # A running row whose process is gone reads "interrupted" (the page cannot write it back).
        state = store.liveness(r, now=now)
        mapping = r._mapping
        return {
            "id": r.id, "kind": r.kind, "name": r.name,
            "status": "interrupted" if state == "dead" else r.status, "stored_status": r.status,
            "started_at": _epoch(r.started_at), "updated_at": _epoch(r.updated_at),
            "finished_at": _epoch(r.finished_at), "last_seen_at": _epoch(last_seen(r)),
            "host": mapping.get("host"), "pid": mapping.get("pid"), "ray_address": r.ray_address,
            "ray_dashboard_url": r.ray_dashboard_url,
            "n_total": r.n_total, "n_done": r.n_done, "n_skipped": r.n_skipped, "n_errors": r.n_errors,
            "audio_seconds": r.audio_seconds, "summary": r.summary or {},
        }

    @staticmethod
    def _latest_progress(conn: Connection, tables: set[str], run_id: str | None = None) -> dict[str, dict]:
        """{run_id: {stage: latest progress row}}."""
        if "progress" not in tables:
            return {}
        p = store.ProgressEvent.__table__
        last = select(func.max(p.c.id).label("id")).group_by(p.c.run_id, p.c.stage)
        if run_id is not None:
            last = last.where(p.c.run_id == run_id)
        q = select(p).where(p.c.id.in_(last.scalar_subquery())).order_by(p.c.id)
        out: dict[str, dict] = {}
        for r in conn.execute(q):
            out.setdefault(r.run_id, {})[r.stage] = {
                "ts": _epoch(r.ts), "done": r.done, "total": r.total, "errors": r.errors,
                "audio_seconds": r.audio_seconds}
        return out

    def runs(self) -> dict[str, Any]:
        st = self.status()
        st["runs"] = []
        if not st["exists"] or st["error"] or not st["schema"]:
            return st
        eng = self.engine()
        assert eng is not None
        with eng.connect() as conn:
            tables = self._tables(conn)
            rows = run_rows(conn)
            latest = self._latest_progress(conn, tables)
            now = store.utcnow()
            for r in rows:
                d = self._run_dict(r, now)
                d["stages"] = latest.get(r.id, {})
                d["last_update"] = max([d["updated_at"] or 0.0] + [s["ts"] or 0.0 for s in d["stages"].values()])
                st["runs"].append(d)
        return st

    def run(self, run_id: str) -> dict[str, Any] | None:
        """Everything the page shows for one run; None when there is no such run."""
        eng = self.engine()
        if eng is None:
            return None
        with eng.connect() as conn:
            tables = self._tables(conn)
            if "runs" not in tables:
                return None
            r = next(iter(run_rows(conn, run_id=run_id)), None)
            if r is None:
                return None
            out = self._run_dict(r, store.utcnow())
            out["stages"] = self._stages(conn, tables, run_id, running=out["status"] == "running",
                                         started_at=out["started_at"])
            out["last_update"] = max([out["updated_at"] or 0.0]
                                     + [s["latest"]["ts"] or 0.0 for s in out["stages"].values()])
            out["actors"], out["batch_log"] = self._batches(conn, tables, run_id)
            out["errors"] = self._errors(conn, tables, run_id=run_id)
            out["train_metrics"] = self._train(conn, tables, run_id)
            out["now"] = _epoch(store.utcnow())
        return out

    @staticmethod
    def _stages(conn: Connection, tables: set[str], run_id: str, *, running: bool,
                started_at: float | None = None) -> dict[str, Any]:
        if "progress" not in tables:
            return {}
        p = store.ProgressEvent.__table__
        rows = conn.execute(select(p.c.ts, p.c.stage, p.c.done, p.c.total, p.c.errors, p.c.audio_seconds,
                                   p.c.id).where(p.c.run_id == run_id).order_by(p.c.id)).all()
        by_stage: dict[str, list] = {}
        for row in rows:
            by_stage.setdefault(row.stage, []).append(row)
        stages: dict[str, Any] = {}
        for stage, srows in by_stage.items():
            # A file is "handled" once it is done or failed: throughput and ETA count both,
            # so a run with errors still reaches 100 % and an ETA of zero.
            pts = [(_epoch(x.ts) or 0.0, x.done + x.errors, x.total, x.done, x.errors, x.audio_seconds)
                   for x in srows]
            # Each run counts from zero at its start: anchoring there gives a first
            # throughput figure even when a short job reports only at the end.
            if started_at is not None and started_at < pts[0][0] and pts[0][1] > 0:
                pts.insert(0, (started_at, 0, pts[0][2], 0, 0, 0.0))
            last = pts[-1]
            # Throughput between consecutive plotted points (files/s, audio s per wall s).
            thin = _thin(pts)
            series = []
            for i, (t, handled, total, done, errs, audio) in enumerate(thin):
                rate = audio_rate = None
                if i > 0 and t > thin[i - 1][0]:
                    dt_s = t - thin[i - 1][0]
                    rate = max(0.0, (handled - thin[i - 1][1]) / dt_s)
                    audio_rate = max(0.0, (audio - thin[i - 1][5]) / dt_s)
                series.append({"t": t, "done": done, "total": total, "errors": errs, "handled": handled,
                               "audio_seconds": audio, "files_per_s": rate, "audio_x": audio_rate})
            # Recent rate for the ETA: the oldest point inside the window before the last one.
            ref = next((q for q in pts if q[0] >= last[0] - ETA_WINDOW_S and q is not last), None)
            if ref is None and len(pts) > 1:
                ref = pts[-2]
            recent = None
            if ref is not None and last[0] > ref[0]:
                recent = max(0.0, (last[1] - ref[1]) / (last[0] - ref[0]))
            overall = None
            if len(pts) > 1 and last[0] > pts[0][0]:
                overall = max(0.0, (last[1] - pts[0][1]) / (last[0] - pts[0][0]))
            remaining = max(0, last[2] - last[1])
            eta = None
            if remaining == 0:
                eta = 0.0
            elif running and recent:
                eta = remaining / recent
            detail = conn.execute(select(p.c.detail).where(p.c.id == srows[-1].id)).scalar()
            stages[stage] = {
                "latest": {"ts": last[0], "done": last[3], "total": last[2], "errors": last[4],
                           "handled": last[1], "audio_seconds": last[5]},
                "files_per_s_recent": recent, "files_per_s_overall": overall, "eta_s": eta,
                "n_points": len(srows), "series": series, "detail": detail or {},
            }
        return stages

    @staticmethod
    def _batches(conn: Connection, tables: set[str], run_id: str) -> tuple[list, list]:
        if "batch_log" not in tables:
            return [], []
        b = store.BatchLog.__table__
        agg = conn.execute(
            select(b.c.actor, func.count().label("n_batches"), func.sum(b.c.n_tracks).label("tracks"),
                   func.avg(b.c.n_tracks).label("mean_tracks"), func.max(b.c.n_tracks).label("max_tracks"),
                   func.sum(b.c.audio_seconds).label("audio_seconds"),
                   func.sum(b.c.oom_splits).label("oom_splits"), func.sum(b.c.time_chunked).label("time_chunked"),
                   func.max(b.c.peak_bytes).label("peak_bytes"), func.max(b.c.budget_bytes).label("budget_bytes"),
                   func.max(b.c.id).label("last_id"))
            .where(b.c.run_id == run_id).group_by(b.c.actor).order_by(b.c.actor)).all()
        actors = []
        for a in agg:
            last = conn.execute(select(b).where(b.c.id == a.last_id)).one()
            actors.append({
                "actor": a.actor, "device": last.device, "n_batches": a.n_batches, "tracks": a.tracks,
                "mean_tracks": a.mean_tracks, "max_tracks": a.max_tracks, "last_tracks": last.n_tracks,
                "audio_seconds": a.audio_seconds, "oom_splits": a.oom_splits, "time_chunked": a.time_chunked,
                "peak_bytes": a.peak_bytes, "last_peak_bytes": last.peak_bytes, "budget_bytes": a.budget_bytes,
                "last_ts": _epoch(last.ts)})
        recent = conn.execute(select(b).where(b.c.run_id == run_id).order_by(b.c.id.desc())
                              .limit(BATCH_ROWS_LIMIT)).all()
        rows = [{"ts": _epoch(x.ts), "actor": x.actor, "device": x.device, "n_tracks": x.n_tracks,
                 "audio_seconds": x.audio_seconds, "oom_splits": x.oom_splits, "time_chunked": x.time_chunked,
                 "budget_bytes": x.budget_bytes, "peak_bytes": x.peak_bytes} for x in recent]
        return actors, rows

    @staticmethod
    def _errors(conn: Connection, tables: set[str], *, run_id: str | None = None,
                limit: int = ERRORS_LIMIT) -> list[dict]:
        if "errors" not in tables:
            return []
        e = store.ErrorRow.__table__
        q = select(e).order_by(e.c.last_seen.desc(), e.c.id.desc()).limit(limit)
        if run_id is not None:
            q = q.where(e.c.run_id == run_id)
        return [{"id": x.id, "path": x.path, "content_hash": x.content_hash, "stage": x.stage,
                 "reason": x.reason, "run_id": x.run_id, "first_seen": _epoch(x.first_seen),
                 "last_seen": _epoch(x.last_seen)} for x in conn.execute(q)]

    @staticmethod
    def _train(conn: Connection, tables: set[str], run_id: str) -> dict[str, list]:
        if "train_metrics" not in tables:
            return {}
        m = store.TrainMetric.__table__
        rows = conn.execute(select(m.c.split, m.c.step, m.c.ts, m.c.loss, m.c.lr, m.c.items_per_s)
                            .where(m.c.run_id == run_id).order_by(m.c.split, m.c.step)).all()
        out: dict[str, list] = {}
        for x in rows:
            out.setdefault(x.split, []).append({"step": x.step, "t": _epoch(x.ts), "loss": x.loss,
                                                "lr": x.lr, "items_per_s": x.items_per_s})
        return {k: _thin(v, 1000) for k, v in out.items()}

    def errors(self, limit: int = ERRORS_LIMIT) -> dict[str, Any]:
        st = self.status()
        st["errors"] = []
        eng = self.engine() if st["exists"] and not st["error"] else None
        if eng is not None:
            with eng.connect() as conn:
                tables = self._tables(conn)
                st["errors"] = self._errors(conn, tables, limit=limit)
                if "errors" in tables:
                    st["n_errors_total"] = conn.execute(
                        select(func.count()).select_from(store.ErrorRow.__table__)).scalar()
        return st


def _db_error_text(exc: BaseException) -> str:
    if isinstance(exc, DatabaseError):
        return f"cannot read the database: {exc.orig}"
    return str(exc)


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})


def is_loopback(host: str) -> bool:
    """Whether an interface name or address reaches only this machine."""
    h = host.strip("[]").rstrip(".").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def allowed_hosts(bind_host: str = "127.0.0.1", extra: Iterable[str] = ()) -> frozenset[str] | None:
    """Host header names the dashboard answers (None: any). Loopback names always; the ``--host``
    it listens on when that is not loopback (for a wildcard, this machine's own names and
    addresses); plus ``extra`` (``--allow-host``; ``*`` accepts any name). Checking the name
    defeats DNS rebinding: a page of evil.example re-pointed at 127.0.0.1 still sends its own name."""
    names = set(LOOPBACK_HOSTS)
    h = bind_host.strip("[]").rstrip(".").lower()
    if h in WILDCARD_HOSTS:
        import contextlib
        import socket

        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
        with contextlib.suppress(OSError):
            names |= {str(info[4][0]).lower() for info in socket.getaddrinfo(socket.gethostname(), None)}
    else:
        names.add(h)
    for name in extra:
        if name.strip() == "*":
            return None
        names.add(name.strip().strip("[]").rstrip(".").lower())
    return frozenset(names)


def host_name(header: str) -> str | None:
    """The name in a Host header (``[::1]:8280`` -> ``::1``, ``Localhost.:80`` -> ``localhost``);
    None when the value is malformed."""
    v = header.strip().lower()
    port = ""
    if v.startswith("["):
        end = v.find("]")
        if end < 0:
            return None
        name, rest = v[1:end], v[end + 1:]
        if rest:
            if not rest.startswith(":"):
                return None
            port = rest[1:]
    elif v.count(":") == 1:
        name, port = v.split(":")
        if not port:
            return None
    elif ":" in v:
        return None  # a bare IPv6 address is not a valid Host header
    else:
        name = v
    if port and not port.isdigit():
        return None
    name = name.rstrip(".")
    return name or None


def create_app(db_path: str | Path, *, hosts: frozenset[str] | None = LOOPBACK_HOSTS) -> Any:
    """The FastAPI application serving the page and the JSON API for ``db_path``, answering
    only requests whose Host header names one of ``hosts`` (None: any; see :func:`allowed_hosts`)."""
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import FileResponse, JSONResponse

    data = DashboardData(db_path)
    # Exactly the files present at start-up, by name; nothing else is reachable.
    assets = {p.name: p for p in ASSETS_DIR.iterdir() if p.is_file()}
    media = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
             ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}

    app = FastAPI(title="chromaray dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.data = data

    @app.middleware("http")
    async def _headers(request: Request, call_next: Callable[[Request], Awaitable[Any]]) -> Any:
        name = host_name(request.headers.get("host", ""))
        try:
            if hosts is not None and name not in hosts:
                response = JSONResponse({"error": "this Host header is not served (start the dashboard with "
                                                  "--allow-host NAME to serve that name)"}, status_code=400)
            else:
                response = await call_next(request)
        except (OperationalError, DatabaseError) as exc:  # e.g. the file is not a database
            response = JSONResponse({"error": _db_error_text(exc)}, status_code=503)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    def _asset(name: str) -> FileResponse:
        path = assets.get(name)
        if path is None:
            raise HTTPException(status_code=404, detail="not found")
        return FileResponse(path, media_type=media.get(path.suffix, "application/octet-stream"))

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return _asset("index.html")

    @app.get("/assets/{name}", include_in_schema=False)
    def asset(name: str) -> FileResponse:
        return _asset(name)

    @app.get("/api/status")
    def api_status() -> dict:
        return data.status()

    @app.get("/api/runs")
    def api_runs() -> dict:
        return data.runs()

    @app.get("/api/runs/{run_id}")
    def api_run(run_id: str) -> dict:
        out = data.run(run_id)
        if out is None:
            raise HTTPException(status_code=404, detail="no such run")
        return out

    @app.get("/api/errors")
    def api_errors(limit: int = ERRORS_LIMIT) -> dict:
        return data.errors(limit=max(1, min(limit, 10 * ERRORS_LIMIT)))

    return app


def serve(db_path: str | Path, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
          allow_hosts: Iterable[str] = ()) -> None:
    """Run the dashboard until interrupted (blocking); see :func:`allowed_hosts` for ``allow_hosts``."""
    import socket
    import sys

    import uvicorn

    # Fail with one clear line instead of uvicorn's log when the port is taken.
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as exc:
        raise ChromarayError(f"cannot listen on {host}:{port}: {exc.strerror or exc} "
                             "(choose another --port or --host)") from exc
    hosts = allowed_hosts(host, allow_hosts)
    app = create_app(db_path, hosts=hosts)
    db = app.state.data.db_path
    bound = f"[{host}]" if ":" in host else host
    print(f"chromaray dashboard: http://{shown(bound)}:{port}/  (database {shown(db)}, read-only)",
          file=sys.stderr)
    if not is_loopback(host):
        names = "any name" if hosts is None else ", ".join(sorted(hosts))
        print(f"chromaray dashboard: warning: listening on {shown(host)}, beyond this machine: anyone who can reach "
              f"port {port} can read the library's file names and errors (there is no login). "
              f"Host names answered: {names}", file=sys.stderr)
    elif hosts is None:
        print("chromaray dashboard: warning: --allow-host '*' answers any Host header, so a web page "
              "re-pointed at this machine (DNS rebinding) can read it", file=sys.stderr)
    if not db.exists():
        print(f"chromaray dashboard: warning: database {shown(db)} does not exist yet; "
              "the page says so and waits for it", file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
