"""Inverted fingerprint index: code -> (track, code frame), on disk next to the SQLite store.

API for the pipeline (driver side, writable engine)
---------------------------------------------------
    from pipeline.search import index
    index.sync(engine)                        # after a fingerprint run: index == fingerprints table
    index.add_tracks(engine, [(content_hash, codes), ...])   # incremental (codes: uint32 array)
    index.remove_tracks(engine, [content_hash, ...])
    index.rebuild(engine)                     # from scratch, deterministic (same bytes every time)
    idx = index.FingerprintIndex.open(engine) # read side (identify, duplicates); read-only engine ok
    engine = index.open_synced(db)            # read-only engine on a database whose index is up to date

``sync`` alone is enough at the end of a run: it indexes every row of ``fingerprints`` whose
``version`` is the current :data:`actors.fingerprint.FP_VERSION`, drops index entries whose
track vanished or was re-fingerprinted (other version, other codes, other rate), and compacts when
needed. Each indexed track keeps its own analysis frame rate (its fingerprint row's code rate x
DECIMATE): libraries fingerprinted with other DSP settings are indexed at their true rate.
On an empty index it is :func:`rebuild`. Rows of another version are never indexed, so a changed
algorithm never mixes versions: the pipeline re-fingerprints, ``sync`` swaps them in.

Storage: sorted-array segments, memory-mapped (and why)
-------------------------------------------------------
Postings live in *segments*: one ``.npy`` file each, a (3, N) uint32 array whose row 0 holds the
codes sorted ascending, rows 1-2 the track key and the code frame of each posting (sorted by
code, track, frame). Next to each, its *directory* ``dir-<digest>.npy``: the position of the first
posting of every ``b``-bit code prefix (b from :func:`directory_bits`, 16-32 postings per
prefix, at most +2 % of the index's bytes). A lookup reads a code's prefix range from the directory and binary
searches inside it (vectorised over the query's codes), so it touches ~2 pages per code of the
memory-mapped segment and nothing is loaded up front: opening the index costs a few milliseconds
whatever its size, and the OS page cache keeps the hot part in memory. (A binary search over the
whole code row, ``np.searchsorted``, touches ~log2(N) pages per code.) A directory is derived from
its segment: a missing one is recomputed on open. 12 bytes per posting: 60,000 tracks × ~2,300
codes (3.5 min at 10.8 codes/s) ≈ 140 M postings ≈ 1.7 GB.

Codes shared between songs (common chords) hold ~N/400 postings each in a library of N tracks
(#12), so a query's postings grow with N; :meth:`FingerprintIndex.lookup` bounds them: codes held
by more than 1 % of the tracks (at least 2,000 postings) are stop words, and a call whose codes
hold more than a budget (default 200,000 postings) looks up its rarest codes first, up to the
budget (inverse document frequency: a rare code tells more tracks apart per posting read).

The alternative we measured, an SQLite WITHOUT ROWID table (code, track, frame) with that
primary key, takes 17 bytes per posting and answers 3,000 code lookups (one 10 s query with bit
flips) in ~0.9 s through the sqlite3 module (``IN`` lists of 500) against ~0.03 s for
``searchsorted`` on the same 2 M postings (busy 2-core machine): the per-row cost of SQLite, not
I/O, dominates.

The *manifest* is in the SQLite store (tables below), so index state commits in the same
database as the fingerprints: ``fp_index_segments`` lists live segment files, ``fp_index_tracks``
maps each indexed track (content hash) to a small integer key and its segment. Incremental:
``add_tracks`` writes a new segment (file written to a temporary name, fsynced, renamed, then
the manifest rows committed; a file not in the manifest is a crash leftover and is deleted by the
next writer). ``remove_tracks`` deletes manifest rows only; readers skip postings of keys that are
not live. When dead postings exceed 25 % or there are more than 12 segments, live postings are
merged into one segment (compaction). ``rebuild`` assigns keys 1..N in content-hash order and
writes one segment whose file name is a hash of its content: the same fingerprints table always
gives byte-identical index files. For large libraries (:data:`RAY_MIN_POSTINGS`) ``rebuild``
runs on Ray workers: shards of tracks sorted in parallel, merged by code ranges in parallel
(:func:`_build_on_ray`), the same bytes as the in-process build; small libraries never start Ray.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from sqlalchemy import CursorResult, delete, func, insert, inspect, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from actors.errors import ChromarayError
from actors.fingerprint import DECIMATE, FP_VERSION
from pipeline.store import SCHEMA_VERSION, Fingerprint, FpIndexSegment, FpIndexTrack, check_schema, open_db

__all__ = [
    "MAX_DEAD_FRACTION",
    "MAX_SEGMENTS",
    "PART_POSTINGS",
    "RAY_MIN_POSTINGS",
    "SHARD_TRACKS",
    "TRACKS_PER_SEGMENT",
    "FingerprintIndex",
    "TrackInfo",
    "add_tracks",
    "build_postings",
    "counted",
    "db_path",
    "directory_bits",
    "index_dir",
    "is_stale",
    "maybe_compact",
    "open_synced",
    "prefix_counts",
    "rebuild",
    "remove_tracks",
    "stats",
    "sync",
]

log = logging.getLogger(__name__)

#: Compaction triggers.
MAX_SEGMENTS = 12
MAX_DEAD_FRACTION = 0.25
#: Tracks per segment when adding many tracks at once (bounds memory while writing).
TRACKS_PER_SEGMENT = 4000
#: Index files are readable by every user that can read the database (rw-r--r--).
INDEX_FILE_MODE = 0o644


def counted(x: np.ndarray, *, is_sorted: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of an int64 array, ascending, and how often each occurs: the vote counting
    of identify and duplicates. By sorting, because NumPy 2.3's hash-based ``np.unique`` measured
    5-10x slower on these keys; ``is_sorted`` skips the sort for an array already sorted."""
    if not is_sorted:
        x = np.sort(x)
    if len(x) == 0:
        return x, np.zeros(0, dtype=np.int64)
    first = np.flatnonzero(np.r_[True, x[1:] != x[:-1]])
    return x[first], np.diff(np.r_[first, len(x)])


