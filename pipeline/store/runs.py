"""Which runs are alive: one writer per database, heartbeats, and runs whose process died.

Every run row names the process behind it (``host``, ``pid``, the pid's start time). A run
that writes the library (``chromaray fingerprint``) is started with :func:`claim_run`:

- **One writer.** In one ``BEGIN IMMEDIATE`` transaction (SQLite's write lock, so two claims
  are serialised) it looks for a live run of the same kind; if there is one it refuses with
  :class:`WriterBusy` (one line: that run's id, host, pid and start time) and writes nothing.
  Otherwise it inserts its own ``running`` row in the same transaction: the row is the lock.
  The claim comes before the run touches anything (the start-up cleanup of leftover Parquet
  parts included), so that cleanup never sees a part of a live run.
- **Crash-proof.** Nothing has to be released: a run whose process is gone simply stops being
  alive. On its own host a run is alive while its pid exists (not a zombie) with the same start
  time (a reused pid is another process); a stopped (SIGSTOP) process is still alive. From another
  host the heartbeat decides: a daemon thread stamps ``heartbeat_at`` every ``heartbeat_s``
  seconds, and a run not seen for ``max(STALE_S, 6 * heartbeat_s)`` is dead.
- **Dead runs are recognised.** :func:`liveness` is what the next claim, ``chromaray runs`` and
  the dashboard use: a ``running`` row whose process is gone reads ``interrupted``, with the time
  it was last seen alive; the next claim (a writer) stores that status.

Readers never take the lock (WAL: they read while the writer writes).
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

try:
    import fcntl
except ImportError:  # Windows: output folders are not locked
    fcntl = None  # type: ignore[assignment]
from sqlalchemy import insert, inspect, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from actors.errors import ChromarayError
from pipeline.store.models import Run, utcnow

__all__ = ["HEARTBEAT_S", "LEGACY_STALE_S", "LOCK_NAME", "STALE_S", "FolderBusy", "FolderLock", "Heartbeat",
           "ProcessId", "WriterBusy", "adopt_run", "claim_run", "describe", "last_seen", "list_runs", "live_writer",
           "liveness", "process_alive", "run_rows", "stop_heartbeat", "this_process"]

log = logging.getLogger(__name__)

HEARTBEAT_S = 5.0
LOCK_NAME = ".chromaray-writer.lock"
#: A run of another host not seen for this long (at least; 6 heartbeats) is taken for dead.
STALE_S = 60.0
#: A run of before schema 4 (no host, no heartbeat) not updated for this long is taken for dead.
LEGACY_STALE_S = 900.0

_BEATING: dict[str, Heartbeat] = {}  # run id -> heartbeat of a run of this process


@dataclass(frozen=True)
class ProcessId:
    host: str
    pid: int
    started: float | None  # Unix seconds; tells a reused pid from the original process


def this_process() -> ProcessId:
    try:
        started: float | None = psutil.Process().create_time()
    except psutil.Error:
        started = None
    return ProcessId(socket.gethostname(), os.getpid(), started)


def process_alive(pid: int, started: float | None) -> bool:
    """Whether ``pid`` on this host is still the process that started at ``started``."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:  # killed, not yet reaped by its parent
            return False
        return started is None or abs(proc.create_time() - started) < 1.0
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # someone else's process exists under that pid: assume it is the run


def _get(row: Any, key: str) -> Any:
    """A column of a Core row, a mapping or an ORM object; None when absent (an older database)."""
    if isinstance(row, Mapping):
        return row.get(key)
    mapping = getattr(row, "_mapping", None)
    if mapping is not None:
        return mapping.get(key)
    return getattr(row, key, None)


def last_seen(row: Any) -> dt.datetime | None:
    """When the run was last known alive: its latest heartbeat or update (naive UTC)."""
    stamps = [t for t in (_get(row, "heartbeat_at"), _get(row, "updated_at"), _get(row, "started_at"))
              if isinstance(t, dt.datetime)]
    return max(stamps) if stamps else None


