"""The stages Ray Data runs: small classes with config in ``__init__``,
expensive setup once per worker, ``__call__(batch) -> batch``.

Rows travel as Arrow tables with the fixed schema ``ROW_SCHEMA`` so every
operator agrees on types whatever mix of audio spans, MIDI files and error
rows a block holds. Bulky results ride in ``payload`` (pickled dict, trusted:
produced and consumed inside the same job).

A failure of one file becomes an error row here, in user code, because Ray's
retries cover process deaths, not exceptions.
"""
from __future__ import annotations

import functools
import json
import os
import pickle
import socket
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from actors.config import BatchConfig, DSPConfig
from actors.errors import InputFileError

__all__ = ["MANIFEST_SCHEMA", "ROW_SCHEMA", "DecodeStage", "FeatureStage", "Resources", "Stage", "empty_row",
           "error_row", "to_table", "track_result"]


ROW_SCHEMA = pa.schema([
    ("content_hash", pa.string()),
    ("path", pa.string()),
    ("kind", pa.string()),  # audio | midi
    ("size_bytes", pa.int64()),
    ("error_stage", pa.string()),  # "" when the row is good
    ("error_reason", pa.string()),
    ("meta", pa.string()),  # JSON: source rate, channels, format, duration
    ("span_index", pa.int32()),
    ("n_spans", pa.int32()),  # -1 while unknown (long file still streaming)
    ("window_start", pa.int64()),
    ("first_frame", pa.int64()),
    ("stop_frame", pa.int64()),
    ("total_samples", pa.int64()),  # -1 while unknown
    ("ref_db", pa.float64()),  # the track's top_db reference for spans of long files (NaN: none)
    ("audio", pa.large_binary()),  # float32 samples, emptied after the feature stage
    ("payload", pa.large_binary()),  # pickled results
    ("worker_log", pa.string()),  # JSON list of batch-planner records (feature stage)
])

MANIFEST_SCHEMA = pa.schema([
    ("content_hash", pa.string()), ("path", pa.string()), ("kind", pa.string()), ("size_bytes", pa.int64()),
])


def empty_row(**fields: Any) -> dict[str, Any]:
    row = {"content_hash": "", "path": "", "kind": "audio", "size_bytes": 0, "error_stage": "", "error_reason": "",
           "meta": "{}", "span_index": 0, "n_spans": 1, "window_start": 0, "first_frame": 0, "stop_frame": 0,
           "total_samples": -1, "ref_db": float("nan"), "audio": b"", "payload": b"", "worker_log": ""}
    row.update(fields)
    return row


def to_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=ROW_SCHEMA)


def error_row(src: dict[str, Any], stage: str, reason: str) -> dict[str, Any]:
    return empty_row(content_hash=src.get("content_hash", ""), path=src.get("path", ""), kind=src.get("kind", "audio"),
                     size_bytes=src.get("size_bytes", 0), error_stage=stage, error_reason=reason)


def _unexpected(exc: BaseException) -> str:
    """Reason text for a failure we did not anticipate: type, message, where."""
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" at {os.path.basename(tb[-1].filename)}:{tb[-1].lineno}" if tb else ""
    return f"internal error {type(exc).__name__}: {exc}{where}"


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


