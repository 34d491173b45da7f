"""SQLite store (SQLAlchemy 2): tracks, their paths, features, fingerprints,
errors, runs, progress events and training metrics.

One writer: only the driver (or one actor) writes, in short transactions.
Rows are keyed by content hash so a re-run is a no-op and a crash mid-run
loses at most the batch that was in flight (it is recomputed next time).
Readers (dashboard, identify) open the file read-only.

The DSP settings of every features version are stored beside the rows they produced
(table ``analysis_settings``); readers get them from :func:`library_settings` or
:func:`track_settings` and analyse their queries with the same settings.
"""
from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, inspect, select, update
from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from actors.config import DSPConfig
from actors.errors import ChromarayError
from pipeline.store.models import (
    SCHEMA_VERSION,
    AnalysisSettings,
    Base,
    Fingerprint,
    Meta,
    ParquetPart,
    Run,
    Track,
    TrainMetric,
    utcnow,
)

__all__ = [
    "check_schema",
    "finish_run",
    "known_parts",
    "library_settings",
    "new_run",
    "open_db",
    "parts_of",
    "record_metrics",
    "record_settings",
    "track_settings",
]


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets the dashboard read while a job writes; busy_timeout rides out
    # the short write transactions of the single writer.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _reader_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA query_only=ON")  # a second lock beside mode=ro: no statement may write
    cur.close()


def open_db(path: str | os.PathLike[str], *, create: bool = True, readonly: bool = False,
            must_exist: bool = False) -> Engine:
    """Engine on a SQLite file; creates the schema when ``create``.

    ``readonly`` opens with ``mode=ro`` and ``query_only`` so a reader can never write;
    a reader, or a writer with ``must_exist``, refuses a database that does not exist yet.
    """
    p = Path(path).expanduser().resolve()
    if (readonly or must_exist) and not p.exists():
        raise ChromarayError(f"database {p} does not exist (run `chromaray fingerprint` first)")
    if readonly:
        eng = create_engine(f"sqlite:///file:{p}?mode=ro&uri=true", future=True)
        event.listen(eng, "connect", _reader_pragmas)
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
    for attempt in range(5):
        try:
            if create:
                Base.metadata.create_all(eng)
            check_schema(eng, write=create)
            return eng
        except (OperationalError, IntegrityError) as exc:
            # Two writers opening a new (or older) database at once race to create (or upgrade)
            # the same tables; every step is idempotent, so the loser retries and finds them made.
            text = str(exc.orig)
            if attempt == 4 or not any(s in text for s in _SCHEMA_RACES):
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


_SCHEMA_RACES = ("already exists", "duplicate column name", "UNIQUE constraint failed")