def liveness(row: Any, *, now: dt.datetime | None = None, me: ProcessId | None = None) -> str:
    """``ended`` (not running), ``alive``, ``dead`` or ``unknown`` (another host's run without a
    heartbeat: nothing tells). Rows of before schema 4 (no host) are judged by their last update
    (dead after :data:`LEGACY_STALE_S`)."""
    if _get(row, "status") != "running":
        return "ended"
    me = me or this_process()
    host, pid, hb_s = _get(row, "host"), _get(row, "pid"), _get(row, "heartbeat_s")
    if host is not None and pid is not None and host == me.host:
        started = _get(row, "pid_started")
        if pid == me.pid and (started is None or me.started is None or abs(started - me.started) < 1.0):
            # This very process: a heartbeat run lives while its heartbeat does (a test may run
            # several); a run without one lives as long as the process.
            return "alive" if hb_s is None or _get(row, "id") in _BEATING else "dead"
        return "alive" if process_alive(int(pid), started) else "dead"
    if host is not None and hb_s is None:
        return "unknown"
    seen = last_seen(row)
    if seen is None:
        return "unknown"
    # Rows of before schema 4 tell nothing but their last update, which came only at commits.
    window = LEGACY_STALE_S if host is None else max(STALE_S, 6.0 * float(hb_s or 0.0))
    return "alive" if ((now or utcnow()) - seen).total_seconds() < window else "dead"


def _utc(t: dt.datetime | None) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S UTC") if t is not None else "?"


def _plain(value: Any) -> str:
    s = str(value)
    return s if s.isprintable() else s.encode("unicode_escape").decode("ascii")


def describe(row: Any) -> str:
    """``run 1a2b3c4d5e6f on host h, pid 123, started 2026-12-01 22:10:03 UTC``."""
    return (f"run {_plain(_get(row, 'id'))[:12]} on host {_plain(_get(row, 'host') or '?')}, "
            f"pid {_get(row, 'pid') or '?'}, started {_utc(_get(row, 'started_at'))}")


class WriterBusy(ChromarayError):
    """A live run already writes this database."""

    def __init__(self, holder: Any, *, now: dt.datetime | None = None) -> None:
        seen = last_seen(holder)
        age = f"; last seen alive {max(0, int(((now or utcnow()) - seen).total_seconds()))} s ago" if seen else ""
        super().__init__(f"another {_plain(_get(holder, 'kind'))} run is writing this database: "
                         f"{describe(holder)}{age}. Wait for it to end, or use another --db and --out")
        self.holder_id = str(_get(holder, "id"))


def run_rows(conn: Connection, *, limit: int | None = None, running_only: bool = False,
             run_id: str | None = None) -> list[Any]:
    """Run rows, newest first, with whichever columns the database has (an older one lacks
    the process columns; :func:`liveness` then judges by the last update)."""
    present = {c["name"] for c in inspect(conn).get_columns("runs")}
    t = Run.__table__
    q = select(*[c for c in t.c if c.name in present]).order_by(t.c.started_at.desc(), t.c.id)
    if running_only:
        q = q.where(t.c.status == "running")
    if run_id is not None:
        q = q.where(t.c.id == run_id)
    if limit is not None:
        q = q.limit(limit)
    return list(conn.execute(q))