class DecodeStage(Stage):
    """Manifest rows -> audio spans (streamed, resampled mono) and analysed MIDI files."""

    name = "decode"
    stateful = False

    def __init__(self, dsp: DSPConfig, *, chunk_seconds: float):
        self.dsp = dsp
        self.frames_per_span = max(1, round(chunk_seconds * dsp.sample_rate / dsp.hop_length))

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        for src in batch.to_pylist():
            if src["kind"] == "midi":
                yield to_table([self._midi(src)])
                continue
            try:
                for rows in self._audio(src):
                    yield to_table(rows)
            except InputFileError as exc:
                yield to_table([error_row(src, exc.stage, exc.reason)])
            except MemoryError:
                yield to_table([error_row(src, "decode", "out of memory while decoding")])
            except Exception as exc:  # a library bug must not sink the run
                yield to_table([error_row(src, "decode", _unexpected(exc))])

    def _audio(self, src: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
        from actors.decode import iter_mono_blocks, iter_spans, probe
        from actors.features import span_window

        info = probe(src["path"])
        meta = json.dumps({"source_sample_rate": info.source_sample_rate, "channels": info.channels,
                           "format": info.format})

        def spans() -> Iterator[Any]:
            blocks = iter_mono_blocks(src["path"], self.dsp.sample_rate)
            return iter_spans(blocks, hop_length=self.dsp.hop_length, frames_per_span=self.frames_per_span,
                              span_window=lambda a, b: span_window(a, b, self.dsp))

        ref_db = float("nan")
        if info.duration_s * self.dsp.frame_rate_hz > self.frames_per_span:
            # A long file: one cheap pass (STFT + mel) for the track's loudness
            # reference makes every span's onset equal to the single-pass result.
            ex = _reference_extractor(self.dsp)
            ref_db = max(ex.frames_ref_db(sp.window, window_start=sp.window_start, first_frame=sp.first_frame,
                                          stop_frame=sp.stop_frame, total_samples=sp.total_samples)
                         for sp in spans())
        for span in spans():
            if not np.all(np.isfinite(span.window)):
                raise InputFileError("decode", "corrupt: decoded samples contain NaN or infinity")
            yield [empty_row(
                content_hash=src["content_hash"], path=src["path"], kind="audio", size_bytes=src["size_bytes"],
                meta=meta, span_index=span.index, n_spans=span.n_spans, window_start=span.window_start,
                first_frame=span.first_frame, stop_frame=span.stop_frame,
                total_samples=-1 if span.total_samples is None else span.total_samples, ref_db=ref_db,
                audio=span.window.tobytes())]

    def _midi(self, src: dict[str, Any]) -> dict[str, Any]:
        try:
            from actors.midi.analysis import analyze_midi

            try:
                with open(src["path"], "rb") as fh:
                    data = fh.read()
            except PermissionError:
                raise InputFileError("midi", "permission denied: cannot read the file") from None
            analysis = analyze_midi(data, frame_rate_hz=self.dsp.frame_rate_hz)
            meta = json.dumps({"format": "MIDI", "duration_s": float(analysis.duration_s)})
            return empty_row(content_hash=src["content_hash"], path=src["path"], kind="midi",
                             size_bytes=src["size_bytes"], meta=meta, payload=pickle.dumps(analysis, protocol=5))
        except InputFileError as exc:
            return error_row(src, exc.stage, exc.reason)
        except Exception as exc:
            return error_row(src, "midi", _unexpected(exc))


@functools.lru_cache(maxsize=2)
def _reference_extractor(dsp: DSPConfig) -> Any:
    from actors.features import FeatureExtractor

    return FeatureExtractor(dsp, BatchConfig(device="cpu"))


def track_result(features: Any, dsp: DSPConfig) -> dict[str, Any]:
    """Everything stored for one finished audio track: features + fingerprint codes."""
    from actors.fingerprint import FP_VERSION, fingerprint_codes

    codes = fingerprint_codes(features.chroma, frame_rate_hz=features.frame_rate_hz)
    return {"features": features, "fp_codes": np.asarray(codes, dtype="<u4"), "fp_version": FP_VERSION}


class FeatureStage(Stage):
    """Audio spans -> features (STFT, HPSS, chroma, onset, tempo) and fingerprint codes.

    Whole tracks in a batch go through the extractor together (it plans
    sub-batches by memory and splits on OOM); spans of long files are
    computed one by one and joined on the driver.
    """

    name = "features"
    stateful = True

    def __init__(self, dsp: DSPConfig, batch: BatchConfig):
        from actors.features import FeatureExtractor

        self.dsp = dsp
        self.extractor = FeatureExtractor(dsp, batch)
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        out: list[dict[str, Any] | None] = [None] * len(rows)
        whole: list[int] = []
        for i, row in enumerate(rows):
            if row["error_stage"] or row["kind"] != "audio":
                out[i] = row
            elif row["n_spans"] == 1:
                whole.append(i)
            else:
                out[i] = self._span(row)
        if whole:
            self._whole(rows, whole, out)
        records = self.extractor.drain_batch_log()
        result = [r for r in out if r is not None]
        for r in result:
            r["audio"] = b""
        if result:
            result[0]["worker_log"] = json.dumps({"worker": self.worker, "batches": records}, default=float)
        return to_table(result)

    @staticmethod
    def _samples(row: dict[str, Any]) -> np.ndarray:
        return np.frombuffer(row["audio"], dtype=np.float32)

    def _whole(self, rows: list[dict[str, Any]], idx: list[int], out: list[Any]) -> None:
        signals = []
        for i in idx:
            window, start = self._samples(rows[i]), rows[i]["window_start"]
            signals.append(window[-start: -start + rows[i]["total_samples"]] if start < 0 else window)
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
        for i, res in zip(idx, results):
            if isinstance(res, BaseException):
                out[i] = error_row(rows[i], "features", _unexpected(res))
                continue
            try:
                out[i] = dict(rows[i], payload=pickle.dumps(track_result(res, self.dsp), protocol=5))
            except Exception as exc:
                out[i] = error_row(rows[i], "fingerprint", _unexpected(exc))

    def _span(self, row: dict[str, Any]) -> dict[str, Any]:
        total = row["total_samples"]
        try:
            part = self.extractor.extract_span(self._samples(row), window_start=row["window_start"],
                                               first_frame=row["first_frame"], stop_frame=row["stop_frame"],
                                               total_samples=None if total < 0 else total,
                                               ref_db=None if np.isnan(row["ref_db"]) else row["ref_db"])
        except Exception as exc:
            return error_row(row, "features", _unexpected(exc))
        return dict(row, payload=pickle.dumps({"span": part}, protocol=5))

