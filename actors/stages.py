"""The stage Ray Data runs: a small class with config in ``__init__``, expensive
setup once per worker, ``__call__(batch) -> batch``.

:class:`AnalyzeStage` takes manifest rows (path, content hash) and does
everything for them in the worker: decode, resample, features, fingerprint,
MIDI analysis, and writing the Parquet parts under ``--out``. What goes back
to the driver is one small receipt row per call (actors.results): no PCM
through the object store, no per-frame array pickled, nothing for the driver
to join or write but SQLite rows. One actor per CPU: decoding is a few percent
of the work, so fusing it costs nothing and removes the hand-off.

A failure of one file becomes an error row here, in user code, because Ray's
retries cover process deaths, not exceptions. A file whose processing kills
the worker (a decoder segfault, the OOM killer) is retried alone, a bounded
number of times, through a crash journal beside the outputs
(:class:`CrashJournal`), then becomes an error row.
"""
from __future__ import annotations

import os
import socket
import tempfile
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from actors.config import BatchConfig, DSPConfig
from actors.errors import InputFileError
from actors.results import RECEIPT_SCHEMA, Finished, part_name, receipt_row, track_result, write_parts

__all__ = ["ATTEMPTS_DIR", "MANIFEST_SCHEMA", "ROW_SCHEMA", "AnalyzeStage", "CrashJournal", "Resources",
           "Stage", "analyze_midi_file", "empty_row", "to_table", "track_result"]


MANIFEST_SCHEMA = pa.schema([
    ("content_hash", pa.string()), ("path", pa.string()), ("kind", pa.string()), ("size_bytes", pa.int64()),
])

#: Folder under ``--out`` holding each run's crash journal (``<ATTEMPTS_DIR>/<run id>/<content hash>``).
ATTEMPTS_DIR = ".attempts"

# In-process rows (pipeline.ingest.sink.ResultSink.add) for callers that store tracks they computed
# themselves, without Ray: whole audio tracks (payload: pickled track_result) and MIDI analyses.
ROW_SCHEMA = pa.schema([
    ("content_hash", pa.string()), ("path", pa.string()), ("kind", pa.string()), ("size_bytes", pa.int64()),
    ("meta", pa.string()), ("payload", pa.large_binary()),
])


def empty_row(**fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"content_hash": "", "path": "", "kind": "audio", "size_bytes": 0, "meta": "{}",
                           "payload": b""}
    row.update({k: v for k, v in fields.items() if k in row})
    return row


def to_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=ROW_SCHEMA)


def _unexpected(exc: BaseException) -> str:
    """Reason text for a failure we did not anticipate: type, message, where."""
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" at {os.path.basename(tb[-1].filename)}:{tb[-1].lineno}" if tb else ""
    return f"internal error {type(exc).__name__}: {exc}{where}"


def _error(src: Mapping[str, Any], stage: str, reason: str) -> dict[str, Any]:
    return {"content_hash": src.get("content_hash", ""), "path": src.get("path", ""), "stage": stage,
            "reason": reason}


@dataclass(frozen=True)
class Resources:
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    memory: int | None = None  # bytes, a scheduling hint


class Stage:
    """A pipeline stage. ``stateful`` stages run in an actor pool, others as tasks."""

    name: ClassVar[str] = "stage"
    stateful: ClassVar[bool] = False

    def __call__(self, batch: pa.Table) -> pa.Table | Iterator[pa.Table]:
        raise NotImplementedError