def list_runs(engine: Engine, *, limit: int | None = None) -> list[dict[str, Any]]:
    """Every run (newest first) as plain values, its status as the readers show it: a
    ``running`` run whose process is gone is ``interrupted``."""
    now, me = utcnow(), this_process()
    with engine.connect() as conn:
        if "runs" not in inspect(conn).get_table_names():
            return []
        rows = run_rows(conn, limit=limit)
    out = []
    for r in rows:
        state = liveness(r, now=now, me=me)
        out.append({
            "id": r.id, "kind": r.kind, "name": r.name,
            "status": "interrupted" if state == "dead" else r.status, "stored_status": r.status,
            "alive": {"alive": True, "unknown": None}.get(state, False), "started_at": r.started_at,
            "finished_at": r.finished_at, "last_seen_at": last_seen(r), "host": _get(r, "host"),
            "pid": _get(r, "pid"), "heartbeat": _get(r, "heartbeat_s") is not None, "n_total": r.n_total,
            "n_done": r.n_done, "n_skipped": r.n_skipped, "n_errors": r.n_errors,
            "audio_seconds": r.audio_seconds})
    return out


def live_writer(engine: Engine, kind: str = "fingerprint") -> dict[str, Any] | None:
    """The live run holding ``kind``'s writer role of the database (as :func:`list_runs` gives
    it), or None: for a reader that would rather not write while a run does (an index sync)."""
    return next((r for r in list_runs(engine) if r["kind"] == kind and r["status"] == "running"
                 and r["alive"] and r.get("heartbeat")), None)


def claim_run(engine: Engine, kind: str, *, name: str | None = None, config: dict | None = None,
              out_dir: str | os.PathLike[str] | None = None, exclusive: bool = True,
              heartbeat_s: float = HEARTBEAT_S) -> str:
    """Start a run of ``kind`` that holds the database's writer role (and ``out_dir``'s, see
    :class:`FolderLock`); returns its id.

    Raises :class:`WriterBusy` (or :class:`FolderBusy`), having written nothing, when a live run
    of ``kind`` holds it (``exclusive``). Runs found dead on the way are stored as
    ``interrupted``. The run's heartbeat (and folder lock) start here and stop in
    :func:`pipeline.store.db.finish_run`.
    """
    me, now = this_process(), utcnow()
    run_id = uuid.uuid4().hex
    folder = FolderLock(Path(out_dir)) if out_dir is not None and exclusive else None
    with engine.connect() as base:
        conn = base.execution_options(isolation_level="AUTOCOMMIT")  # so BEGIN IMMEDIATE is ours
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except OperationalError as exc:  # busy past busy_timeout: a writer stuck mid-transaction
            raise ChromarayError(f"the database is locked by another process ({exc.orig}); a run paused or "
                                 "hung in the middle of a write holds it") from exc
        try:
            dead, holder = [], None
            for r in run_rows(conn, running_only=True):
                state = liveness(r, now=now, me=me)
                if state == "dead":
                    dead.append(r.id)
                elif (exclusive and holder is None and r.kind == kind and _get(r, "heartbeat_s") is not None
                      and state == "alive"):
                    holder = r
            if holder is not None:
                raise WriterBusy(holder, now=now)
            if folder is not None:  # no live run of this database: one of another may use the folder
                folder.acquire()
            if dead:
                conn.execute(update(Run).where(Run.id.in_(dead), Run.status == "running")
                             .values(status="interrupted"))
            conn.execute(insert(Run).values(
                id=run_id, kind=kind, name=name, status="running", started_at=now, updated_at=now,
                config=json.loads(json.dumps(config or {}, default=str)), host=me.host, pid=me.pid,
                pid_started=me.started, heartbeat_at=now, heartbeat_s=heartbeat_s))
            conn.exec_driver_sql("COMMIT")
        except BaseException:
            conn.exec_driver_sql("ROLLBACK")
            if folder is not None:
                folder.release()
            raise
    if dead:
        log.info("marked %d run(s) whose process is gone as interrupted", len(dead))
    if folder is not None:
        folder.describe({"id": run_id, "kind": kind, "host": me.host, "pid": me.pid,
                         "started_at": now.isoformat(), "db": str(engine.url.database)})
    Heartbeat(engine, run_id, heartbeat_s, folder=folder).start()
    return run_id


