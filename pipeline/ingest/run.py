"""The fingerprint job on the driver: discover, plan what is new, stream it
through Ray Data, store the results.

    manifest (sharded) -> AnalyzeStage (actor pool, one per CPU: decode, features, fingerprint,
    MIDI, Parquet parts written by the worker) -> receipts -> ResultSink (driver: SQLite only)
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from actors.errors import ChromarayError
from actors.stages import MANIFEST_SCHEMA, AnalyzeStage, Resources
from pipeline.config import ChromarayConfig
from pipeline.ingest.discover import ManifestRow, build_manifest, scan
from pipeline.ingest.plan import apply_path_changes, plan_work, versions_for
from pipeline.ingest.progress import Progress
from pipeline.ingest.sink import ResultSink
from pipeline.runtime import STOP_REQUESTED, apply_stage
from pipeline.store import ParquetPart, Run, TrackPath, claim_run, finish_run, known_parts, open_db, utcnow
from pipeline.store.parquet import prepare_out_dir, remove_old_journals, remove_orphans, remove_run_leftovers

__all__ = ["RunSummary", "feature_resources", "run_fingerprint"]


@dataclass
class RunSummary:
    run_id: str
    discovered: int = 0
    processed: int = 0  # tracks computed this run
    skipped: int = 0  # already in the database at the current version
    path_updates: int = 0  # moved/renamed/copied files recorded without recomputing
    errors: int = 0
    known_errors: int = 0  # failed before with the same content; not retried
    audio_seconds: float = 0.0
    wall_s: float = 0.0
    error_rows: list[tuple[str, str, str]] = field(default_factory=list)
    skipped_paths: int = 0  # not usable as input files (FIFO, dangling link, ...); also in errors

    @property
    def audio_hours_per_min(self) -> float:
        return self.audio_seconds / 3600.0 / max(self.wall_s / 60.0, 1e-9)


def feature_resources(cfg: ChromarayConfig, cpus: float, gpus: float) -> tuple[Resources, int]:
    p = cfg.pipeline
    want_gpu = cfg.batch.device == "gpu" or p.feature_gpus > 0 or (cfg.batch.device == "auto" and gpus > 0)
    if want_gpu:
        if gpus <= 0:
            raise ChromarayError("a GPU was requested for the feature actors but the Ray cluster has none "
                                 "(use --device cpu)")
        per = p.feature_gpus or 1.0
        size = p.feature_actors or max(1, int(gpus / per))
        return Resources(num_cpus=p.feature_cpus, num_gpus=per), size
    # One actor per CPU: each decodes and analyses its own files (decoding is a few percent of the work).
    size = p.feature_actors or max(1, int(cpus // p.feature_cpus))
    return Resources(num_cpus=p.feature_cpus), size


def run_fingerprint(inputs: Sequence[str], *, db: str, out: str, cfg: ChromarayConfig | None = None,
                    address: str | None = None, verbose: bool = False, show_progress: bool = True,
                    retry_errors: bool = False, num_cpus: int | None = None, name: str | None = None,
                    log: Callable[[str], object] = print) -> RunSummary:
    cfg = cfg or ChromarayConfig()
    t0 = time.monotonic()
    engine = open_db(db)
    out_dir = prepare_out_dir(out)
    found = scan(inputs)  # files, and every path left out with its reason (error rows, stage discover)
    files = found.files
    versions = versions_for(cfg)
    # The writer locks (refuse while another run of this database, or of this --out, lives) and the
    # heartbeat, before anything is touched: the cleanup below never sees a live run's parts
    # (pipeline/store/runs.py).
    run_id = claim_run(engine, "fingerprint", name=name, out_dir=out_dir,
                       config={"inputs": list(inputs), "out": str(out_dir), **cfg.to_dict()})
    summary = RunSummary(run_id, discovered=len(files), skipped_paths=len(found.skipped))
    status = "failed"
    try:
        removed = remove_orphans(out_dir, known_parts(engine))
        if removed:
            log(f"removed {len(removed)} Parquet part(s) left by an interrupted run")
        remove_old_journals(out_dir)  # an interrupted run's crash counts never weigh on this one
        known = {p: (sz, mt, h) for p, sz, mt, h in _known_paths(engine)}
        manifest = build_manifest(files, known)
        plan = plan_work(engine, manifest, inputs, versions, retry_errors=retry_errors,
                         skipped_paths=[skip.path for skip in found.skipped])
        apply_path_changes(engine, plan, run_id)
        summary.skipped, summary.known_errors = plan.skipped, plan.known_errors
        summary.path_updates = len(plan.path_updates)
        with Session(engine) as s, s.begin():
            run = s.get_one(Run, run_id)
            run.n_total, run.n_skipped = len(plan.to_process) + len(plan.read_errors), plan.skipped
        sink = ResultSink(engine, out_dir, run_id, dsp=cfg.dsp, versions=versions, paths_by_hash=plan.paths_by_hash,
                          rows_per_part=cfg.pipeline.parquet_rows_per_part, metrics=_metrics(run_id))
        for row in plan.read_errors:
            sink.error(row.path, "", "read", row.error)
        for skip in found.skipped:
            sink.error(skip.path, "", "discover", skip.reason)
        for row, stage, reason in plan.copied_errors:
            sink.error(row.path, row.content_hash, stage, reason, counted=False)
        if not plan.to_process:
            sink.flush()
            log(f"nothing new: {len(files)} file(s) found, {plan.skipped} already processed"
                + (f", {len(found.skipped)} path(s) skipped" if found.skipped else "")
                + (f", {summary.path_updates} path(s) updated" if summary.path_updates else "")
                + (f", {plan.known_errors} known error(s) not retried" if plan.known_errors else ""))
        else:
            from pipeline.runtime import native_stderr_to

            with native_stderr_to(None if verbose else out_dir / "ray-driver.log"):
                info = _start_ray(engine, run_id, address, verbose, num_cpus)
                _stream(plan.to_process, cfg, sink, info, engine, run_id, show_progress)
        from pipeline.search import index

        index.sync(engine)  # identify/duplicates see exactly the fingerprints table
        summary.processed = sink.counts.done
        summary.errors = sink.counts.errors
        summary.audio_seconds = sink.counts.audio_seconds
        summary.error_rows = sink.counts.error_rows
        status = "finished"
        return summary
    except BaseException:
        # Ray may wrap the interrupt on its way out; the event says it was a stop, not a crash.
        status = "stopped" if STOP_REQUESTED.is_set() else "failed"
        raise
    finally:
        summary.wall_s = time.monotonic() - t0
        finish_run(engine, run_id, status, summary={
            "discovered": summary.discovered, "processed": summary.processed, "skipped": summary.skipped,
            "path_updates": summary.path_updates, "errors": summary.errors, "known_errors": summary.known_errors,
            "skipped_paths": summary.skipped_paths,
            "audio_seconds": summary.audio_seconds, "wall_s": summary.wall_s})


def _known_paths(engine: Engine) -> list[tuple[str, int, int, str]]:
    with Session(engine) as s:
        return list(s.execute(select(TrackPath.path, TrackPath.size_bytes, TrackPath.mtime_ns, TrackPath.content_hash)))


def _metrics(run_id: str) -> Any:
    from pipeline.ingest.metrics import RunMetrics

    return RunMetrics(run_id)


def _start_ray(engine: Engine, run_id: str, address: str | None, verbose: bool, num_cpus: int | None) -> Any:
    from pipeline.runtime import init_ray

    info = init_ray(address, verbose=verbose, num_cpus=num_cpus)
    with Session(engine) as s, s.begin():
        run = s.get_one(Run, run_id)
        run.ray_address, run.ray_dashboard_url, run.updated_at = info.address, info.dashboard_url, utcnow()
    return info


def shard_size(n_files: int, pool: int, most: int) -> int:
    """Files per worker call: a few calls per actor so the pool ends together, at most ``most``
    (a call's tracks share one Parquet part per dataset and one SQLite transaction)."""
    return max(1, min(most, -(-n_files // (4 * max(1, pool)))))


def _stream(rows: list[ManifestRow], cfg: ChromarayConfig, sink: ResultSink, info: Any, engine: Engine, run_id: str,
            show_progress: bool) -> None:
    import ray.data

    res, pool = feature_resources(cfg, info.cpus, info.gpus)
    # Largest first: the long files start early instead of keeping one actor busy at the end.
    rows = sorted(rows, key=lambda r: -r.size_bytes)
    per = shard_size(len(rows), pool, cfg.pipeline.files_per_shard)
    shards = [pa.Table.from_pylist([{"content_hash": r.content_hash, "path": r.path, "kind": r.kind,
                                     "size_bytes": r.size_bytes} for r in rows[i:i + per]], schema=MANIFEST_SCHEMA)
              for i in range(0, len(rows), per)]
    ds = ray.data.from_arrow(shards)
    ds = apply_stage(ds, AnalyzeStage, {"dsp": cfg.dsp, "batch": cfg.batch, "chunk_seconds": cfg.pipeline.chunk_seconds,
                                        "out_dir": str(sink.out_dir), "run_id": run_id, "versions": sink.versions,
                                        "batch_rows": cfg.pipeline.feature_batch_rows,
                                        "max_crashes": cfg.pipeline.max_worker_crashes},
                     resources=res, batch_size=per, pool_size=pool)
    # Errors recorded before streaming (skipped and unreadable paths) are not files of this stream.
    progress = Progress(engine, run_id, len(rows), interval_s=cfg.pipeline.progress_interval_s, show=show_progress,
                        base_errors=sink.counts.errors)
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1):
            sink.add_receipts(batch)
            progress.update(sink.done_so_far, sink.counts.errors, sink.counts.audio_seconds,
                            detail={"batches": sink.recent_batches})
        sink.flush()
        with Session(engine) as s:
            listed = set(s.scalars(select(ParquetPart.name).where(ParquetPart.run_id == run_id)))
        remove_run_leftovers(sink.out_dir, run_id, listed)
    finally:
        c = sink.counts
        progress.update(c.done, c.errors, c.audio_seconds, force=True)
        progress.close()