# ----------------------------------------------------------------------------------------------
# Locations
# ----------------------------------------------------------------------------------------------

def db_path(engine: Engine) -> Path:
    """Filesystem path of the SQLite database behind ``engine`` (also for read-only URIs)."""
    name = engine.url.database or ""
    if name.startswith("file:"):
        name = name[5:].split("?", 1)[0]
    if not name or name == ":memory:":
        raise ChromarayError("the fingerprint index needs a database file, not an in-memory database")
    return Path(name)


def index_dir(engine: Engine) -> Path:
    """Directory of the segment files: ``<db file>.fpindex`` next to the database."""
    p = db_path(engine)
    return p.with_name(p.name + ".fpindex")


def _has_tables(engine: Engine) -> bool:
    names = set(inspect(engine).get_table_names())
    return {"fp_index_segments", "fp_index_tracks"} <= names


def _require_tables(engine: Engine) -> None:
    """Writers need the manifest tables, which :func:`pipeline.store.open_db` creates."""
    if not _has_tables(engine):
        raise ChromarayError(f"the database {db_path(engine)} has no fingerprint index tables; "
                             "open it for writing with pipeline.store.open_db (which creates them)")


# ----------------------------------------------------------------------------------------------
# Segment files
# ----------------------------------------------------------------------------------------------

def build_postings(items: Sequence[tuple[int, np.ndarray]]) -> np.ndarray:
    """(3, N) uint32 postings [code, track key, code frame] sorted by (code, key, frame)."""
    if not items:
        return np.zeros((3, 0), dtype=np.uint32)
    codes = np.concatenate([np.asarray(c, dtype=np.uint32) for _, c in items])
    keys = np.concatenate([np.full(len(c), k, dtype=np.uint32) for k, c in items])
    frames = np.concatenate([np.arange(len(c), dtype=np.uint32) for _, c in items])
    order = np.lexsort((frames, keys, codes))  # last key is primary: code, then key, then frame
    return np.stack([codes[order], keys[order], frames[order]])


def directory_bits(n_postings: int) -> int:
    """Bits of the code prefix a segment's directory is keyed by: 16-32 postings per prefix on
    average (4 bytes of directory per >= 16 postings of 12 bytes: at most +2 % of the index),
    2^8..2^26 entries."""
    return int(min(26, max(8, np.floor(np.log2(max(1, n_postings) / 16)))))


def prefix_counts(codes: np.ndarray, bits: int) -> np.ndarray:
    """Postings per ``bits``-bit code prefix (length 2^bits), of a sorted or unsorted code row."""
    return np.bincount(np.asarray(codes, dtype=np.uint32) >> np.uint32(32 - bits), minlength=1 << bits)


def _directory_from_counts(counts: np.ndarray) -> np.ndarray:
    """Directory of a segment: entry p = position of the first posting whose code prefix is >= p
    (length 2^bits + 1). uint32 while positions fit, else uint64."""
    out = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out.astype(np.uint32 if out[-1] < 2**32 else np.uint64)


def _dir_name(segment: str) -> str:
    return "dir-" + segment[len("seg-"):]


