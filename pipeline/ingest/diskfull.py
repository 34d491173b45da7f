"""A full disk under a fingerprint run, told in one line: which folder filled up and what is safe.

A full disk is not a file's fault, so it is never an error row: the run stops. Nothing is lost by
stopping: a Parquet part is listed in the same SQLite transaction as its rows, so what was
committed before the disk filled stays consistent, and a part or transaction cut off by the full
disk is removed or rolled back by the next run, which computes the rest.
"""
from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

__all__ = ["LOW_SPACE_BYTES", "disk_full_message", "is_disk_full"]

#: A folder with less free space than this is reported as the full one (SQLite and Parquet fail
#: on a page or a row group that does not fit, long before the last byte is used).
LOW_SPACE_BYTES = 4 << 20

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
# How the full disk reads once wrapped: SQLite's own message, pyarrow's, and Ray's task errors
# (a worker's OSError reaches the driver as text inside a RayTaskError).
_FULL_TEXTS = ("database or disk is full", "no space left on device", "disk quota exceeded", "[errno 28]")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        wrapped = (e.__cause__, e.__context__, getattr(e, "cause", None), getattr(e, "orig", None))
        todo.extend(w for w in wrapped if isinstance(w, BaseException))


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps: SQLAlchemy, Ray task errors) is a full file system."""
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in _FULL_ERRNOS:
            return True
        text = str(e).lower()
        if any(t in text for t in _FULL_TEXTS):
            return True
    return False


def _free(folder: Path) -> int | None:
    p = folder
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def _named_path(exc: BaseException) -> str | None:
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in _FULL_ERRNOS and e.filename:
            return os.fspath(e.filename)
    return None


def _committed(db: Path) -> str:
    """What this process's run had committed, read back from the database itself."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from pipeline.store import Run, Track, open_db

    try:
        engine = open_db(db, readonly=True)
        try:
            with Session(engine) as s:
                run = s.scalars(select(Run).where(Run.kind == "fingerprint", Run.pid == os.getpid())
                                .order_by(Run.started_at.desc()).limit(1)).first()
                total = s.scalar(select(func.count()).select_from(Track)) or 0
                if run is None:
                    return f"the database holds {total} track(s)"
                return (f"this run committed {run.n_done} track(s) and {run.n_errors} error row(s) before it "
                        f"stopped; the database holds {total} track(s)")
        finally:
            engine.dispose()
    except Exception:  # noqa: BLE001 - the message must come out even if the database cannot be read
        return "what was committed before it stopped is kept"


def disk_full_message(exc: BaseException, *, db: str | os.PathLike, out: str | os.PathLike) -> str | None:
    """One line for a full disk under ``--db`` or ``--out`` (None if ``exc`` is something else)."""
    db_path = Path(db).expanduser().resolve()
    folders = {"--out": Path(out).expanduser().resolve(), "--db": db_path.parent}
    if not is_disk_full(exc):
        # SQLite says "disk I/O error" when it cannot create or grow its -wal/-shm files on a full
        # disk (opening a WAL database needs 32 KiB for -shm): a full disk when the folder is.
        low = (_free(db_path.parent) or LOW_SPACE_BYTES) < LOW_SPACE_BYTES
        if not (low and any("disk i/o error" in str(e).lower() for e in _chain(exc))):
            return None
    named = _named_path(exc)
    full = [(opt, f) for opt, f in folders.items()
            if (named is not None and Path(named).resolve().is_relative_to(f))
            or ((free := _free(f)) is not None and free < LOW_SPACE_BYTES)]
    if not full:  # the space came back already, or it was a temporary folder: say what we know
        where = f"no space left on device ({named})" if named else "no space left on device"
    else:
        if len({f for _, f in full}) == 1 and len(full) == 2:
            full = full[:1]
            full[0] = ("--out and --db", full[0][1])
        where = "no space left on device: " + " and ".join(
            f"{f} ({opt}, {(_free(f) or 0) // 1024} KiB free)" for opt, f in full) + " is full"
    return (f"{where}; {_committed(db_path)}; the database and the listed Parquet parts are consistent. "
            "Free some space and run the same command again to process the rest")