class CrashJournal:
    """Which files were being processed when a worker died, on storage every worker sees.

    Before a worker starts a file it bumps the file's count; when the file is done
    (result or error row) it removes it. A count that survives is a worker death
    during that file, so it is the number of times the file crashed its worker. The
    journal is per run (the driver removes it at the end), so an interrupted run's
    counts never weigh on the next run.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, content_hash: str) -> Path:
        return self.folder / (content_hash or "unknown")

    def crashes(self, content_hash: str) -> int:
        try:
            return int(self._path(content_hash).read_text() or 0)
        except (OSError, ValueError):
            return 0

    def start(self, content_hash: str) -> None:
        n = self.crashes(content_hash) + 1
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{content_hash}.{os.getpid()}.tmp"
        tmp.write_text(str(n))
        os.replace(tmp, self._path(content_hash))  # a worker dying mid-write leaves the old count

    def done(self, content_hash: str) -> None:
        self._path(content_hash).unlink(missing_ok=True)


def analyze_midi_file(src: Mapping[str, Any], dsp: DSPConfig) -> Finished | dict[str, Any]:
    """A MIDI file's analysis, or its error row (keys content_hash, path, stage, reason)."""
    try:
        from actors.midi.analysis import analyze_midi

        try:
            with open(src["path"], "rb") as fh:
                data = fh.read()
        except PermissionError:
            raise InputFileError("midi", "permission denied: cannot read the file") from None
        analysis = analyze_midi(data, frame_rate_hz=dsp.frame_rate_hz)
        return Finished(src["content_hash"], "midi", src["path"], int(src["size_bytes"]),
                        {"format": "MIDI", "duration_s": float(analysis.duration_s)}, analysis)
    except InputFileError as exc:
        return _error(src, exc.stage, exc.reason)
    except Exception as exc:
        return _error(src, "midi", _unexpected(exc))