def _save_atomic(final: Path, write: Callable[[BinaryIO], None]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npy", dir=final.parent)
    try:
        os.chmod(tmp, INDEX_FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_directory(directory: Path, name: str, directory_array: np.ndarray) -> None:
    """The segment's directory file (derived from the segment, deterministic)."""
    _save_atomic(directory / _dir_name(name), lambda fh: np.save(fh, directory_array))


def _write_segment(directory: Path, postings: np.ndarray) -> str:
    """Write a segment and its directory atomically; its name is derived from its content
    (deterministic). The directory is written first: a listed segment always has one."""
    directory.mkdir(parents=True, exist_ok=True)
    postings = np.ascontiguousarray(postings, dtype=np.uint32)
    digest = hashlib.sha1(postings.tobytes()).hexdigest()[:16]
    name = f"seg-{digest}.npy"
    final = directory / name
    if final.exists() and (directory / _dir_name(name)).exists():
        return name
    _write_directory(directory, name, _directory_from_counts(prefix_counts(postings[0],
                                                                          directory_bits(postings.shape[1]))))
    _save_atomic(final, lambda fh: np.save(fh, postings))
    return name


def _load_segment(directory: Path, name: str) -> np.ndarray:
    arr = np.load(directory / name, mmap_mode="r")
    if arr.ndim != 2 or arr.shape[0] != 3 or arr.dtype != np.uint32:
        raise ChromarayError(f"fingerprint index segment {directory / name} is malformed; run a rebuild")
    # A plain ndarray view of the mapping: same pages, without np.memmap's per-call overhead.
    return np.asarray(arr)


def _load_directory(seg: np.ndarray, path: Path | None = None) -> np.ndarray:
    """The directory of segment ``seg``, from its file ``path``; recomputed (binary searches on
    its code row) when there is none, as for an index written before directories existed."""
    n = seg.shape[1]
    if path is not None and path.exists():
        d = np.load(path, mmap_mode="r")
        if d.ndim == 1 and len(d) >= 2 and (len(d) - 1) & (len(d) - 2) == 0 and int(d[-1]) == n:
            return np.asarray(d)
    bits = directory_bits(n)
    starts = np.arange(1 << bits, dtype=np.uint64) << np.uint64(32 - bits)
    return np.r_[np.searchsorted(seg[0], starts.astype(np.uint32)), n].astype(np.uint64)


def _gc(engine: Engine, directory: Path) -> None:
    """Delete segment files not in the manifest (crash leftovers, compacted segments)."""
    if not directory.exists():
        return
    with Session(engine) as s:
        live = set(s.scalars(select(FpIndexSegment.name)))
    live |= {_dir_name(n) for n in live}
    for f in directory.iterdir():
        if f.name not in live and f.name.startswith(("seg-", "dir-", ".tmp-")):
            f.unlink(missing_ok=True)
        elif f.name.startswith(".build-") and f.is_dir():
            shutil.rmtree(f, ignore_errors=True)  # an interrupted parallel build's pieces


# ----------------------------------------------------------------------------------------------
# Writers
# ----------------------------------------------------------------------------------------------

def _as_codes(codes: object) -> np.ndarray:
    if isinstance(codes, (bytes, bytearray, memoryview)):
        return np.frombuffer(codes, dtype="<u4").astype(np.uint32)
    return np.asarray(codes, dtype=np.uint32).ravel()


def add_tracks(engine: Engine, items: Iterable[tuple[str, object]], *, frame_rate_hz: float,
               version: str = FP_VERSION, _compact: bool = True) -> int:
    """Index tracks ``(content_hash, codes)`` (codes: uint32 array or '<u4' bytes) analysed at
    ``frame_rate_hz`` analysis frames per second (codes: one every DECIMATE frames).

    A track already indexed is replaced. Returns the number of tracks added.
    """
    _require_tables(engine)
    directory = index_dir(engine)
    tracks = [(h, _as_codes(c)) for h, c in items]
    if not tracks:
        return 0
    remove_tracks(engine, [h for h, _ in tracks], _compact=False)
    with Session(engine) as s:
        # Never reuse a key that dead postings of a removed track may still carry.
        next_key = max(s.scalar(select(func.max(FpIndexTrack.track_key))) or 0,
                       s.scalar(select(func.max(FpIndexSegment.max_key))) or 0) + 1
    tracks.sort(key=lambda hc: hc[0])
    for start in range(0, len(tracks), TRACKS_PER_SEGMENT):
        chunk = tracks[start: start + TRACKS_PER_SEGMENT]
        keyed = [(next_key + i, c) for i, (_, c) in enumerate(chunk)]
        postings = build_postings(keyed)
        name = _write_segment(directory, postings)
        with Session(engine) as s, s.begin():
            s.add(FpIndexSegment(name=name, version=version, n_postings=int(postings.shape[1]),
                                 n_tracks=len(chunk), max_key=next_key + len(chunk) - 1))
            for (h, c), (k, _) in zip(chunk, keyed):
                s.add(FpIndexTrack(content_hash=h, track_key=k, version=version, frame_rate_hz=float(frame_rate_hz),
                                   n_codes=len(c), segment=name))
        next_key += len(chunk)
    if _compact:
        maybe_compact(engine)
    return len(tracks)


def remove_tracks(engine: Engine, content_hashes: Iterable[str], *, _compact: bool = True) -> int:
    """Drop tracks from the index (their postings become dead; compaction reclaims them)."""
    _require_tables(engine)
    hashes = sorted(set(content_hashes))
    n = 0
    with Session(engine) as s, s.begin():
        for i in range(0, len(hashes), 500):
            res = s.execute(delete(FpIndexTrack).where(FpIndexTrack.content_hash.in_(hashes[i: i + 500])))
            assert isinstance(res, CursorResult)
            n += res.rowcount
    if _compact and n:
        maybe_compact(engine)
    return n


def stats(engine: Engine) -> dict:
    """Tracks, postings (total, live), segments and bytes on disk."""
    if not _has_tables(engine):
        return {"tracks": 0, "segments": 0, "postings": 0, "live_postings": 0, "bytes": 0}
    with Session(engine) as s:
        segs = list(s.execute(select(FpIndexSegment.name, FpIndexSegment.n_postings)))
        n_tracks = s.scalar(select(func.count()).select_from(FpIndexTrack)) or 0
        live = s.scalar(select(func.coalesce(func.sum(FpIndexTrack.n_codes), 0))) or 0
    directory = index_dir(engine)
    size = sum((directory / f).stat().st_size for n, _ in segs for f in (n, _dir_name(n)) if (directory / f).exists())
    return {"tracks": int(n_tracks), "segments": len(segs), "postings": int(sum(p for _, p in segs)),
            "live_postings": int(live), "bytes": int(size)}


def maybe_compact(engine: Engine, *, force: bool = False) -> bool:
    """Merge live postings into one segment when there are too many segments or dead postings."""
    st = stats(engine)
    dead = st["postings"] - st["live_postings"]
    if not force and st["segments"] <= MAX_SEGMENTS and dead <= MAX_DEAD_FRACTION * max(1, st["postings"]):
        return False
    directory = index_dir(engine)
    with Session(engine) as s:
        rows = list(s.execute(select(FpIndexTrack.track_key, FpIndexTrack.segment)))
        segs = list(s.scalars(select(FpIndexSegment.name)))
    live = np.zeros(max([k for k, _ in rows], default=0) + 1, dtype=bool)
    for k, _ in rows:
        live[k] = True
    parts = []
    for name in segs:
        arr = _load_segment(directory, name)
        keep = live[np.minimum(arr[1], len(live) - 1)] & (arr[1] < len(live))
        parts.append(np.asarray(arr[:, keep]))
    merged = np.concatenate(parts, axis=1) if parts else np.zeros((3, 0), dtype=np.uint32)
    order = np.lexsort((merged[2], merged[1], merged[0]))
    merged = merged[:, order]
    name = _write_segment(directory, merged)
    with Session(engine) as s, s.begin():
        version = s.scalar(select(FpIndexSegment.version).limit(1)) or FP_VERSION
        s.execute(delete(FpIndexSegment))
        s.add(FpIndexSegment(name=name, version=version, n_postings=int(merged.shape[1]), n_tracks=len(rows),
                             max_key=max([k for k, _ in rows], default=0)))
        s.query(FpIndexTrack).update({FpIndexTrack.segment: name})
    _gc(engine, directory)
    return True


def _fingerprint_rows(engine: Engine, hashes: Sequence[str]) -> list[tuple[str, bytes, float]]:
    """(content hash, codes, analysis frame rate) of fingerprint rows, by hash."""
    out: list[tuple[str, bytes, float]] = []
    with Session(engine) as s:
        for i in range(0, len(hashes), 500):
            rows = s.execute(select(Fingerprint.content_hash, Fingerprint.codes, Fingerprint.frame_rate_hz)
                             .where(Fingerprint.content_hash.in_(hashes[i: i + 500]))).tuples()
            out.extend((h, codes, _analysis_rate(rate)) for h, codes, rate in rows)
    out.sort(key=lambda r: r[0])
    return out


def _analysis_rate(code_rate_hz: float) -> float:
    """Analysis frame rate of a fingerprint row, whose ``frame_rate_hz`` is its code rate (the
    sink stores the track's analysis rate / DECIMATE). x4 is exact in floating point, so the
    index's rate compares equal to the row's."""
    return float(code_rate_hz) * DECIMATE


def rebuild(engine: Engine, *, workers: str = "auto", shard_tracks: int | None = None,
            part_postings: int | None = None) -> dict:
    """Drop the index and rebuild it from the fingerprints table (current version only).

    Deterministic: keys 1..N in content-hash order, one segment named by its content.
    ``workers``: "driver" builds in this process (all postings sorted at once); "ray" builds on
    Ray workers (:func:`_build_on_ray`: shards of ``shard_tracks`` tracks in parallel, merged by
    code ranges of about ``part_postings`` postings), byte for byte the same files (an empty
    library is built in-process); "auto" (the default) uses Ray for libraries of at least
    :data:`RAY_MIN_POSTINGS` postings.
    """
    if workers not in ("auto", "driver", "ray"):
        raise ValueError(f"workers must be 'auto', 'driver' or 'ray', got {workers!r}")
    _require_tables(engine)
    directory = index_dir(engine)
    with Session(engine) as s:
        listing = sorted(s.execute(select(Fingerprint.content_hash, Fingerprint.n_codes, Fingerprint.frame_rate_hz)
                                   .where(Fingerprint.version == FP_VERSION)).tuples())
    total = sum(n for _, n, _ in listing)
    built = None
    if total and (workers == "ray" or (workers == "auto" and total >= RAY_MIN_POSTINGS)):
        built = _build_on_ray(engine, [h for h, _, _ in listing], shard_tracks or SHARD_TRACKS,
                              part_postings or PART_POSTINGS)
    if built is not None:
        name, n_codes = built
        tracks = [(h, _analysis_rate(r), n) for (h, _, r), n in zip(listing, n_codes)]
    else:
        rows = _fingerprint_rows(engine, [h for h, _, _ in listing])
        keyed = [(i + 1, _as_codes(codes)) for i, (_, codes, _) in enumerate(rows)]
        name = _write_segment(directory, build_postings(keyed))
        tracks = [(h, rate, len(c)) for (h, _, rate), (_, c) in zip(rows, keyed)]
        del keyed, rows
    with Session(engine) as s, s.begin():
        s.execute(delete(FpIndexTrack))
        s.execute(delete(FpIndexSegment))
        s.add(FpIndexSegment(name=name, version=FP_VERSION, n_postings=sum(n for _, _, n in tracks),
                             n_tracks=len(tracks), max_key=len(tracks)))
        for i in range(0, len(tracks), 5000):
            s.execute(insert(FpIndexTrack), [
                {"content_hash": h, "track_key": k, "version": FP_VERSION, "frame_rate_hz": rate, "n_codes": n,
                 "segment": name} for k, (h, rate, n) in enumerate(tracks[i: i + 5000], start=i + 1)])
    _gc(engine, directory)
    return stats(engine)


# ----------------------------------------------------------------------------------------------
# Parallel build (Ray)
# ----------------------------------------------------------------------------------------------

#: ``rebuild(workers="auto")`` builds on Ray from this many postings on (≈ 8,700 tracks of 3.5 min;
#: 240 MB of index): below it starting Ray costs more than it saves.
RAY_MIN_POSTINGS = 20_000_000
#: Tracks per map task of the parallel build (≈ 23 M postings, ≈ 0.8 GB of task memory).
SHARD_TRACKS = 10_000
#: Postings per merge task (a code range): ≈ 32 bytes of task memory per posting.
PART_POSTINGS = 24_000_000
_HIST_BITS = 16


def _build_on_ray(engine: Engine, hashes: list[str], shard_tracks: int,
                  part_postings: int) -> tuple[str, list[int]] | None:
    """Build the one segment of :func:`rebuild` on Ray workers; returns its name and the number
    of codes of each track (in ``hashes`` order, keys 1..N), or None when this node has no CPU
    for Ray tasks (a cluster head: the caller builds in process).

    Map: each task reads a contiguous range of ``shard_tracks`` tracks (content-hash order) from
    the fingerprints table, sorts its postings (:func:`build_postings`, keys from the range's
    first key) into a piece file, and returns its number of codes per track and per 16-bit code
    prefix. Merge: the code space is cut at prefix boundaries into ranges of about
    ``part_postings`` postings; each task concatenates the pieces' slices of its range in shard
    order and sorts them by code with a stable sort (the pieces hold increasing key ranges, each
    sorted by code, key, frame, so the result is sorted by code, key, frame, exactly as sorting
    everything at once), and writes them into its columns of the final file. The driver then
    hashes the file (its name) and writes its directory in one pass. Tasks read the database and
    write under the index directory, so they are pinned to this node (all of its CPUs): the files
    need no shared storage.
    """
    import ray

    from pipeline.runtime import here_if_it_has_cpus, ray_session

    directory = index_dir(engine)
    directory.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=directory))
    try:
        with ray_session():
            here = here_if_it_has_cpus()
            if here is None:
                log.warning("no CPU for Ray tasks on this node: building the fingerprint index in this process")
                return None
            shards = [(i, hashes[i], hashes[min(i + shard_tracks, len(hashes)) - 1],
                       min(shard_tracks, len(hashes) - i)) for i in range(0, len(hashes), shard_tracks)]
            mapper = ray.remote(_map_shard).options(num_cpus=1, scheduling_strategy=here,
                                                    memory=36 * 2400 * shard_tracks)
            mapped = ray.get([mapper.remote(str(db_path(engine)), FP_VERSION, first, last, start + 1, n,
                                            str(work / f"piece-{k:05d}.npy"))
                              for k, (start, first, last, n) in enumerate(shards)])
            n_codes = [n for m in mapped for n in m[0]]
            total = sum(n_codes)
            hist = np.sum([m[1] for m in mapped], axis=0) if mapped else np.zeros(1 << _HIST_BITS, np.int64)
            bounds = _cut(hist, part_postings)  # code prefixes starting each range, and the end
            final = work / "segment.npy"
            np.lib.format.open_memmap(final, mode="w+", dtype=np.uint32, shape=(3, total))  # header + zeros
            starts = np.r_[0, np.cumsum(hist)][bounds]
            merger = ray.remote(_merge_range)
            ray.get([merger.options(num_cpus=1, scheduling_strategy=here,
                                    memory=max(1, 36 * int(starts[r + 1] - starts[r]))).remote(
                [str(work / f"piece-{k:05d}.npy") for k in range(len(shards))], str(final),
                int(bounds[r]), int(bounds[r + 1]), int(starts[r]), int(starts[r + 1]))
                for r in range(len(bounds) - 1)])
        return _finish_segment(directory, final, total), n_codes
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _cut(hist: np.ndarray, part_postings: int) -> np.ndarray:
    """Prefix boundaries [0, ..., 2^16] cutting ``hist`` (postings per 16-bit prefix) into
    consecutive ranges of about ``part_postings`` postings (a prefix is never split)."""
    cum = np.cumsum(hist)
    total = int(cum[-1]) if len(cum) else 0
    n = max(1, -(-total // max(1, part_postings)))
    cuts = np.searchsorted(cum, np.arange(1, n) * (total / n), side="left") + 1
    return np.unique(np.r_[0, cuts, len(hist)]).astype(np.int64)


def _map_shard(db: str, version: str, first: str, last: str, first_key: int, n_expected: int,
               out: str) -> tuple[list[int], np.ndarray]:
    """Ray task of :func:`_build_on_ray`: the sorted postings of one range of tracks."""
    import sqlite3

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT content_hash, codes FROM fingerprints WHERE version = ? AND content_hash >= ? "
                            "AND content_hash <= ? ORDER BY content_hash", (version, first, last)).fetchall()
    finally:
        conn.close()
    if len(rows) != n_expected:
        raise ChromarayError(f"the fingerprints of {db} changed during the index build "
                             f"({len(rows)} tracks in a range that held {n_expected}): run it again")
    codes = [_as_codes(c) for _, c in rows]
    postings = build_postings([(first_key + i, c) for i, c in enumerate(codes)])
    np.save(out, postings)
    return [len(c) for c in codes], prefix_counts(postings[0], _HIST_BITS)


def _merge_range(pieces: list[str], final: str, p_lo: int, p_hi: int, start: int, end: int) -> None:
    """Ray task of :func:`_build_on_ray`: the postings of code prefixes [p_lo, p_hi) (16 bits)
    into columns [start, end) of the final file."""
    shift = np.uint32(32 - _HIST_BITS)
    parts = []
    for path in pieces:
        seg = np.load(path, mmap_mode="r")
        col = seg[0]
        a = int(np.searchsorted(col, np.uint32(p_lo) << shift)) if p_lo else 0
        b = int(np.searchsorted(col, np.uint32(p_hi) << shift)) if p_hi < (1 << _HIST_BITS) else col.shape[0]
        parts.append(np.array(seg[:, a:b]))
    merged = np.concatenate(parts, axis=1) if parts else np.zeros((3, 0), dtype=np.uint32)
    del parts
    merged = merged[:, np.argsort(merged[0], kind="stable")]
    if merged.shape[1] != end - start:
        raise ChromarayError(f"index build: code range {p_lo}..{p_hi} holds {merged.shape[1]} postings, "
                             f"expected {end - start}")
    out = np.load(final, mmap_mode="r+")
    out[:, start:end] = merged
    out.flush()
    del out


def _finish_segment(directory: Path, built: Path, total: int) -> str:
    """Name a segment file written in place (the SHA-1 of its postings, as :func:`_write_segment`
    names it), write its directory, fsync and move it into ``directory``."""
    seg = np.load(built, mmap_mode="r")
    digest = hashlib.sha1()
    bits = directory_bits(total)
    counts = np.zeros(1 << bits, dtype=np.int64)
    step = 1 << 24
    for row in range(3):
        for a in range(0, total, step):
            chunk = np.ascontiguousarray(seg[row, a: a + step])
            digest.update(chunk.data)
            if row == 0:
                counts += prefix_counts(chunk, bits)
    del seg
    name = f"seg-{digest.hexdigest()[:16]}.npy"
    _write_directory(directory, name, _directory_from_counts(counts))
    with open(built, "rb+") as fh:
        os.fsync(fh.fileno())
    os.chmod(built, INDEX_FILE_MODE)
    os.replace(built, directory / name)
    return name


def sync(engine: Engine) -> dict:
    """Make the index consistent with the fingerprints table (see module doc). Returns stats
    plus ``added`` and ``removed`` counts."""
    _require_tables(engine)
    want = _wanted(engine)
    with Session(engine) as s:
        have = {h: (v, n, r) for h, v, n, r in s.execute(select(
            FpIndexTrack.content_hash, FpIndexTrack.version, FpIndexTrack.n_codes, FpIndexTrack.frame_rate_hz))}
    directory = index_dir(engine)
    with Session(engine) as s:
        names = list(s.scalars(select(FpIndexSegment.name)))
    if not have or any(not (directory / n).exists() for n in names):
        st = rebuild(engine)
        return dict(st, added=st["tracks"], removed=0)
    stale = sorted(h for h, (v, n, r) in have.items() if v != FP_VERSION or want.get(h) != (n, r))
    missing = sorted(h for h in want if h not in have or h in stale)
    removed = remove_tracks(engine, stale, _compact=False)
    added = 0
    for i in range(0, len(missing), TRACKS_PER_SEGMENT):
        rows = _fingerprint_rows(engine, missing[i: i + TRACKS_PER_SEGMENT])
        by_rate: dict[float, list[tuple[str, bytes]]] = {}
        for h, codes, rate in rows:
            by_rate.setdefault(rate, []).append((h, codes))
        for rate, group in sorted(by_rate.items()):
            added += add_tracks(engine, group, frame_rate_hz=rate, _compact=False)
    maybe_compact(engine)
    _gc(engine, index_dir(engine))
    return dict(stats(engine), added=added, removed=removed)


def _wanted(engine: Engine) -> dict[str, tuple[int, float]]:
    """What the index must hold: (n codes, analysis frame rate) of each current-version fingerprint."""
    with Session(engine) as s:
        rows = s.execute(select(Fingerprint.content_hash, Fingerprint.n_codes, Fingerprint.frame_rate_hz)
                         .where(Fingerprint.version == FP_VERSION)).tuples()
        return {h: (n, _analysis_rate(r)) for h, n, r in rows}


def is_stale(engine: Engine) -> bool:
    """True when the index does not hold exactly the current-version fingerprints (and their rates)."""
    if not _has_tables(engine):
        return True
    want = _wanted(engine)
    with Session(engine) as s:
        have = {h: (n, r) for h, n, r in s.execute(
            select(FpIndexTrack.content_hash, FpIndexTrack.n_codes, FpIndexTrack.frame_rate_hz)
            .where(FpIndexTrack.version == FP_VERSION)).tuples()}
        n_have = s.scalar(select(func.count()).select_from(FpIndexTrack)) or 0
        names = list(s.scalars(select(FpIndexSegment.name)))
    directory = index_dir(engine)
    if any(not (directory / n).exists() for n in names):
        return True  # segment files deleted behind our back: sync rebuilds
    return want != have or n_have != len(have)


def open_synced(db: str | os.PathLike[str], *, sync: bool = True) -> Engine:
    """Read-only engine on ``db`` whose fingerprint index is up to date.

    When the index is stale or the database has an older schema (both need one write: the
    index sync; the upgrade that records the library's analysis settings), ``db`` is first
    opened for writing. ``sync=False`` queries the database as it is.
    """
    engine = open_db(db, readonly=True)
    if not sync:
        return engine
    version = check_schema(engine, write=False)
    if version == SCHEMA_VERSION and not is_stale(engine):
        return engine
    engine.dispose()
    _update(db, f"the fingerprint index of {db} is out of date" if version == SCHEMA_VERSION
            else f"the database {db} was written by an older chromaray (schema {version})")
    return open_db(db, readonly=True)


def _update(db: str | os.PathLike[str], what: str) -> None:
    """Upgrade the schema of ``db`` and sync its index (``what``: why, for the error message)."""
    try:
        writer = open_db(db)  # create=True: adds the tables of the current schema and upgrades
    except ChromarayError as exc:
        raise ChromarayError(f"{what} and cannot be updated: {exc} "
                             "(use --no-sync to query it as it is)") from None
    try:
        sync(writer)
    finally:
        writer.dispose()


# ----------------------------------------------------------------------------------------------
# Reader
# ----------------------------------------------------------------------------------------------

@dataclass
class TrackInfo:
    key: int
    content_hash: str
    frame_rate_hz: float  # analysis frames per second (codes: / DECIMATE)
    n_codes: int


class FingerprintIndex:
    """Read side: memory-mapped segments + the live-track table. Cheap to open.

    A lookup finds each code's postings through its segment's *directory* (position of the first
    posting of every code prefix: one read, then a binary search inside a prefix of ~16 postings)
    instead of a binary search over the whole memory-mapped code row, and skips codes that carry
    little information for the cost of their postings (*stop-listed* codes, see :meth:`lookup`).
    """

    #: A code with more postings than max(this, :attr:`stop_fraction` x live tracks), summed over
    #: segments and tracks, is not looked up (silence, drones: no information).
    max_postings_per_code = 2000
    #: The stop list scales with the library: in a library of 10^6 tracks a code shared by 2,000
    #: of them (0.2 %) still tells tracks apart.
    stop_fraction = 0.01
    #: Budget of one :meth:`lookup` call (default of its ``max_postings``): when its codes hold
    #: more postings than this in all, the codes with the fewest postings (the most informative,
    #: inverse document frequency) are looked up first, until the budget is spent; the rest are
    #: skipped like stop-listed codes. It bounds a query's cost whatever the library size (codes
    #: shared between songs hold ~N/400 postings each in a library of N tracks); below ~5·10^4
    #: tracks a whole-clip query of 10 s never reaches it. At 10^5 tracks of the scale benchmark
    #: (benchmarks/bench_index_scale.py, where passages are shared verbatim by hundreds of tracks)
    #: 200,000 kept clean top-1 at 16/16 clips and 100,000 or less lost 2-9 of them. None: no budget.
    max_postings_per_query: int | None = 200_000

    def __init__(self, engine: Engine, segments: list[np.ndarray], tracks: dict[int, TrackInfo],
                 directories: list[np.ndarray] | None = None):
        self.engine = engine
        self.segments = segments
        self.tracks = tracks
        n = max(tracks, default=0) + 1
        self.live = np.zeros(n, dtype=bool)
        self.live[list(tracks)] = True
        self._codes_cache: dict[int, np.ndarray] = {}
        self.directories = directories if directories is not None else [_load_directory(seg) for seg in segments]

    @classmethod
    def open(cls, engine: Engine) -> FingerprintIndex:
        if not _has_tables(engine):
            return cls(engine, [], {})
        directory = index_dir(engine)
        for attempt in range(3):
            with Session(engine) as s:
                names = sorted(s.scalars(select(FpIndexSegment.name)))
                rows = list(s.execute(select(FpIndexTrack.track_key, FpIndexTrack.content_hash,
                                             FpIndexTrack.frame_rate_hz, FpIndexTrack.n_codes)))
            try:
                segs = [_load_segment(directory, n) for n in names]
                dirs = [_load_directory(seg, directory / _dir_name(n)) for n, seg in zip(names, segs)]
            except FileNotFoundError:
                # A writer compacted between our manifest read and the file open: read again.
                if attempt == 2:
                    raise ChromarayError(f"fingerprint index files under {directory} are missing; "
                                         "run `chromaray identify` on a writable database to rebuild") from None
                time.sleep(0.2)
                continue
            return cls(engine, segs, {k: TrackInfo(k, h, r, n) for k, h, r, n in rows}, dirs)
        raise AssertionError("unreachable")

    @property
    def n_postings(self) -> int:
        return int(sum(s.shape[1] for s in self.segments))

    @property
    def stop_postings(self) -> int:
        """A code with more postings than this is stop-listed (see :attr:`max_postings_per_code`)."""
        return max(self.max_postings_per_code, int(self.stop_fraction * len(self.tracks)))

    def mask(self, keys: Iterable[int]) -> np.ndarray:
        """A ``live`` mask for :meth:`lookup` that keeps only the tracks ``keys``."""
        out = np.zeros_like(self.live)
        out[[k for k in keys if self.live[k]]] = True
        return out

    def ranges(self, codes: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per segment, (first, end) positions of the postings of each of ``codes`` (uint32)."""
        out = []
        for seg, d in zip(self.segments, self.directories):
            bits = (len(d) - 1).bit_length() - 1  # len(d) = 2^bits + 1
            p = codes >> np.uint32(32 - bits)
            lo = d[p].astype(np.int64)
            hi = d[p + 1].astype(np.int64)
            out.append((_first_at_least(seg[0], codes, lo.copy(), hi.copy()),
                        _first_above(seg[0], codes, lo, hi)))
        return out

    def lookup(self, codes: np.ndarray, live: np.ndarray | None = None, *,
               max_postings: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Postings of each query code: (query index, track key, code frame), live tracks only
        (or only those of ``live``, a :meth:`mask`).

        Stop-listed codes are skipped: a code with more than :attr:`stop_postings` postings
        (summed over segments, all tracks), and, when the codes hold more than ``max_postings``
        postings in all (default :attr:`max_postings_per_query`), the codes with most postings
        beyond that budget (codes are taken fewest postings first, each code with all its
        occurrences in ``codes``; ties in code order).
        """
        live = self.live if live is None else live
        codes = np.asarray(codes, dtype=np.uint32).ravel()
        budget = self.max_postings_per_query if max_postings is None else max_postings
        # Each distinct code once, in ascending order (neighbouring codes share pages).
        order = np.argsort(codes, kind="stable")
        sc = codes[order]
        first = np.r_[True, sc[1:] != sc[:-1]] if len(sc) else np.zeros(0, dtype=bool)
        uniq = sc[first]
        inv = np.empty(len(codes), dtype=np.int64)
        inv[order] = np.cumsum(first) - 1
        ranges = self.ranges(uniq)
        total = np.zeros(len(uniq), dtype=np.int64)
        for lo, hi in ranges:
            total += hi - lo
        ok = total <= self.stop_postings
        if budget is not None:
            cost = total * np.bincount(inv, minlength=len(uniq))  # postings returned per distinct code
            if int(cost[ok].sum()) > budget:
                cheap = np.flatnonzero(ok)[np.argsort(total[ok], kind="stable")]
                spent = np.cumsum(cost[cheap])
                ok = np.zeros_like(ok)
                ok[cheap[spent <= budget]] = True
        qs, ks, fs = [], [], []
        for seg, (lo_u, hi_u) in zip(self.segments, ranges):
            n = np.where(ok, hi_u - lo_u, 0)[inv]
            if not n.any():
                continue
            lo = lo_u[inv]
            q = np.repeat(np.arange(len(codes)), n)
            # positions lo[q] + (0..n-1) for each query, vectorised
            starts = np.repeat(lo - np.concatenate([[0], np.cumsum(n)[:-1]]), n)
            pos = starts + np.arange(len(q))
            keys = np.asarray(seg[1][pos])
            frames = np.asarray(seg[2][pos])
            alive = keys < len(live)
            alive[alive] = live[keys[alive]]
            qs.append(q[alive])
            ks.append(keys[alive])
            fs.append(frames[alive])
        if not qs:
            z = np.zeros(0, dtype=np.int64)
            return z, z.astype(np.uint32), z.astype(np.uint32)
        return np.concatenate(qs), np.concatenate(ks), np.concatenate(fs)

    def track_codes(self, key: int) -> np.ndarray:
        """All codes of one indexed track (from the fingerprints table; cached)."""
        if key not in self._codes_cache:
            self.prefetch([key])
        return self._codes_cache[key]

    def prefetch(self, keys: Iterable[int]) -> None:
        """Load the codes of several tracks in one query (candidates of a search)."""
        want = {self.tracks[k].content_hash: k for k in keys if k not in self._codes_cache}
        if not want:
            return
        if len(self._codes_cache) > 4096:
            self._codes_cache.clear()
        hashes = sorted(want)
        with self.engine.connect() as conn:
            rows = conn.exec_driver_sql(
                f"SELECT content_hash, codes FROM fingerprints WHERE content_hash IN ({','.join('?' * len(hashes))})",
                tuple(hashes)).all()
        for h, blob in rows:
            self._codes_cache[want[h]] = _as_codes(blob)
        for k in want.values():
            self._codes_cache.setdefault(k, np.zeros(0, dtype=np.uint32))


def _first_at_least(col: np.ndarray, x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Per element, the first position p in [lo, hi) of the sorted ``col`` with col[p] >= x
    (hi when none): a binary search vectorised over the elements, each inside its own range
    (``lo`` and ``hi`` are overwritten)."""
    active = np.flatnonzero(lo < hi)
    while len(active):
        a, b = lo[active], hi[active]
        mid = (a + b) >> 1
        below = col[mid] < x[active]
        lo[active[below]] = mid[below] + 1
        hi[active[~below]] = mid[~below]
        active = active[lo[active] < hi[active]]
    return lo


def _first_above(col: np.ndarray, x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Like :func:`_first_at_least` with col[p] > x."""
    active = np.flatnonzero(lo < hi)
    while len(active):
        a, b = lo[active], hi[active]
        mid = (a + b) >> 1
        below = col[mid] <= x[active]
        lo[active[below]] = mid[below] + 1
        hi[active[~below]] = mid[~below]
        active = active[lo[active] < hi[active]]
    return lo

