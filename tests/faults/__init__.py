"""The fault suite: real `chromaray fingerprint` processes (real Ray, real files) hit by faults
(concurrent runs, SIGSTOP, SIGKILL of the driver or a worker, SIGINT, bad inputs, a full disk),
then checked with :func:`check_consistent`.

Helpers every fault test reuses (``from tests.faults import ...``): a small library, the CLI as
a child process, waiting for a run to reach a point, finding its Ray workers, and the consistency
check run after each fault.

:func:`check_consistent` is the invariant the issue asks for: every track exactly once in
SQLite and exactly once in the listed Parquet parts, no listed part missing on disk, and (given
the library) every file accounted for as a track or an error row.
"""
from __future__ import annotations

import collections
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from tests.paths import REPO

#: Parquet datasets a track of each kind must appear in exactly once.
DATASETS_OF = {"audio": ("frames", "tracks", "fingerprints"), "midi": ("frames", "midi_notes", "tokens")}

#: The environment of a CLI run under test: offline, quiet, and one track per Ray block and
#: per batch with a part every 2 tracks, so a run commits many parts (many places to fault).
RUN_ENV = {
    "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1", "CHROMARAY_PIPELINE__FILES_PER_SHARD": "1",
    "CHROMARAY_PIPELINE__FEATURE_BATCH_ROWS": "1", "CHROMARAY_PIPELINE__PARQUET_ROWS_PER_PART": "2",
}


def make_library(folder: Path, *, n_audio: int = 8, seconds: float = 12.0, n_midi: int = 2,
                 seed0: int = 100) -> list[Path]:
    """Synthetic songs in every audio format (pipeline.synth, the generator of the demo) and a
    few MIDI files; returns the paths."""
    from pipeline.synth import good_library
    from pipeline.synth.midi import write_demo_midi

    paths = good_library(folder, n=n_audio, seconds=seconds, seed0=seed0)
    for i in range(n_midi):
        write_demo_midi(folder / f"piece{i:02d}.mid", seed0 + i)
        paths.append(folder / f"piece{i:02d}.mid")
    return paths


@dataclass
class CliRun:
    """`python -m jobs.fingerprint` as a child process (its own process group), output to files."""

    proc: subprocess.Popen
    log_dir: Path
    name: str

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self, timeout: float = 420.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} did not end within {timeout:.0f} s:\n{self.stderr[-3000:]}") from None

    def kill(self) -> None:
        """SIGKILL the driver and everything it started (its Ray processes)."""
        if self.proc.poll() is None:
            with _suppress_lookup():
                os.kill(self.proc.pid, signal.SIGCONT)
        with _suppress_lookup():
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    @property
    def stdout(self) -> str:
        return (self.log_dir / f"{self.name}.out").read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return (self.log_dir / f"{self.name}.err").read_text(errors="replace")


class _suppress_lookup:
    def __enter__(self) -> None:
        return None

    def __exit__(self, typ: Any, exc: Any, tb: Any) -> bool:
        return typ is not None and issubclass(typ, ProcessLookupError | PermissionError)


def start_fingerprint(paths: Sequence[Path | str], db: Path, out: Path, log_dir: Path, name: str, *,
                      extra: Sequence[str] = (), env: dict[str, str] | None = None) -> CliRun:
    cmd = [sys.executable, "-m", "jobs.fingerprint", *map(str, paths), "--db", str(db), "--out", str(out),
           "--num-cpus", "2", "--no-progress", *extra]
    log_dir.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **RUN_ENV, **(env or {})}
    with open(log_dir / f"{name}.out", "w") as so, open(log_dir / f"{name}.err", "w") as se:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=so, stderr=se, env=full_env, start_new_session=True)
    return CliRun(proc, log_dir, name)


