"""SQLite store (SQLAlchemy 2): tracks, their paths, features, fingerprints,
errors, runs, progress events and training metrics.

One writer: only the driver (or one actor) writes, in short transactions.
Rows are keyed by content hash so a re-run is a no-op and a crash mid-run
loses at most the batch that was in flight (it is recomputed next time).
Readers (dashboard, identify) open the file read-only.
"""
from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, inspect, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from actors.errors import ChromarayError
from pipeline.store.models import SCHEMA_VERSION, Base, Meta, ParquetPart, Run, TrainMetric, utcnow


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets the dashboard read while a job writes; busy_timeout rides out
    # the short write transactions of the single writer.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def open_db(path: str | os.PathLike, *, create: bool = True, readonly: bool = False) -> Engine:
    """Engine on a SQLite file; creates the schema when ``create``.

    ``readonly`` opens with ``mode=ro`` so a reader can never write.
    """
    p = Path(path).expanduser().resolve()
    if readonly:
        if not p.exists():
            raise ChromarayError(f"database {p} does not exist (run `chromaray fingerprint` first)")
        eng = create_engine(f"sqlite:///file:{p}?mode=ro&uri=true", future=True)
        event.listen(eng, "connect", lambda c, r: c.execute("PRAGMA busy_timeout=30000"))
        check_schema(eng, write=False)
        return eng
    if not p.parent.exists():
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ChromarayError(f"cannot create directory {p.parent} for the database: {exc.strerror}") from exc
    if not os.access(p.parent, os.W_OK):
        raise ChromarayError(f"cannot write the database: directory {p.parent} is not writable")
    eng = create_engine(f"sqlite:///{p}", future=True)
    event.listen(eng, "connect", _sqlite_pragmas)
    if create:
        Base.metadata.create_all(eng)
    check_schema(eng, write=create)
    return eng


def check_schema(engine: Engine, *, write: bool) -> int:
    """The database's schema version; raises when this code cannot use it.

    Version 1 (before the ``meta`` table existed) differs from 2 only by tables
    that ``create_all`` adds, so a writer upgrades it in place.
    """
    names = set(inspect(engine).get_table_names())
    if "runs" not in names:
        return SCHEMA_VERSION  # empty database (a reader waits for the first run)
    version = 1
    if "meta" in names:
        with Session(engine) as s:
            row = s.get(Meta, "schema_version")
            version = int(row.value) if row is not None else 1
    if version > SCHEMA_VERSION:
        raise ChromarayError(f"the database was written by a newer chromaray (schema {version}, this one reads "
                             f"{SCHEMA_VERSION}); upgrade chromaray or use another --db")
    if version < SCHEMA_VERSION and write:
        with Session(engine) as s, s.begin():
            s.merge(Meta(key="schema_version", value=str(SCHEMA_VERSION)))
        version = SCHEMA_VERSION
    return version


def new_run(engine: Engine, kind: str, *, name: str | None = None, config: dict | None = None,
            ray_address: str | None = None, ray_dashboard_url: str | None = None) -> str:
    run_id = uuid.uuid4().hex
    with Session(engine) as s, s.begin():
        s.add(Run(id=run_id, kind=kind, name=name, config=json.loads(json.dumps(config or {}, default=str)),
                  ray_address=ray_address, ray_dashboard_url=ray_dashboard_url))
    return run_id


def finish_run(engine: Engine, run_id: str, status: str, summary: dict | None = None, **counts: Any) -> None:
    with Session(engine) as s, s.begin():
        run = s.get(Run, run_id)
        if run is None:
            return
        run.status = status
        run.finished_at = run.updated_at = utcnow()
        if summary is not None:
            run.summary = json.loads(json.dumps(summary, default=str))
        for k, v in counts.items():
            setattr(run, k, v)


def known_parts(engine: Engine) -> set[str]:
    with Session(engine) as s:
        return set(s.scalars(select(ParquetPart.name)))


def parts_of(engine: Engine, dataset: str) -> list[str]:
    """Committed Parquet files of one dataset (relative names), oldest first."""
    with Session(engine) as s:
        return list(s.scalars(select(ParquetPart.name).where(ParquetPart.dataset == dataset)
                              .order_by(ParquetPart.created_at, ParquetPart.name)))


def record_metrics(engine: Engine, run_id: str, rows: Iterable[dict]) -> None:
    """Insert (or replace, on resume) training metrics rows {step, loss, lr, items_per_s, split}."""
    from sqlalchemy.dialects.sqlite import insert

    rows = [dict(r, run_id=run_id) for r in rows]
    if not rows:
        return
    with Session(engine) as s, s.begin():
        stmt = insert(TrainMetric).values(rows)
        stmt = stmt.on_conflict_do_update(
            index_elements=["run_id", "step", "split"],
            set_={c: stmt.excluded[c] for c in ("loss", "lr", "items_per_s", "ts")},
        )
        s.execute(stmt)