class AnalyzeStage(Stage):
    """Manifest rows -> decoded, analysed and stored tracks; one receipt row per call.

    Whole tracks go through the extractor ``batch_rows`` at a time (it plans
    sub-batches by memory and splits on OOM). A file longer than ``chunk_seconds``
    streams through in spans in this worker, in one pass: the onset's top_db
    reference (the track's max) is only known at the end, so each span's mel dB
    waits in a temporary file until then, and the joined result equals the
    single-pass one. Memory stays bounded by one span whatever the file's length.
    """

    name = "analyze"
    stateful = True

    def __init__(self, dsp: DSPConfig, batch: BatchConfig, *, chunk_seconds: float, out_dir: str, run_id: str,
                 versions: Mapping[str, str], batch_rows: int = 4, max_crashes: int = 3):
        from actors.features import FeatureExtractor

        self.dsp = dsp
        self.extractor = FeatureExtractor(dsp, batch)
        self.frames_per_span = max(1, round(chunk_seconds * dsp.sample_rate / dsp.hop_length))
        self.out_dir = Path(out_dir)
        self.run_id = run_id
        self.versions = dict(versions)
        self.batch_rows = max(1, batch_rows)
        self.max_crashes = max(1, max_crashes)
        self.journal = CrashJournal(self.out_dir / ATTEMPTS_DIR / run_id)
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch: pa.Table) -> pa.Table:
        srcs = batch.to_pylist()
        ready: list[Finished] = []
        errors: list[dict[str, Any]] = []
        crashed = {s["content_hash"]: self.journal.crashes(s["content_hash"]) for s in srcs}
        # Files that were in flight when a worker died go first, each alone, so a poison file
        # costs its own retries only; its batch mates run after it, together.
        for src in (s for s in srcs if crashed[s["content_hash"]]):
            n = crashed[src["content_hash"]]
            if n >= self.max_crashes:
                errors.append(_error(src, "worker", f"crashed its worker {n} times (the process died while "
                                                    "processing this file); not retried in this run"))
                continue
            self._process([src], ready, errors)
        self._process([s for s in srcs if not crashed[s["content_hash"]]], ready, errors)
        parts = write_parts(self.out_dir, part_name(self.run_id), ready, self.versions, self.dsp.sample_rate)
        row = receipt_row(worker=self.worker, parts=parts, ready=ready, errors=errors,
                          batches=self.extractor.drain_batch_log(), versions=self.versions,
                          sample_rate=self.dsp.sample_rate)
        return pa.Table.from_pylist([row], schema=RECEIPT_SCHEMA)

    # -- one group of files ----------------------------------------------
    def _process(self, srcs: list[dict[str, Any]], ready: list[Finished], errors: list[dict[str, Any]]) -> None:
        for start in range(0, len(srcs), self.batch_rows):
            group = srcs[start:start + self.batch_rows]
            for src in group:
                self.journal.start(src["content_hash"])
            whole: list[tuple[dict[str, Any], dict[str, Any], np.ndarray]] = []
            for src in group:
                if src["kind"] == "midi":
                    out = analyze_midi_file(src, self.dsp)
                    if isinstance(out, Finished):
                        ready.append(out)
                    else:
                        errors.append(out)
                    continue
                try:
                    self._audio(src, ready, whole)
                except InputFileError as exc:
                    errors.append(_error(src, exc.stage, exc.reason))
                except MemoryError:
                    errors.append(_error(src, "decode", "out of memory while decoding"))
                except Exception as exc:  # a library bug must not sink the run
                    errors.append(_error(src, "decode", _unexpected(exc)))
            if whole:
                self._whole(whole, ready, errors)
            for src in group:
                self.journal.done(src["content_hash"])

    def _audio(self, src: dict[str, Any], ready: list[Finished],
               whole: list[tuple[dict[str, Any], dict[str, Any], np.ndarray]]) -> None:
        from actors.decode import decode_file, probe

        info = probe(src["path"])
        # "warnings": filled by the decoder once the stream has ended (a corrupted Ogg page, ...)
        warnings: list[str] = []
        meta: dict[str, Any] = {"source_sample_rate": info.source_sample_rate, "channels": info.channels,
                                "format": info.format, "warnings": warnings}
        if info.duration_s * self.dsp.frame_rate_hz > self.frames_per_span:
            ready.append(self._long(src, meta))
        else:
            whole.append((src, meta, decode_file(src["path"], self.dsp.sample_rate, warnings=warnings)))

    def _whole(self, items: list[tuple[dict[str, Any], dict[str, Any], np.ndarray]], ready: list[Finished],
               errors: list[dict[str, Any]]) -> None:
        signals = [y for _, _, y in items]
        results: list[Any]
        try:
            results = list(self.extractor(signals))
        except Exception:
            # One bad track must not fail its batch mates: retry one by one to find it.
            results = []
            for sig in signals:
                try:
                    results.extend(self.extractor([sig]))
                except Exception as exc:
                    results.append(exc)
        for (src, meta, _), res in zip(items, results):
            if isinstance(res, BaseException):
                errors.append(_error(src, "features", _unexpected(res)))
                continue
            try:
                ready.append(self._finished(src, meta, track_result(res, self.dsp)))
            except Exception as exc:
                errors.append(_error(src, "fingerprint", _unexpected(exc)))

    def _long(self, src: dict[str, Any], meta: dict[str, Any]) -> Finished:
        """A long file in spans, one decode pass (see the class docstring)."""
        from actors.decode import iter_mono_blocks, iter_spans
        from actors.features import span_window

        ex, dsp = self.extractor, self.dsp
        blocks = iter_mono_blocks(src["path"], dsp.sample_rate, warnings=meta["warnings"])
        spans = iter_spans(blocks, hop_length=dsp.hop_length, frames_per_span=self.frames_per_span,
                           span_window=lambda a, b: span_window(a, b, dsp))
        parts, mels, where = [], [], []
        with tempfile.TemporaryFile(prefix="chromaray-mel-") as spill:
            for sp in spans:
                if not np.all(np.isfinite(sp.window)):
                    raise InputFileError("decode", "corrupt: decoded samples contain NaN or infinity")
                try:
                    part, mel = ex.extract_span_deferred(sp.window, window_start=sp.window_start,
                                                         first_frame=sp.first_frame, stop_frame=sp.stop_frame,
                                                         total_samples=sp.total_samples)
                except Exception as exc:
                    raise InputFileError("features", _unexpected(exc)) from exc
                where.append((spill.tell(), mel.mel_db.shape))
                spill.write(np.ascontiguousarray(mel.mel_db, dtype=np.float32).tobytes())
                mel.mel_db = np.zeros((0, 0), np.float32)  # on disk now: one span in memory at a time
                parts.append(part)
                mels.append(mel)
            ref = max(m.ref_db for m in mels)
            for part, mel, (offset, shape) in zip(parts, mels, where):
                spill.seek(offset)
                mel.mel_db = np.frombuffer(spill.read(4 * shape[0] * shape[1]), dtype=np.float32).reshape(shape)
                part.onset = ex.span_onset(mel, ref)
                mel.mel_db = np.zeros((0, 0), np.float32)
        try:
            result = track_result(ex.finalize_track(parts), dsp)
        except Exception as exc:
            raise InputFileError("features", f"could not join the spans of a long file: {exc}") from exc
        return self._finished(src, meta, result)

    @staticmethod
    def _finished(src: dict[str, Any], meta: dict[str, Any], result: Any) -> Finished:
        return Finished(src["content_hash"], "audio", src["path"], int(src["size_bytes"]), meta, result)
