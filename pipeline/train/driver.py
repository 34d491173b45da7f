"""Training driver: Parquet outputs -> Ray Data windows -> Ray Train (TorchTrainer, DDP).

Flow of :func:`run_training`:

1. Committed Parquet parts of ``tokens`` (data=midi) or ``frames`` (data=audio,
   rows of kind audio) from ``parquet_parts``. Each track of table ``tracks``
   is taken once: from the newest part whose row has the track's current
   ``features_version`` (a re-analysed track's older parts stay listed), chosen
   on the driver from the small columns (:func:`current_rows`). Audio frames of
   different frame rates (other DSP settings) are refused: a window mixes no
   rates. Split train/held-out by content hash (sha1 of the hash,
   deterministic; at least one track each side when there are two or more
   tracks; a single track is split by time: its last ``eval_fraction`` of
   windows are held out).
2. ``ray.data.read_parquet`` on those files, ``map_batches`` keeping the chosen
   rows and cutting each track into non-overlapping windows of ``seq_len + 1``
   steps (column ``x``), materialised, so the training workers only stream
   blocks from the object store through ``get_dataset_shard`` (shuffled by a
   seeded local buffer).
3. Trivial baselines on the same windows: unigram cross-entropy (tokens) or
   the mean-frame MSE and copy-last-frame MSE (frames).
4. ``TorchTrainer`` (Ray Train V2) with the profile's ScalingConfig, ``RunConfig(name,
   storage_path)`` (same name + storage = resume from its latest checkpoint),
   ``FailureConfig(max_failures)``, ``CheckpointConfig(num_to_keep)``; the workers
   get one typed :class:`~actors.train.config.LoopConfig` (:func:`loop_config`).
   Rank 0 writes per-step metrics through :class:`SQLiteMetricsSink`.
5. ``runs`` row kind='train' (reused when the same run name resumes) finished
   with a summary: held-out loss (perplexity or frame MSE), baselines, first/last
   losses, frame rate (audio), wall time, checkpoint path; LoRA runs also export
   the merged model.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from actors.errors import ChromarayError
from actors.train.config import FaultInjection, LoopConfig, LoraConfig, MetricsSink, default_warmup
from actors.train.models import N_FRAME_FEATURES, ModelSpec, load_model, save_model
from pipeline.store import (
    Run,
    TrainMetric,
    adopt_run,
    finish_run,
    new_run,
    open_db,
    parts_of,
    record_metrics,
    results_dir,
    utcnow,
)
from pipeline.train.profiles import Profile, check_cluster_fits, resolve_workers
from pipeline.train.rows import TrackRow, current_rows

__all__ = ["ARCHS", "BASELINE_MAX_WINDOWS", "DATASET_OF", "PreparedData", "SQLiteMetricsSink", "TrackRow",
           "TrainOutcome", "TrainRequest", "Windower", "check_request", "current_rows", "eval_hashes",
           "export_merged", "loop_config", "loss_curve", "model_spec", "prepare_data", "read_vocab_size",
           "resolve_checkpoint", "run_training"]

log = logging.getLogger(__name__)

DATASET_OF = {"midi": "tokens", "audio": "frames"}
ARCHS = ("mamba", "transformer", "lora")
#: Windows read on the driver for baselines (enough for a stable estimate).
BASELINE_MAX_WINDOWS = 20_000


@dataclasses.dataclass(frozen=True)
class TrainRequest:
    """One ``chromaray train`` invocation. ``arch='lora'`` needs ``base``.

    ``out`` overrides the Parquet directory (default: the one the database names, see
    :meth:`out_dir`); ``storage`` the Ray Train storage path (default:
    ``<db dir>/train_runs``, see :attr:`storage_dir`). ``fault`` is a testing
    hook for the loop (one worker exits once at a step).
    """

    arch: str
    data: str
    db: Path
    name: str
    profile: Profile
    max_steps: int | None = None
    out: Path | None = None
    storage: Path | None = None
    base: Path | None = None
    seed: int = 0
    fault: FaultInjection | None = None
    ray_dashboard_url: str | None = None

    def __post_init__(self) -> None:
        check_request(self.arch, self.data, self.name, base=self.base, max_steps=self.max_steps)
        # Frozen: the absolute paths are set once, here.
        object.__setattr__(self, "db", _absolute(self.db))
        if self.base is not None:
            object.__setattr__(self, "base", _absolute(self.base))

    def out_dir(self, engine: Engine) -> Path:
        """The Parquet folder: ``out`` when given (an override), else the one the database
        names (:func:`pipeline.store.results_dir`, the --out of its latest fingerprint run)."""
        if self.out:
            return _absolute(self.out)
        found = results_dir(engine)
        if found is None:
            raise ChromarayError(f"{self.db} names no Parquet folder (no `chromaray fingerprint` run); give --out")
        return _absolute(found)

    @property
    def storage_dir(self) -> Path:
        return _absolute(self.storage) if self.storage else self.db.parent / "train_runs"

    @property
    def steps(self) -> int:
        """Optimizer steps: the request's, else the profile's."""
        return self.max_steps or self.profile.max_steps

    def base_checkpoint(self) -> Path | None:
        """The checkpoint a LoRA run puts its adapters on (:func:`resolve_checkpoint` of ``base``);
        None for the other models."""
        return resolve_checkpoint(self.base) if self.arch == "lora" and self.base else None


def check_request(arch: str, data: str, name: str, *, base: Path | None, max_steps: int | None) -> None:
    """The checks of a :class:`TrainRequest` that need no profile (the CLI runs them before Ray starts)."""
    if arch not in ARCHS:
        raise ChromarayError(f"unknown model {arch!r}; choose one of {', '.join(ARCHS)}")
    if data not in DATASET_OF:
        raise ChromarayError(f"--data must be one of {', '.join(DATASET_OF)}, got {data!r}")
    if arch == "lora" and base is None:
        raise ChromarayError("train lora needs --base CHECKPOINT (a model checkpoint directory)")
    if not name or "/" in name:
        raise ChromarayError(f"invalid run name {name!r}")
    if max_steps is not None and max_steps < 1:
        raise ChromarayError("--max-steps must be >= 1")


def _absolute(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


@dataclasses.dataclass
class TrainOutcome:
    run_id: str
    checkpoint: str
    export: str | None
    summary: dict[str, Any]


# ---------------------------------------------------------------- data

def read_vocab_size(path: Path) -> int | None:
    """Vocabulary size from ``tokens/vocab.json`` (a JSON object), or None.

    Accepts ``{"vocab_size": n}``, ``{"vocab": {token: id}}`` or ``{token: id}``:
    the size is max id + 1.
    """
    if not path.exists():
        return None
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ChromarayError(f"cannot read vocabulary {path}: {exc}") from exc
    if not isinstance(obj, dict):
        return None
    for key in ("vocab_size", "size"):
        if isinstance(obj.get(key), int):
            return int(obj[key])
    vocab = obj.get("vocab")
    table: dict = vocab if isinstance(vocab, dict) else obj
    ids = [v for v in table.values() if isinstance(v, int) and not isinstance(v, bool)]
    return max(ids) + 1 if ids else None


def eval_hashes(hashes: list[str], fraction: float) -> set[str]:
    """Held-out content hashes: deterministic in the hashes alone (sha1 score < fraction),
    at least one held out and one kept when there are two or more tracks."""
    uniq = sorted(set(hashes), key=lambda h: hashlib.sha1(h.encode()).hexdigest())
    if len(uniq) < 2:
        return set()
    score = {h: int(hashlib.sha1(h.encode()).hexdigest()[:8], 16) / 2**32 for h in uniq}
    held = [h for h in uniq if score[h] < fraction] or uniq[:1]
    if len(held) == len(uniq):
        held = held[:-1]
    return set(held)


def _one_frame_rate(rows: Mapping[str, TrackRow]) -> float:
    """The frame rate all audio rows share; ChromarayError when the tracks were analysed with
    settings of different frame rates (a window must not mix them)."""
    rates = [r.frame_rate_hz or 0.0 for r in rows.values()]
    if any(not r > 0 for r in rates):  # also NaN
        raise ChromarayError("audio frames rows without a frame rate (frame_rate_hz): fingerprint the library again")
    # Rounded: the same settings give the same float, other settings differ by far more.
    by_rate = Counter(round(r, 4) for r in rates)
    if len(by_rate) > 1:
        listing = ", ".join(f"{rate:g} Hz: {n} track{'s' if n > 1 else ''}" for rate, n in by_rate.most_common())
        raise ChromarayError(f"the audio tracks were analysed at {len(by_rate)} frame rates ({listing}); a run "
                             "trains on one rate: fingerprint them again with one set of DSP settings")
    return rates[0]


class Windower:
    """``map_batches`` function (pyarrow batch in, numpy out): tracks -> windows ``x``.

    tokens: ``x`` (n, L+1) int64. frames: ``x`` (n, L+1, 13) float32 =
    12 chroma bins (max-normalised per frame upstream) + onset strength
    divided by the track's maximum (so tracks of different loudness compare).
    Only the rows in ``keep`` (content hash -> the part file of its current row,
    see :func:`current_rows`; batches carry the file as column ``path``) are cut.
    ``want_eval`` selects the held-out or the training side of the split.
    """

    def __init__(self, *, task: str, seq_len: int, keep: Mapping[str, str], held_out: set[str], want_eval: bool,
                 tail_fraction: float | None = None):
        self.task, self.seq_len, self.held_out, self.want_eval = task, seq_len, held_out, want_eval
        self.keep = dict(keep)
        self.tail_fraction = tail_fraction  # single-track library: split by time instead

    def _track(self, batch: Any, i: int) -> np.ndarray | None:
        if self.task == "tokens":
            v = batch.column("tokens")[i]
            return None if not v.is_valid else np.asarray(v.values.to_numpy(zero_copy_only=False), dtype=np.int64)
        c, o = batch.column("chroma")[i], batch.column("onset")[i]
        if not c.is_valid or not o.is_valid:
            return None
        chroma = np.asarray(c.values.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, 12)
        onset = np.asarray(o.values.to_numpy(zero_copy_only=False), dtype=np.float32)
        n = min(len(chroma), len(onset))
        onset = onset[:n] / max(float(onset[:n].max(initial=0.0)), 1e-6)
        return np.concatenate([np.nan_to_num(chroma[:n]), onset[:, None]], axis=1)

    def __call__(self, batch: Any) -> dict[str, np.ndarray]:
        L = self.seq_len
        out = []
        hashes = batch.column("content_hash").to_pylist()
        paths = batch.column("path").to_pylist()
        for i, (h, path) in enumerate(zip(hashes, paths)):
            if self.keep.get(h) != path:
                continue  # a stale version, another kind, or a track no longer in the database
            if self.tail_fraction is None and (h in self.held_out) != self.want_eval:
                continue
            seq = self._track(batch, i)
            if seq is None:
                continue
            n = (len(seq) - 1) // L
            if n <= 0:
                continue
            idx = np.arange(n)[:, None] * L + np.arange(L + 1)[None, :]
            w = seq[idx]
            if self.tail_fraction is not None:
                k = max(1, round(n * self.tail_fraction)) if n >= 2 else 0
                w = w[n - k:] if self.want_eval else w[:n - k]
            out.append(w)
        if out:
            return {"x": np.concatenate(out)}
        shape = (0, L + 1) if self.task == "tokens" else (0, L + 1, N_FRAME_FEATURES)
        return {"x": np.zeros(shape, np.int64 if self.task == "tokens" else np.float32)}


@dataclasses.dataclass
class PreparedData:
    train: Any  # ray.data.Dataset (materialised), column x
    eval: Any
    n_train: int
    n_eval: int
    n_tracks: int
    n_eval_tracks: int
    vocab_size: int  # tokens task; 0 for frames
    baseline: dict[str, float]
    frame_rate_hz: float | None  # frames task: the one analysis frame rate of every window
    features_versions: list[str]  # of the rows trained on


def prepare_data(engine: Engine, out_dir: Path, data: str, *, seq_len: int, eval_fraction: float) -> PreparedData:
    """Build the train/held-out window datasets and their baselines (Ray must be running)."""
    import ray.data

    dataset = DATASET_OF[data]
    task = dataset
    parts = parts_of(engine, dataset)
    if not parts:
        raise ChromarayError(f"no committed {dataset!r} Parquet parts in the database: run `chromaray fingerprint` "
                             f"on a library with {data} files first (or pass --db/--out of that run)")
    files = [str(out_dir / p) for p in parts]
    missing = [f for f in files if not Path(f).exists()]
    if missing:
        raise ChromarayError(f"{len(missing)} Parquet parts listed in the database are missing under {out_dir} "
                             f"(first: {missing[0]}); pass --out with the directory of that run")
    # The driver reads only small columns (hashes, versions, rates; for tokens the largest
    # id, so the embedding covers the data even when vocab.json is absent or from another
    # tokenizer version) and picks the one current row of every track.
    rows = current_rows(engine, files, dataset)
    if not rows:
        raise ChromarayError(f"the {dataset!r} dataset has no rows of the database's current {data} tracks")
    frame_rate = _one_frame_rate(rows) if task == "frames" else None
    vocab = 0
    if task == "tokens":
        vocab_file = read_vocab_size(out_dir / "tokens" / "vocab.json")
        vocab = max(vocab_file or 0, max(r.max_token for r in rows.values()) + 1)
    held = eval_hashes(list(rows), eval_fraction)
    n_tracks = len(rows)
    tail = eval_fraction if n_tracks == 1 else None
    keep = {h: r.path for h, r in rows.items()}

    columns = ["content_hash", "tokens"] if task == "tokens" else ["content_hash", "chroma", "onset"]
    used = {r.path for r in rows.values()}
    ds = ray.data.read_parquet([f for f in files if f in used], columns=columns, include_paths=True)

    def windows(want_eval: bool) -> Any:
        fn = Windower(task=task, seq_len=seq_len, keep=keep, held_out=held, want_eval=want_eval, tail_fraction=tail)
        return ds.map_batches(fn, batch_format="pyarrow", batch_size=8)

    # Materialised so training workers never wait on (or compete for CPUs with)
    # read tasks; windows are shuffled while iterating (local shuffle buffer).
    train = windows(False).materialize()
    held_ds = windows(True).materialize()
    n_train, n_eval = train.count(), held_ds.count()
    if n_train == 0:
        raise ChromarayError(f"no training window of {seq_len + 1} steps: tracks are too short; lower --seq-len")
    baseline = {k: float(v) for k, v in _baselines(task, train, held_ds if n_eval else None, vocab).items()}
    return PreparedData(train=train, eval=held_ds, n_train=n_train, n_eval=n_eval, n_tracks=n_tracks,
                        n_eval_tracks=len(held) if tail is None else 1, vocab_size=vocab, baseline=baseline,
                        frame_rate_hz=frame_rate, features_versions=sorted({r.version for r in rows.values()}))


def _iter_windows(ds: Any, limit: int) -> Iterator[np.ndarray]:
    n = 0
    for b in ds.iter_batches(batch_size=512, batch_format="numpy"):
        yield b["x"]
        n += len(b["x"])
        if n >= limit:
            return


def _baselines(task: str, train: Any, held: Any | None, vocab: int) -> dict[str, float]:
    """Trivial predictors fitted on training windows, scored on train and held-out targets.

    tokens: unigram (add-one smoothed) cross-entropy in nats/token, and log(V).
    frames: MSE of the mean training frame, and of copying the previous frame.
    """
    if task == "tokens":
        counts = np.ones(vocab, np.float64)
        for x in _iter_windows(train, BASELINE_MAX_WINDOWS):
            counts += np.bincount(x[:, 1:].ravel(), minlength=vocab)
        logp = np.log(counts / counts.sum())

        def ce(ds: Any) -> float:
            s = n = 0.0
            for x in _iter_windows(ds, BASELINE_MAX_WINDOWS):
                s -= logp[x[:, 1:]].sum()
                n += x[:, 1:].size
            return s / max(n, 1)

        out = {"unigram_ce_train": ce(train), "uniform_ce": math.log(vocab)}
        if held is not None:
            out["unigram_ce_eval"] = ce(held)
        return out
    total = np.zeros(N_FRAME_FEATURES)
    count = 0
    for x in _iter_windows(train, BASELINE_MAX_WINDOWS):
        total += x[:, 1:].reshape(-1, N_FRAME_FEATURES).sum(0)
        count += x[:, 1:].shape[0] * x[:, 1:].shape[1]
    mean = total / max(count, 1)

    def mse(ds: Any) -> tuple[float, float]:
        sm = sp = n = 0.0
        for x in _iter_windows(ds, BASELINE_MAX_WINDOWS):
            t = x[:, 1:].astype(np.float64)
            sm += ((t - mean) ** 2).sum()
            sp += ((t - x[:, :-1]) ** 2).sum()
            n += t.size
        return sm / max(n, 1), sp / max(n, 1)

    out = dict(zip(("mean_frame_mse_train", "copy_last_mse_train"), mse(train)))
    if held is not None:
        out.update(zip(("mean_frame_mse_eval", "copy_last_mse_eval"), mse(held)))
    return out


# ---------------------------------------------------------------- metrics sink

class SQLiteMetricsSink:
    """Picklable writer rank 0 calls with per-step rows; one short transaction per call.

    Also advances ``runs.n_done`` (steps) and ``updated_at`` for the dashboard.
    The SQLite file must be reachable from rank 0's node (local runs; on a
    multi-node cluster put the database on shared storage).
    """

    def __init__(self, db_path: str, run_id: str, max_steps: int):
        self.db_path, self.run_id, self.max_steps = str(db_path), run_id, max_steps
        self._engine: Engine | None = None

    def __getstate__(self) -> dict:
        return {"db_path": self.db_path, "run_id": self.run_id, "max_steps": self.max_steps, "_engine": None}

    def __call__(self, rows: list[dict[str, Any]]) -> None:
        if self._engine is None:
            self._engine = open_db(self.db_path, create=False)
        record_metrics(self._engine, self.run_id, rows)
        steps = [r["step"] for r in rows if r.get("split", "train") == "train"]
        if steps:
            with Session(self._engine) as s, s.begin():
                run = s.get(Run, self.run_id)
                if run is not None:
                    run.n_done, run.n_total, run.updated_at = max(steps), self.max_steps, utcnow()


# ---------------------------------------------------------------- driver

def _existing_run(engine: Engine, name: str) -> str | None:
    with Session(engine) as s:
        return s.scalars(select(Run.id).where(Run.kind == "train", Run.name == name)
                         .order_by(Run.started_at.desc()).limit(1)).first()


def _reopen_run(engine: Engine, run_id: str, config: dict) -> None:
    with Session(engine) as s, s.begin():
        run = s.get(Run, run_id)
        if run is None:
            raise ChromarayError(f"run {run_id} vanished from the database")
        run.status, run.finished_at, run.updated_at = "running", None, utcnow()
        run.config = json.loads(json.dumps(config, default=str))


def loss_curve(engine: Engine, run_id: str) -> list[tuple[int, float]]:
    """(step, loss) of the training split, in step order."""
    with Session(engine) as s:
        return [(r.step, r.loss) for r in s.scalars(
            select(TrainMetric).where(TrainMetric.run_id == run_id, TrainMetric.split == "train")
            .order_by(TrainMetric.step))]


def model_spec(req: TrainRequest, vocab_size: int, base: Path | None = None) -> ModelSpec:
    """The model to train: the base checkpoint's (``base``: :meth:`TrainRequest.base_checkpoint`
    of a LoRA run; checked against the data), else one sized by the profile (``vocab_size``:
    of the data; 0 for frames)."""
    prof = req.profile
    task = DATASET_OF[req.data]
    if base is not None:
        spec = ModelSpec.load(base)
        if spec.task != task:
            raise ChromarayError(f"base model {base} was trained on {spec.task}; --data {req.data} needs {task}")
        if task == "tokens" and vocab_size > spec.vocab_size:
            raise ChromarayError(f"the data has token ids up to {vocab_size - 1} but the base model's "
                                 f"vocabulary has {spec.vocab_size}; tokenizers differ")
        if spec.arch == "transformer" and prof.seq_len > spec.max_len:
            raise ChromarayError(f"--seq-len {prof.seq_len} exceeds the base transformer's max_len {spec.max_len}")
        return spec
    n_heads = 4 if prof.d_model % 4 == 0 else 1
    return ModelSpec(arch=req.arch, task=task, vocab_size=vocab_size, d_model=prof.d_model,
                     n_layers=prof.n_layers, n_heads=n_heads, max_len=max(1024, prof.seq_len))


def loop_config(req: TrainRequest, spec: ModelSpec, *, batch_size: int | None = None, base: Path | None = None,
                metrics_sink: MetricsSink | None = None) -> LoopConfig:
    """What every training worker runs: each field from the profile or the request.

    ``batch_size`` lowers the profile's per-worker batch when the data is small;
    ``base`` is the resolved base checkpoint of a LoRA run (it makes the loop's mode lora).
    """
    prof = req.profile
    return LoopConfig(
        model=spec, base=str(base) if base else None,
        lora=LoraConfig(r=prof.lora_r, alpha=prof.lora_alpha),
        max_steps=req.steps, batch_size=batch_size or prof.batch_size, lr=prof.lr,
        warmup_steps=default_warmup(req.steps), checkpoint_every=prof.checkpoint_every, log_every=prof.log_every,
        precision=prof.precision, device=prof.device, seed=req.seed, fault=req.fault, metrics_sink=metrics_sink)


def run_training(req: TrainRequest) -> TrainOutcome:
    """Run (or resume) one training job end to end; Ray must be initialised."""
    # Ray Train V2 (what ray.train.torch gives unless RAY_TRAIN_V2_ENABLED=0), imported from
    # its own modules so that type checkers see its signatures rather than V1's.
    import ray
    from ray.train import DataConfig
    from ray.train.v2.api.config import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.v2.api.result import Result
    from ray.train.v2.torch.torch_trainer import TorchTrainer

    from actors.train.loop import LOOP_CONFIG_KEY, train_loop_per_worker

    prof = req.profile
    max_steps = req.steps
    storage = req.storage_dir
    base = req.base_checkpoint()
    resources = ray.cluster_resources()
    workers = resolve_workers(prof, resources)
    check_cluster_fits(prof, resources, workers)
    engine = open_db(req.db, must_exist=True)
    out_dir = req.out_dir(engine)

    t0 = time.perf_counter()
    prep = prepare_data(engine, out_dir, req.data, seq_len=prof.seq_len, eval_fraction=prof.eval_fraction)
    batch_size = prof.batch_size
    if prep.n_train < workers * batch_size:
        batch_size = prep.n_train // workers
        if batch_size < 1:
            raise ChromarayError(f"{prep.n_train} training windows cannot feed {workers} workers; "
                                 f"lower --workers or --seq-len")
        log.warning("only %d training windows: batch size per worker lowered to %d", prep.n_train, batch_size)
    spec = model_spec(req, prep.vocab_size, base)
    t_data = time.perf_counter() - t0

    run_dir = storage / req.name
    config = {"arch": req.arch, "data": req.data, "profile": prof.to_dict(), "workers": workers,
              "batch_size": batch_size, "max_steps": max_steps, "model": spec.to_dict(),
              "base": str(base) if base else None, "storage": str(run_dir), "out": str(out_dir),
              "n_train_windows": prep.n_train, "n_eval_windows": prep.n_eval,
              "frame_rate_hz": prep.frame_rate_hz, "features_versions": prep.features_versions}
    run_id = _existing_run(engine, req.name) if run_dir.exists() else None
    if run_id:
        _reopen_run(engine, run_id, config)
        print(f"resuming run {req.name!r} from {run_dir}")
    else:
        run_id = new_run(engine, "train", name=req.name, config=config,
                         ray_address=ray.get_runtime_context().gcs_address, ray_dashboard_url=req.ray_dashboard_url)

    use_gpu = prof.gpus_per_worker > 0
    per_worker = {"CPU": prof.cpus_per_worker} | ({"GPU": prof.gpus_per_worker} if use_gpu else {})
    loop_cfg = loop_config(req, spec, batch_size=batch_size, base=base,
                           metrics_sink=SQLiteMetricsSink(str(req.db), run_id, max_steps))
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={LOOP_CONFIG_KEY: loop_cfg},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker=per_worker),
        run_config=RunConfig(
            name=req.name, storage_path=str(storage),
            failure_config=FailureConfig(max_failures=prof.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=prof.keep_checkpoints)),
        datasets={"train": prep.train, "eval": prep.eval},
        # Only train is sharded; rank 0 evaluates the whole held-out set at the end.
        dataset_config=DataConfig(datasets_to_split=["train"]),
    )
    # This process stands behind the run now (a resumed run named the one that died), heartbeat included.
    adopt_run(engine, run_id)
    t1 = time.perf_counter()
    try:
        # fit() is annotated with ray.train.Result, which type checkers resolve to V1's.
        result = cast(Result, trainer.fit())
    except KeyboardInterrupt:
        finish_run(engine, run_id, "stopped")
        raise
    except Exception as exc:
        finish_run(engine, run_id, "failed", summary={"error": str(exc)[:2000]})
        raise ChromarayError(f"training run {req.name!r} failed: {str(exc).splitlines()[0][:300]}") from exc
    t_fit = time.perf_counter() - t1
    if result.checkpoint is None:
        finish_run(engine, run_id, "failed", summary={"error": "no checkpoint reported"})
        raise ChromarayError(f"training run {req.name!r} reported no checkpoint")

    # Rank 0's return value: final step, start step of the last attempt, held-out loss.
    metrics = dict(result.return_value or result.metrics or {})
    curve = loss_curve(engine, run_id)
    summary: dict[str, Any] = {
        "task": spec.task, "arch": spec.arch, "mode": loop_cfg.mode, "profile": prof.name,
        "workers": workers, "batch_size": batch_size, "seq_len": prof.seq_len,
        "steps": int(metrics.get("step", 0)), "resumed_from_step": int(metrics.get("start_step", 0)),
        "n_tracks": prep.n_tracks, "n_eval_tracks": prep.n_eval_tracks,
        "n_train_windows": prep.n_train, "n_eval_windows": prep.n_eval, "frame_rate_hz": prep.frame_rate_hz,
        "baseline": prep.baseline, "checkpoint": result.checkpoint.path,
        "data_prep_s": round(t_data, 2), "fit_s": round(t_fit, 2),
    }
    if curve:
        tail = [v for _, v in curve[-10:]]
        summary.update(loss_first=curve[0][1], loss_last10=float(np.mean(tail)))
    if "eval_loss" in metrics:
        summary["eval_loss"] = float(metrics["eval_loss"])
        if spec.task == "tokens":
            summary["eval_perplexity"] = float(math.exp(min(metrics["eval_loss"], 50.0)))
        else:
            summary["eval_frame_mse"] = float(metrics["eval_loss"])
    export = None
    if base is not None:  # lora
        export, diff = export_merged(base, result.checkpoint, run_dir / "export", prep)
        summary.update(export=str(export), merge_max_abs_diff=diff)
    summary["wall_s"] = round(time.perf_counter() - t0, 2)
    finish_run(engine, run_id, "finished", summary=summary, n_done=summary["steps"], n_total=max_steps)
    engine.dispose()
    return TrainOutcome(run_id=run_id, checkpoint=result.checkpoint.path, export=str(export) if export else None,
                        summary=summary)


def resolve_checkpoint(path: Path) -> Path:
    """A model checkpoint directory: ``path`` itself, or the latest checkpoint of the
    training run directory ``path`` (``<storage>/<run name>``)."""
    if (path / "spec.json").exists():
        return path
    found = sorted(p.parent for p in path.glob("checkpoint_*/spec.json"))
    if found:
        return found[-1]  # checkpoint_<timestamp>: the name sorts by time
    raise ChromarayError(f"--base {path} is neither a chromaray model checkpoint (no spec.json) nor a training "
                         "run directory with checkpoints")


def export_merged(base: Path, checkpoint: Any, dest: Path, prep: PreparedData | None = None) -> tuple[Path, float]:
    """Merge the checkpoint's LoRA adapter into the base (``merge_and_unload``) and save a
    plain model at ``dest``; returns it and the max |merged - adapter model| output
    difference on a few held-out windows (0.0 when there are none)."""
    from actors.train.models.lora import load_adapter, merge

    with checkpoint.as_directory() as d:
        peft_model = load_adapter(load_model(base, backend="mambapy"), Path(d) / "adapter")
    peft_model.eval()
    sample = None
    if prep is not None:
        ds = prep.eval if prep.n_eval else prep.train
        for b in ds.iter_batches(batch_size=4, batch_format="numpy"):
            sample = torch.from_numpy(np.array(b["x"][:, :-1]))  # own, writable copy
            break
    with torch.no_grad():
        before = peft_model(sample) if sample is not None else None
        merged = merge(peft_model).eval()
        diff = float((merged(sample) - before).abs().max()) if sample is not None else 0.0
    save_model(merged, dest)
    return dest, diff