def wait_for(condition: Callable[[], Any], *, timeout: float = 300.0, interval: float = 0.05,
             while_alive: CliRun | None = None, what: str = "the condition") -> Any:
    """Poll ``condition`` until it returns something truthy; fail when ``while_alive`` ends first."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if while_alive is not None and while_alive.proc.poll() is not None:
            raise AssertionError(f"{while_alive.name} ended (rc {while_alive.proc.returncode}) before {what}:\n"
                                 f"{while_alive.stderr[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def query(db: Path, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
    """Rows of ``sql`` from a read-only connection (never blocks the writer: WAL)."""
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute(sql, tuple(params)).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    finally:
        con.close()


def committed_tracks(db: Path) -> int:
    return int(query(db, "SELECT count(*) FROM tracks")[0][0]) if query(db, "SELECT 1 FROM tracks LIMIT 1") else 0


def part_files(out: Path) -> set[str]:
    """Every Parquet file (and temp file) under the dataset folders, relative to ``out``."""
    found = set()
    for folder in sorted(out.iterdir()) if out.is_dir() else []:
        if folder.is_dir():
            found |= {f"{folder.name}/{f.name}" for f in folder.iterdir() if ".parquet" in f.name}
    return found


def descendants(pid: int) -> list[Any]:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def feature_workers(driver_pid: int) -> list[Any]:
    """The Ray worker processes of a run that host an actor of its feature pool, by process title
    (``ray::MapWorker(MapBatches(<Stage>))``): those of a feature stage first, then any other
    actor-pool worker (the feature pool is the run's only actor pool)."""
    import psutil

    ranked = []
    for p in descendants(driver_pid):
        try:
            title = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if title.startswith("ray::MapWorker("):
            ranked.append((0 if any(k in title for k in ("Feature", "Analyze")) else 1, p.pid, p))
    return [p for *_, p in sorted(ranked)]


def wait_until_analysing(run: CliRun, out: Path) -> None:
    """Until ``run``'s feature actors exist (or a first part file is on disk), polled every
    50 ms: a tight poll for a part's write-to-commit window starts only after this, so it does
    not take a CPU from the run's Ray start-up on a 2-core machine. No part is written before
    the actors exist."""
    wait_for(lambda: part_files(out) or feature_workers(run.pid), interval=0.05, while_alive=run,
             what="the run's feature actors")


def statuses(db: Path) -> dict[str, str]:
    return dict(query(db, "SELECT id, status FROM runs"))


@dataclass
class Consistency:
    """What :func:`check_consistent` counted (for the report of a fault test)."""

    tracks: int
    audio: int
    midi: int
    errors: int
    parts: int
    orphans: list[str] = field(default_factory=list)


def check_consistent(db: Path, out: Path, library: Sequence[Path] | None = None, *,
                     orphans_ok: bool = False) -> Consistency:
    """Assert the results of ``db`` + ``out`` are whole:

    - SQLite: one ``features`` row per track, one ``fingerprints`` row per audio track, no rows
      of tracks that do not exist, every track's ``parquet_part`` listed;
    - Parquet: every listed part exists on disk, and each track's content hash appears exactly
      once in each dataset of its kind (:data:`DATASETS_OF`) over the listed parts, and no hash
      appears that is not a track;
    - without ``orphans_ok``, no Parquet (or temp) file on disk that is not listed;
    - with ``library``, every file is a track or an error row (by content hash).
    """
    from pipeline.ingest.discover import content_hash

    tracks = dict(query(db, "SELECT content_hash, kind FROM tracks"))
    n_rows = int(query(db, "SELECT count(*) FROM tracks")[0][0])
    assert n_rows == len(tracks), "a content hash is stored as two tracks"
    for table in ("features", "fingerprints"):
        hashes = [h for (h,) in query(db, f"SELECT content_hash FROM {table}")]
        dup = [h for h, c in collections.Counter(hashes).items() if c > 1]
        assert not dup, f"{table}: {len(dup)} track(s) twice"
        want = set(tracks) if table == "features" else {h for h, k in tracks.items() if k == "audio"}
        assert set(hashes) == want, f"{table}: {len(want - set(hashes))} missing, {len(set(hashes) - want)} extra"
    listed = dict(query(db, "SELECT name, dataset FROM parquet_parts"))
    missing = sorted(n for n in listed if not (out / n).is_file())
    assert not missing, f"{len(missing)} listed part(s) missing on disk: {missing[:5]}"
    track_parts = {p for (p,) in query(db, "SELECT parquet_part FROM tracks WHERE parquet_part IS NOT NULL")}
    assert track_parts <= set(listed), f"tracks point at unlisted parts: {sorted(track_parts - set(listed))[:5]}"
    seen: dict[str, collections.Counter] = {}
    for name, dataset in listed.items():
        hashes = pq.read_table(out / name, columns=["content_hash"]).column("content_hash").to_pylist()
        seen.setdefault(dataset, collections.Counter()).update(hashes)
    for dataset, counts in seen.items():
        strays = set(counts) - set(tracks)
        assert not strays, f"{dataset}: {len(strays)} hash(es) in Parquet that are not tracks"
    for h, kind in tracks.items():
        for dataset in DATASETS_OF[kind]:
            n = seen.get(dataset, collections.Counter())[h]
            assert n == 1, f"{kind} track {h[:12]} is {n} time(s) in the listed {dataset} parts"
    orphans = sorted(part_files(out) - set(listed))
    if not orphans_ok:
        assert not orphans, f"{len(orphans)} Parquet file(s) on disk not listed: {orphans[:5]}"
    n_errors = 0
    if library is not None:
        errors = {h for (h,) in query(db, "SELECT content_hash FROM errors")}
        lib_hashes = {content_hash(str(p)) for p in library}
        unaccounted = lib_hashes - set(tracks) - errors
        assert not unaccounted, f"{len(unaccounted)} library file(s) neither a track nor an error"
        n_errors = len(lib_hashes & errors)
    kinds = collections.Counter(tracks.values())
    return Consistency(len(tracks), kinds["audio"], kinds["midi"], n_errors, len(listed), orphans)