def check_schema(engine: Engine, *, write: bool) -> int:
    """The database's schema version; raises when this code cannot use it.

    Versions 1 (before the ``meta`` table existed) and 2 (before ``analysis_settings``)
    differ from 3 by tables that ``create_all`` adds, so a writer upgrades them in place
    (:func:`_upgrade_to_3` also records the settings of the tracks they hold); version 4 adds
    the process columns of ``runs`` (:func:`_add_missing_columns`). A reader uses an older
    database as it is.
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
        Base.metadata.create_all(engine)
        _add_missing_columns(engine)
        if version < 3:
            _upgrade_to_3(engine)
        with Session(engine) as s, s.begin():
            s.merge(Meta(key="schema_version", value=str(SCHEMA_VERSION)))
        version = SCHEMA_VERSION
    return version


def _add_missing_columns(engine: Engine) -> None:
    """Add the columns an older database lacks (``create_all`` adds only whole tables), from the
    models: version 4 added the process columns of ``runs``. A new column must be nullable or
    have a scalar default, so the rows already there get a value."""
    insp = inspect(engine)
    present_tables = set(insp.get_table_names())
    with engine.begin() as conn:
        for table in Base.metadata.sorted_tables:
            if table.name not in present_tables:
                continue
            present = {c["name"] for c in insp.get_columns(table.name)}
            for col in table.columns:
                if col.name in present:
                    continue
                ddl = f'ALTER TABLE "{table.name}" ADD COLUMN "{col.name}" {col.type.compile(engine.dialect)}'
                if not col.nullable:
                    default = getattr(col.default, "arg", None)
                    if col.default is None or not col.default.is_scalar:
                        raise RuntimeError(f"column {table.name}.{col.name} needs a scalar default to be added")
                    ddl += f" NOT NULL DEFAULT {_sql_literal(default)}"
                conn.exec_driver_sql(ddl)


def _sql_literal(value: Any) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def _upgrade_to_3(engine: Engine) -> None:
    """Record the settings of the audio versions an older database holds (those that can be
    proven, see :func:`_derived_settings`) and store their fingerprints' true code rate: before
    version 3 every row said the code rate of the default settings."""
    from actors.fingerprint import DECIMATE

    with Session(engine) as s, s.begin():
        versions = set(s.scalars(select(Track.features_version).where(Track.kind == "audio").distinct()))
        versions -= set(s.scalars(select(AnalysisSettings.features_version)))
        for version, dsp in sorted(_derived_settings(s, versions).items()):
            record_settings(s, version, "audio", dsp)
            tracks = select(Track.content_hash).where(Track.features_version == version)
            s.execute(update(Fingerprint).where(Fingerprint.content_hash.in_(tracks))
                      .values(frame_rate_hz=dsp.frame_rate_hz / DECIMATE))


def _derived_settings(s: Session, versions: Iterable[str]) -> dict[str, DSPConfig]:
    """Settings of audio features versions written before they were stored with the library.

    An audio version starts with ``DSPConfig.version()``, a hash of every DSP parameter, so a
    candidate whose hash matches is exactly the configuration used: the defaults, or the
    ``dsp`` section of a fingerprint run's stored config. Versions no candidate matches are
    left out (their tracks have unknown settings).
    """
    wanted = set(versions)
    if not wanted:
        return {}
    candidates = [DSPConfig()]
    for config in s.scalars(select(Run.config).where(Run.kind == "fingerprint")):
        section = config.get("dsp") if isinstance(config, dict) else None
        if isinstance(section, dict):
            try:
                candidates.append(DSPConfig.from_dict(section))
            except ChromarayError:
                continue  # a config of an older DSPConfig cannot have made a current version
    by_hash = {c.version(): c for c in candidates}
    return {v: by_hash[v.split("+", 1)[0]] for v in wanted if v.split("+", 1)[0] in by_hash}


def record_settings(s: Session, features_version: str, kind: str, dsp: DSPConfig) -> None:
    """Store (in the caller's transaction) the settings that produce rows of ``features_version``."""
    s.merge(AnalysisSettings(features_version=features_version, kind=kind, dsp=dsp.to_dict()))


def library_settings(engine: Engine) -> dict[str, DSPConfig]:
    """The DSP settings of each features version in the database.

    Versions stored before the settings were (an older, read-only database; rows written
    without the pipeline) are included when :func:`_derived_settings` can prove them.
    """
    out: dict[str, DSPConfig] = {}
    names = set(inspect(engine).get_table_names())
    if "tracks" not in names:
        return out
    with Session(engine) as s:
        if "analysis_settings" in names:
            for version, dsp in s.execute(select(AnalysisSettings.features_version, AnalysisSettings.dsp)):
                out[version] = DSPConfig.from_dict(dsp, where=f"analysis settings of {version}")
        missing = set(s.scalars(select(Track.features_version).where(Track.kind == "audio").distinct())) - set(out)
        if missing and "runs" in names:
            out.update(_derived_settings(s, missing))
    return out


def track_settings(engine: Engine, kind: str = "audio") -> dict[str, DSPConfig]:
    """The DSP settings of each track of ``kind`` (by content hash); tracks whose settings are
    unknown (see :func:`library_settings`) are absent."""
    settings = library_settings(engine)
    if not settings:
        return {}
    with Session(engine) as s:
        rows = s.execute(select(Track.content_hash, Track.features_version).where(Track.kind == kind)).tuples()
        return {h: settings[v] for h, v in rows if v in settings}


def new_run(engine: Engine, kind: str, *, name: str | None = None, config: dict | None = None,
            ray_address: str | None = None, ray_dashboard_url: str | None = None) -> str:
    """A run row naming this process (no heartbeat, no writer lock: see
    :func:`pipeline.store.runs.claim_run` for a run that writes the library)."""
    from pipeline.store.runs import this_process

    run_id = uuid.uuid4().hex
    me = this_process()
    with Session(engine) as s, s.begin():
        s.add(Run(id=run_id, kind=kind, name=name, config=json.loads(json.dumps(config or {}, default=str)),
                  ray_address=ray_address, ray_dashboard_url=ray_dashboard_url, host=me.host, pid=me.pid,
                  pid_started=me.started))
    return run_id


def finish_run(engine: Engine, run_id: str, status: str, summary: dict | None = None, **counts: Any) -> None:
    """Store the end of a run (its heartbeat, if any, stops first)."""
    from pipeline.store.runs import stop_heartbeat

    stop_heartbeat(run_id)
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


def results_dir(engine: Engine) -> Path | None:
    """The ``--out`` folder of the latest fingerprint run (where its Parquet parts live), or None
    when the database has never been fingerprinted. Readers (train, match-midi) default to it."""
    with Session(engine) as s:
        configs = s.scalars(select(Run.config).where(Run.kind == "fingerprint")
                            .order_by(Run.started_at.desc()))
        for config in configs:
            if isinstance(config, dict) and config.get("out"):
                return Path(config["out"])
    return None


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
