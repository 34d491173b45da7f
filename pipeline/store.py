"""SQLite store (SQLAlchemy 2): tracks, their paths, features, fingerprints,
errors, runs, progress events and training metrics.

One writer: only the driver (or one actor) writes, in short transactions.
Rows are keyed by content hash so a re-run is a no-op and a crash mid-run
loses at most the batch that was in flight (it is recomputed next time).
Readers (dashboard, identify) open the file read-only.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from pathlib import Path
from typing import Any, Iterable

from sqlalchemy import (
    JSON,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    create_engine,
    event,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from actors.errors import ChromarayError

SCHEMA_VERSION = 1


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Run(Base):
    """One invocation of a job (fingerprint, train, ...)."""

    __tablename__ = "runs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))  # fingerprint | train | index
    name: Mapped[str | None] = mapped_column(String(200), default=None)
    status: Mapped[str] = mapped_column(String(16), default="running")  # running|finished|failed|stopped
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    ray_address: Mapped[str | None] = mapped_column(String(200), default=None)
    ray_dashboard_url: Mapped[str | None] = mapped_column(String(200), default=None)
    config: Mapped[dict] = mapped_column(JSON, default=dict)
    n_total: Mapped[int] = mapped_column(Integer, default=0)
    n_done: Mapped[int] = mapped_column(Integer, default=0)
    n_skipped: Mapped[int] = mapped_column(Integer, default=0)
    n_errors: Mapped[int] = mapped_column(Integer, default=0)
    audio_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    summary: Mapped[dict] = mapped_column(JSON, default=dict)


class Track(Base):
    """One distinct content (audio or MIDI), whatever paths it lives at."""

    __tablename__ = "tracks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    content_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    kind: Mapped[str] = mapped_column(String(8))  # audio | midi
    format: Mapped[str] = mapped_column(String(16))
    size_bytes: Mapped[int] = mapped_column(Integer)
    duration_s: Mapped[float] = mapped_column(Float)
    source_sample_rate: Mapped[int | None] = mapped_column(Integer, default=None)
    channels: Mapped[int | None] = mapped_column(Integer, default=None)
    n_frames: Mapped[int] = mapped_column(Integer, default=0)
    features_version: Mapped[str] = mapped_column(String(32))
    parquet_part: Mapped[str | None] = mapped_column(String(200), default=None)
    run_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class TrackPath(Base):
    """Where a content lives. A moved file updates this row, not the track."""

    __tablename__ = "track_paths"
    path: Mapped[str] = mapped_column(Text, primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(Integer)
    mtime_ns: Mapped[int] = mapped_column(Integer)
    last_seen_run: Mapped[str] = mapped_column(String(32))


class Feature(Base):
    """Per-track summary statistics (per-frame arrays live in Parquet)."""

    __tablename__ = "features"
    content_hash: Mapped[str] = mapped_column(
        String(64), ForeignKey("tracks.content_hash", ondelete="CASCADE"), primary_key=True
    )
    frame_rate_hz: Mapped[float] = mapped_column(Float)
    tempo_bpm: Mapped[float] = mapped_column(Float)
    onset_mean: Mapped[float] = mapped_column(Float)
    onset_std: Mapped[float] = mapped_column(Float)
    harmonic_ratio: Mapped[float] = mapped_column(Float)  # harmonic energy / total
    rms_mean: Mapped[float] = mapped_column(Float)
    chroma_mean: Mapped[list] = mapped_column(JSON)  # 12 floats, C..B
    key_estimate: Mapped[str | None] = mapped_column(String(8), default=None)
    extra: Mapped[dict] = mapped_column(JSON, default=dict)


class Fingerprint(Base):
    """Sub-fingerprint codes of a track (uint32 little-endian bytes)."""

    __tablename__ = "fingerprints"
    content_hash: Mapped[str] = mapped_column(
        String(64), ForeignKey("tracks.content_hash", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[str] = mapped_column(String(32))
    frame_rate_hz: Mapped[float] = mapped_column(Float)
    n_codes: Mapped[int] = mapped_column(Integer)
    codes: Mapped[bytes] = mapped_column(LargeBinary)


class ErrorRow(Base):
    """A file that could not be used, with the stage and a reason a user understands.

    Keyed by (path, content_hash) so re-running over the same broken file
    updates one row instead of adding another.
    """

    __tablename__ = "errors"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    path: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64), default="")  # "" when unreadable
    stage: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    run_id: Mapped[str] = mapped_column(String(32))
    features_version: Mapped[str] = mapped_column(String(32), default="")
    first_seen: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[dt.datetime] = mapped_column(default=utcnow)
    __table_args__ = (Index("ux_errors_path_hash", "path", "content_hash", unique=True),)


class ParquetPart(Base):
    """A Parquet file that is part of the results. Files not listed here are
    leftovers of a crash between writing and committing, and are removed."""

    __tablename__ = "parquet_parts"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)  # relative to --out
    dataset: Mapped[str] = mapped_column(String(32))  # frames | tracks | midi_notes | tokens ...
    run_id: Mapped[str] = mapped_column(String(32))
    n_rows: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ProgressEvent(Base):
    """Time series for the dashboard: one row every few seconds per run (and stage)."""

    __tablename__ = "progress"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(32), index=True)
    ts: Mapped[dt.datetime] = mapped_column(default=utcnow)
    stage: Mapped[str] = mapped_column(String(32), default="features")
    done: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)
    audio_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    detail: Mapped[dict] = mapped_column(JSON, default=dict)  # batch sizes, memory per actor, ...


class BatchLog(Base):
    """What the batch planner chose and every OOM split, per actor."""

    __tablename__ = "batch_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(32), index=True)
    ts: Mapped[dt.datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(64))
    device: Mapped[str] = mapped_column(String(16))
    n_tracks: Mapped[int] = mapped_column(Integer)
    audio_seconds: Mapped[float] = mapped_column(Float)
    oom_splits: Mapped[int] = mapped_column(Integer, default=0)
    time_chunked: Mapped[int] = mapped_column(Integer, default=0)
    budget_bytes: Mapped[int] = mapped_column(Integer, default=0)
    peak_bytes: Mapped[int] = mapped_column(Integer, default=0)


class TrainMetric(Base):
    """Per-step training metrics (run kind = train)."""

    __tablename__ = "train_metrics"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(32), index=True)
    step: Mapped[int] = mapped_column(Integer)
    ts: Mapped[dt.datetime] = mapped_column(default=utcnow)
    loss: Mapped[float] = mapped_column(Float)
    lr: Mapped[float] = mapped_column(Float, default=0.0)
    items_per_s: Mapped[float] = mapped_column(Float, default=0.0)  # tokens or frames per second
    split: Mapped[str] = mapped_column(String(8), default="train")  # train | eval
    __table_args__ = (Index("ux_train_metrics", "run_id", "step", "split", unique=True),)


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
    return eng


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
    from sqlalchemy.dialects.sqlite import insert  # noqa: PLC0415

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