def adopt_run(engine: Engine, run_id: str, heartbeat_s: float = HEARTBEAT_S) -> None:
    """Make this process the one behind an existing ``running`` row (a new run without a writer
    lock, or one resumed by a later process, like ``chromaray train`` with a known name) and start
    its heartbeat: without it, a resumed run would still name the process that died, and the next
    claim would store it as ``interrupted`` while it trains; from another host nothing would tell."""
    me, now = this_process(), utcnow()
    with engine.begin() as conn:
        conn.execute(update(Run).where(Run.id == run_id).values(
            host=me.host, pid=me.pid, pid_started=me.started, heartbeat_at=now, heartbeat_s=heartbeat_s))
    stop_heartbeat(run_id)
    Heartbeat(engine, run_id, heartbeat_s).start()


class FolderBusy(ChromarayError):
    """A live run (of another database) writes to this output folder."""


class FolderLock:
    """An exclusive ``flock`` on ``<out>/.chromaray-writer.lock``, held while a run writes there.

    The database lock cannot see a run of *another* database writing Parquet into the same
    folder, whose parts this run's start-up cleanup would take for leftovers. The operating system
    drops the lock when the process dies, so a crash never leaves it held; the file keeps the
    holder's description (for the refusal message), which is not the lock itself. Where there is
    no ``fcntl`` (Windows) the folder is not locked.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        if fcntl is None:
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            log.warning("output folder not locked (%s): %s", self.path, exc.strerror)
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            info = self._holder(fd)
            os.close(fd)
            started = _plain(info.get("started_at", "?"))[:19].replace("T", " ")
            who = (f"run {_plain(info.get('id', '?'))[:12]} on host {_plain(info.get('host', '?'))}, pid "
                   f"{_plain(info.get('pid', '?'))}, started {started} UTC, database {_plain(info.get('db', '?'))}")
            raise FolderBusy(f"another run is writing to the output folder {_plain(self.path.parent)}: {who}. "
                             "Wait for it to end, or use another --out") from None
        self._fd = fd

    @staticmethod
    def _holder(fd: int) -> dict[str, Any]:
        try:
            info = json.loads(os.pread(fd, 4096, 0) or b"{}")
            return info if isinstance(info, dict) else {}
        except (OSError, ValueError):
            return {}

    def describe(self, info: dict[str, Any]) -> None:
        if self._fd is None:
            return
        try:
            data = json.dumps(info).encode()
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, data, 0)
        except OSError as exc:  # a full disk: the lock holds all the same
            log.warning("could not describe the run in %s: %s", self.path, exc.strerror)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


class Heartbeat:
    """A daemon thread stamping ``heartbeat_at`` on a running run every ``interval_s`` seconds.

    A failed stamp (the database busy past its timeout, a full disk) is logged once and retried:
    it only makes the run look older to other hosts, it never stops the run.
    """

    def __init__(self, engine: Engine, run_id: str, interval_s: float = HEARTBEAT_S, *,
                 folder: FolderLock | None = None) -> None:
        self.engine, self.run_id, self.interval_s, self.folder = engine, run_id, interval_s, folder
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"chromaray-heartbeat-{run_id[:8]}", daemon=True)
        self._warned = False

    def start(self) -> None:
        _BEATING[self.run_id] = self
        self._thread.start()

    def beat(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(Run).where(Run.id == self.run_id, Run.status == "running")
                         .values(heartbeat_at=utcnow()))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.beat()
            except (SQLAlchemyError, OSError) as exc:
                if not self._warned:
                    log.warning("run %s: heartbeat not stored (%s); retrying", self.run_id[:12], exc)
                    self._warned = True

    def stop(self) -> None:
        self._stop.set()
        _BEATING.pop(self.run_id, None)
        if self.folder is not None:
            self.folder.release()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.interval_s + 1.0)


def stop_heartbeat(run_id: str) -> None:
    """Stop the heartbeat of a run of this process (no-op for a run without one)."""
    beat = _BEATING.get(run_id)
    if beat is not None:
        beat.stop()
