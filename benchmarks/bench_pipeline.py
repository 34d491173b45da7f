"""Where the CPU of the fingerprint job goes, against a librosa loop and decode-only, in one run.

On a fresh database it runs, on the same files:

1. an instrumented plain-process run of the job's own kernels (``actors.decode.decode_file``,
   ``actors.features.FeatureExtractor``, ``actors.fingerprint.fingerprint_codes``; one core, BLAS
   pinned to one thread as in the feature actors), every ``actors.dsp`` kernel wrapped with a
   CPU timer, giving CPU-seconds per audio hour of decode, resample, STFT, HPSS, chroma,
   onset/tempo, fingerprint and the chain's own glue (padding, masks, sums, the memory planner);
2. the fingerprint job itself (``pipeline.ingest.run.run_fingerprint`` in a child process, local
   Ray), with the CPU of every process it starts: this process is made a child subreaper, so Ray's
   daemons and workers stay its descendants (also after the driver exits), and psutil samples each
   one's own CPU every 0.2 s, split into driver, stage workers (by process title) and Ray's own
   processes; the driver reads its own ``RUSAGE_SELF`` and times its ``ResultSink`` calls. (Not
   ``RUSAGE_CHILDREN``: the raylet ignores SIGCHLD, so the kernel discards its workers' CPU.)
3. Ray start-up and shutdown alone (``pipeline.runtime.init_ray``, then ``ray.shutdown``), counted
   the same way;
4. a librosa loop (load, stft, hpss, chroma_stft, onset_strength, beat_track), one process;
5. decode-only (soundfile + soxr HQ to 22050 Hz mono), one process per core.

The overhead is the Ray run's total CPU minus the DSP CPU of (1); it is split into the sink,
the rest of the driver (Ray Data's executor, fetching blocks), the workers outside the DSP
(serialization between stages, Arrow conversion, task overhead), Ray start-up, and Ray's own
processes beyond start-up (scheduling, object store). The job's per-batch records (table
``batch_log``) and its run row are read back from the database.

    python benchmarks/bench_pipeline.py [FOLDER] [--generated N] [--quick] [--json PATH]
    python benchmarks/bench_pipeline.py --driver [--tracks 50 500] [--track-seconds 4]

``--driver``: driver peak RSS (``ru_maxrss`` of the driver process alone) and CPU at each
library size of generated tracks; the target is the largest within 20 % of the smallest.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED_AUDIO = ROOT.parent / "shared" / "data" / "audio"
AUDIO_EXT = {".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif"}
QUIET = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1"}

# Targets of issue #11.
TARGET_VS_LIBROSA = 10.0
TARGET_VS_DECODE = 0.40
TARGET_DRIVER_RSS_GROWTH = 0.20

# ---------------------------------------------------------------- process accounting

_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    """Orphaned descendants (Ray's daemons, workers) are re-parented to this process, so they
    can be sampled, reaped and, if left running, stopped from here."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def _descendants() -> list[Any]:
    import psutil

    try:
        return psutil.Process().children(recursive=True)
    except psutil.Error:
        return []


def _classify(title: str, pid: int, driver_pid: int | None) -> str:
    """driver | worker (the job's stages, idle pool workers) | ray_system (raylet, GCS, agents,
    Ray Data's own helper actors such as _StatsActor)."""
    if pid == driver_pid:
        return "driver"
    name = title.split(" ", maxsplit=1)[0]
    if name.startswith("ray::") and (name.startswith("ray::IDLE") or any(
            w in name for w in ("Map", "Stage", "Read", "Write", "Filter", "Flat"))):
        return "worker"
    if "default_worker.py" in title:  # a worker process before Ray has set its title
        return "worker"
    return "ray_system"


@dataclass
class Sampled:
    """CPU per process (own user + system, children excluded) since the first sample, for
    processes that were running then (e.g. a cluster's daemons), else since they started."""

    cpu: dict[int, float] = field(default_factory=dict)
    title: dict[int, str] = field(default_factory=dict)
    before: dict[int, float] = field(default_factory=dict)

    def baseline(self) -> None:
        self.sample()
        self.before, self.cpu = dict(self.cpu), {}

    def sample(self) -> None:
        import psutil

        for p in _descendants():
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                used = t.user + t.system - self.before.get(p.pid, 0.0)
                self.cpu[p.pid] = max(self.cpu.get(p.pid, 0.0), used)
                cmd = p.cmdline()
                title = " ".join(cmd) if cmd else p.name()
                # A worker's title changes with its task: a stage's title sticks, idle or
                # helper-task titles (e.g. Ray Data's metadata tasks) do not replace it.
                old = self.title.get(p.pid)
                if old is None or (_classify(old, -1, None) != "worker" and not title.startswith("ray::IDLE")):
                    self.title[p.pid] = title

    def by_class(self, driver_pid: int | None) -> dict[str, float]:
        out = {"driver": 0.0, "worker": 0.0, "ray_system": 0.0}
        for pid, c in self.cpu.items():
            out[_classify(self.title.get(pid, ""), pid, driver_pid)] += c
        return out

    def by_title(self, driver_pid: int | None) -> dict[str, float]:
        out: dict[str, float] = {}
        for pid, c in self.cpu.items():
            t = self.title.get(pid, "")
            key = t.split(" ")[0] if t.startswith("ray::") else os.path.basename(t.split(" ")[0])
            if pid == driver_pid:
                key = "driver"
            if "python" in key and " " in t:  # python helpers: name them by their script
                key = os.path.basename(next((a for a in t.split(" ")[1:] if a.endswith(".py")), key))
            out[key] = round(out.get(key, 0.0) + c, 3)
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def kill_descendants(grace_s: float = 10.0) -> int:
    """SIGTERM, then SIGKILL, every process this process started (directly or via orphans);
    reaps them. Returns how many there were. Only our own descendants: on a shared machine
    ``ray stop`` would also stop other people's Ray."""
    import psutil

    procs = _descendants()
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _gone, alive = psutil.wait_procs(procs, timeout=grace_s)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=grace_s)
    reap_zombies()
    return len(procs)


def reap_zombies() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


@dataclass
class Measured:
    rc: int
    wall_s: float
    sampled: Sampled  # every process of the tree (the driver too: see cpu_total_s)
    driver_pid: int
    stdout: str
    result: dict[str, Any]

    def cpu_total_s(self) -> float:
        """Sampled CPU of every process, the driver's exact own CPU when it reported it."""
        cls = self.sampled.by_class(self.driver_pid)
        # RUSAGE_SELF is read before Ray's exit handler runs; the samples may have seen more
        driver = max(self.result.get("driver_cpu_s", 0.0), cls["driver"])
        return driver + cls["worker"] + cls["ray_system"]


def run_measured(cmd: Sequence[str], *, env: dict[str, str], timeout_s: float, wait_all: bool = True,
                 interval_s: float = 0.2, cwd: Path = ROOT) -> Measured:
    """Run ``cmd`` while sampling every descendant's CPU; with ``wait_all``, also wait for every
    descendant it left (Ray's daemons stop after the local driver exits; killed after 30 s).
    Needs :func:`become_subreaper` first. A line ``BENCH_RESULT {json}`` on stdout is parsed."""
    sampled = Sampled()
    sampled.baseline()
    t0 = time.perf_counter()
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115  (read back and closed below, after the child)
    proc = subprocess.Popen(list(cmd), cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    rc: int | None = None
    wall = float("nan")
    deadline = t0 + timeout_s  # then SIGINT, then SIGKILL 20 s later
    interrupted = False
    reap_deadline = float("inf")  # daemons left after the job: 30 s to exit, then killed
    next_sample = 0.0
    try:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break  # nothing of ours is left
            if pid == proc.pid:
                rc = os.waitstatus_to_exitcode(status)
                proc.returncode = rc
                wall = time.perf_counter() - t0
                if not wait_all:
                    break
                reap_deadline = time.perf_counter() + 30.0
            if pid:
                continue
            now = time.perf_counter()
            if now >= next_sample:
                sampled.sample()
                next_sample = now + interval_s
            if rc is None and now > deadline:
                if not interrupted:
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(signal.SIGINT)
                    interrupted, deadline = True, now + 20.0
                else:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            if rc is not None and now > reap_deadline:
                kill_descendants()
            time.sleep(0.02)
    finally:
        if proc.returncode is None:  # interrupted ourselves
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(ChildProcessError):
                proc.wait()
    if rc is None:
        rc = proc.returncode if proc.returncode is not None else -1
        wall = time.perf_counter() - t0
    log.seek(0)
    out = log.read()
    log.close()
    result: dict[str, Any] = {}
    for line in out.splitlines():
        if line.startswith("BENCH_RESULT "):
            result = json.loads(line[len("BENCH_RESULT "):])
    return Measured(rc=rc, wall_s=wall, sampled=sampled, driver_pid=proc.pid, stdout=out, result=result)


# The driver: the public entry point, plus its own accounting. Runs in a child process.
JOB_RUNNER = r"""
import json, resource, sys, time
args = json.loads(sys.argv[1])
sink_cpu = [0.0, 0, 0]  # seconds, calls, depth
ray_init = [0.0, 0.0]  # wall, cpu of init_ray in the driver

def _timed(fn, acc):
    def wrapper(*a, **k):
        acc[2] += 1
        c0 = time.thread_time()
        try:
            return fn(*a, **k)
        finally:
            acc[2] -= 1
            if acc[2] == 0:
                acc[0] += time.thread_time() - c0
                acc[1] += 1
    return wrapper

try:  # optional: the sink's public methods on the driver, where the sink exists
    from pipeline.ingest import sink as _sink
    _cls = getattr(_sink, "ResultSink", None)
    for _name, _attr in list(vars(_cls).items()) if _cls is not None else []:
        if not _name.startswith("_") and callable(_attr) and not isinstance(_attr, (staticmethod, classmethod)):
            setattr(_cls, _name, _timed(_attr, sink_cpu))
except ImportError:
    pass
import pipeline.runtime as _rt
_init = _rt.init_ray
def _init_ray(*a, **k):
    w0, c0 = time.perf_counter(), time.thread_time()
    try:
        return _init(*a, **k)
    finally:
        ray_init[0] += time.perf_counter() - w0
        ray_init[1] += time.thread_time() - c0
_rt.init_ray = _init_ray

from pipeline.config import load_config
from pipeline.ingest.run import run_fingerprint
t0 = time.perf_counter()
s = run_fingerprint(args["inputs"], db=args["db"], out=args["out"], cfg=load_config(None),
                    address=args.get("address"), show_progress=False, num_cpus=args.get("num_cpus"),
                    log=lambda m: None)
wall = time.perf_counter() - t0
ru = resource.getrusage(resource.RUSAGE_SELF)
print("BENCH_RESULT " + json.dumps({
    "run_id": s.run_id, "processed": s.processed, "errors": s.errors, "audio_seconds": s.audio_seconds,
    "job_wall_s": wall, "driver_cpu_s": ru.ru_utime + ru.ru_stime, "driver_maxrss_bytes": ru.ru_maxrss * 1024,
    "sink_cpu_s": sink_cpu[0], "sink_calls": sink_cpu[1],
    "init_ray_wall_s": ray_init[0], "init_ray_driver_cpu_s": ray_init[1],
    "error_rows": [list(r) for r in s.error_rows[:5]]}), flush=True)
"""

RAY_IDLE = r"""
import json, time
from pipeline.runtime import init_ray
import ray
t0 = time.perf_counter()
info = init_ray(None, num_cpus=int(__import__("sys").argv[1]))
up = time.perf_counter() - t0
ray.shutdown()
import resource
ru = resource.getrusage(resource.RUSAGE_SELF)
print("BENCH_RESULT " + json.dumps({"start_wall_s": up, "cpus": info.cpus,
                                    "driver_cpu_s": ru.ru_utime + ru.ru_stime}), flush=True)
"""


def job_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ, **QUIET)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra or {})
    return env


def run_job(inputs: Sequence[Path], work: Path, *, num_cpus: int | None, address: str | None = None,
            timeout_s: float = 900.0, wait_all: bool = True, env: dict[str, str] | None = None) -> Measured:
    """The fingerprint job on a fresh database under ``work``."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    args = {"inputs": [str(p) for p in inputs], "db": str(work / "db.sqlite"), "out": str(work / "out"),
            "num_cpus": num_cpus, "address": address}
    m = run_measured([sys.executable, "-c", JOB_RUNNER, json.dumps(args)], env=env or job_env(),
                     timeout_s=timeout_s, wait_all=wait_all)
    if m.rc != 0 or not m.result:
        tail = "\n".join(m.stdout.strip().splitlines()[-15:])
        raise RuntimeError(f"the fingerprint job failed (exit {m.rc}):\n{tail}")
    return m


def ray_idle(num_cpus: int) -> Measured:
    return run_measured([sys.executable, "-c", RAY_IDLE, str(num_cpus)], env=job_env(), timeout_s=300)


def recorded_metrics(db: Path, run_id: str) -> dict[str, Any]:
    """What the job recorded about itself: its run row and its per-batch records."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from pipeline.store import BatchLog, ProgressEvent, Run, open_db

    engine = open_db(str(db))
    with Session(engine) as s:
        run = s.get(Run, run_id)
        batches = list(s.scalars(select(BatchLog).where(BatchLog.run_id == run_id)))
        events = list(s.scalars(select(ProgressEvent).where(ProgressEvent.run_id == run_id)
                                .order_by(ProgressEvent.ts)))
    out: dict[str, Any] = {"batches": len(batches)}
    done = [e for e in events if e.audio_seconds > 0]
    if run is not None and done:
        out["first_result_after_start_s"] = (done[0].ts - run.started_at).total_seconds()
        out["start_to_last_result_s"] = (done[-1].ts - run.started_at).total_seconds()
        span = (done[-1].ts - done[0].ts).total_seconds()
        if span >= 2.0:  # rows come every few seconds and at part commits: bursty, a rough rate
            out["progress_audio_s_per_s"] = (done[-1].audio_seconds - done[0].audio_seconds) / span
    if run is not None:
        for k in ("status", "n_total", "n_done", "n_errors", "audio_seconds"):
            if hasattr(run, k):
                out[f"run_{k}"] = getattr(run, k)
    if batches:
        out["tracks_per_batch_mean"] = sum(b.n_tracks for b in batches) / len(batches)
        out["audio_seconds_in_batches"] = sum(b.audio_seconds for b in batches)
        out["actors"] = len({b.actor for b in batches})
        out["oom_splits"] = sum(b.oom_splits for b in batches)
        out["peak_bytes_max"] = max(b.peak_bytes for b in batches)
    engine.dispose()
    return out


# ---------------------------------------------------------------- the plain-process split

# (module, function, stage). The chain may bind these by name or look them up on the module;
# every binding of the same function object in a loaded actors.* module is wrapped. Nested
# wrapped calls are charged to the innermost stage (exclusive CPU).
KERNELS = [
    ("actors.dsp.stft", "stft", "stft"),
    ("actors.dsp.stft", "power_spectrogram", "stft"),
    ("actors.dsp.stft", "magnitude_spectrogram", "stft"),
    ("actors.dsp.hpss", "harmonic_mask", "hpss"),
    ("actors.dsp.hpss", "hpss_masks", "hpss"),
    ("actors.dsp.hpss", "hpss", "hpss"),
    ("actors.dsp.chroma", "chroma_from_power", "chroma"),
    ("actors.dsp.chroma", "normalize_inf", "chroma"),
    ("actors.dsp.onset", "mel_db", "onset_tempo"),
    ("actors.dsp.onset", "db_reference", "onset_tempo"),
    ("actors.dsp.onset", "onset_flux", "onset_tempo"),
    ("actors.dsp.onset", "onset_from_flux", "onset_tempo"),
    ("actors.dsp.onset", "onset_strength_from_mel_db", "onset_tempo"),
    ("actors.dsp.onset", "onset_strength_from_power", "onset_tempo"),
    ("actors.dsp.onset", "tempo", "onset_tempo"),
]
STAGES = ["decode", "resample", "stft", "hpss", "chroma", "onset_tempo", "fingerprint", "chain_other"]


class StageClock:
    """Exclusive CPU time (this thread) per stage of wrapped functions."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}
        self._stack: list[list[float]] = []  # [start, child time]

    def wrap(self, fn: Callable[..., Any], stage: str) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*a: Any, **k: Any) -> Any:
            self._stack.append([time.thread_time(), 0.0])
            try:
                return fn(*a, **k)
            finally:
                start, child = self._stack.pop()
                spent = time.thread_time() - start
                self.cpu[stage] = self.cpu.get(stage, 0.0) + spent - child
                if self._stack:
                    self._stack[-1][1] += spent
        return timed

    @contextlib.contextmanager
    def instrument(self) -> Iterator[list[str]]:
        import importlib

        import actors.features  # noqa: F401  (load the chain so its bindings get wrapped)

        patched: list[tuple[Any, str, Any]] = []
        found: list[str] = []
        for mod_name, fn_name, stage in KERNELS:
            try:
                mod = importlib.import_module(mod_name)
            except ImportError:
                continue
            fn = getattr(mod, fn_name, None)
            if fn is None:
                continue
            found.append(f"{mod_name}.{fn_name}")
            wrapped = self.wrap(fn, stage)
            for m in list(sys.modules.values()):
                if getattr(m, "__name__", "").startswith("actors") and getattr(m, fn_name, None) is fn:
                    patched.append((m, fn_name, fn))
                    setattr(m, fn_name, wrapped)
        try:
            yield found
        finally:
            for m, name, fn in reversed(patched):
                setattr(m, name, fn)


def round_trip_cpu(obj: Any) -> float:
    """Thread CPU of what one hop between Ray processes costs an object: pickle protocol 5
    with out-of-band buffers, the buffers copied once (into the object store), and loads."""
    import pickle

    c0 = time.thread_time()
    bufs: list[pickle.PickleBuffer] = []
    data = pickle.dumps(obj, protocol=5, buffer_callback=bufs.append)
    copies = [bytes(b.raw()) for b in bufs]
    pickle.loads(data, buffers=copies)
    return time.thread_time() - c0


def plain_split(files: Sequence[Path], batch_rows: int) -> dict[str, Any]:
    """The job's kernels on the job's files in this process (one core): CPU per stage."""
    import pyarrow as pa
    import soundfile as sf
    from threadpoolctl import threadpool_limits

    from actors.config import BatchConfig, DSPConfig
    from actors.decode import decode_file
    from actors.features import FeatureExtractor
    from actors.fingerprint import fingerprint_codes

    dsp = DSPConfig()
    clock = StageClock()
    stage_cpu = dict.fromkeys(STAGES, 0.0)
    audio_s = 0.0
    serial = 0.0  # not a DSP stage: an estimate of one hop for the audio and for the results
    w0 = time.perf_counter()
    with threadpool_limits(limits=1), clock.instrument() as wrapped:
        ex = FeatureExtractor(dsp, BatchConfig(device="cpu"))
        signals: list[Any] = []

        def features(batch: list[Any]) -> None:
            before = sum(clock.cpu.values())
            c0 = time.thread_time()
            feats = ex(batch)
            spent = time.thread_time() - c0
            stage_cpu["chain_other"] += spent - (sum(clock.cpu.values()) - before)
            nonlocal serial
            for f in feats:
                c0 = time.thread_time()
                codes = fingerprint_codes(f.chroma, frame_rate_hz=f.frame_rate_hz)
                stage_cpu["fingerprint"] += time.thread_time() - c0
                serial += round_trip_cpu({"features": f, "codes": codes})

        for path in files:
            native = int(sf.info(str(path)).samplerate)
            c0 = time.thread_time()
            decode_file(str(path), native)  # the job's decode without resampling
            c1 = time.thread_time()
            y = decode_file(str(path), dsp.sample_rate)
            c2 = time.thread_time()
            stage_cpu["decode"] += c1 - c0
            stage_cpu["resample"] += max(0.0, (c2 - c1) - (c1 - c0))
            audio_s += len(y) / dsp.sample_rate
            c0 = time.thread_time()
            block = pa.table({"audio": pa.array([y.tobytes()], type=pa.large_binary())})
            serial += time.thread_time() - c0 + round_trip_cpu(block)
            signals.append(y)
            if len(signals) == batch_rows:
                features(signals)
                signals = []
        if signals:
            features(signals)
    for stage in ("stft", "hpss", "chroma", "onset_tempo"):
        stage_cpu[stage] += clock.cpu.get(stage, 0.0)
    return {"audio_seconds": audio_s, "cpu_s": stage_cpu, "dsp_cpu_s": sum(stage_cpu.values()),
            "serialization_estimate_cpu_s": serial,
            "wall_s": time.perf_counter() - w0, "wrapped_kernels": wrapped, "batch_rows": batch_rows}


# ---------------------------------------------------------------- baselines

def librosa_loop(files: Sequence[Path]) -> dict[str, Any]:
    """load, stft, hpss, chroma_stft, onset_strength, beat_track; one process, librosa's defaults."""
    import librosa
    import numpy as np

    warm = np.random.default_rng(0).standard_normal(22050 * 5).astype(np.float32)
    librosa.beat.beat_track(onset_envelope=librosa.onset.onset_strength(y=warm, sr=22050), sr=22050)
    librosa.decompose.hpss(librosa.stft(warm))  # numba JIT and FFT plans outside the timing
    c0, w0, audio_s = time.process_time(), time.perf_counter(), 0.0
    for path in files:
        y, sr = librosa.load(str(path), sr=22050, mono=True)
        audio_s += len(y) / sr
        D = librosa.stft(y)
        H, _P = librosa.decompose.hpss(D)
        librosa.feature.chroma_stft(S=np.abs(H) ** 2, sr=sr)
        onset = librosa.onset.onset_strength(y=y, sr=sr)
        librosa.beat.beat_track(onset_envelope=onset, sr=sr)
    return {"wall_s": time.perf_counter() - w0, "cpu_s": time.process_time() - c0, "audio_seconds": audio_s,
            "librosa": getattr(librosa, "__version__", "?")}


def _decode_only(path: str) -> tuple[float, float]:
    import soundfile as sf
    import soxr

    c0 = time.process_time()
    x, sr = sf.read(path, dtype="float32", always_2d=True)
    y = x.mean(axis=1)
    if sr != 22050:
        y = soxr.resample(y, sr, 22050, quality="HQ")
    return len(y) / 22050, time.process_time() - c0


def decode_only(files: Sequence[Path], procs: int) -> dict[str, Any]:
    """soundfile + soxr (HQ) to 22050 Hz mono, one process per core."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    with ctx.Pool(procs) as pool:
        pool.map(abs, range(procs))  # started before the clock
        w0 = time.perf_counter()
        res = pool.map(_decode_only, [str(p) for p in files], chunksize=1)
        wall = time.perf_counter() - w0
    return {"wall_s": wall, "cpu_s": sum(c for _, c in res), "audio_seconds": sum(a for a, _ in res),
            "processes": procs}


# ---------------------------------------------------------------- the report

def audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXT
                  and not p.name.startswith("."))


def generated_library(folder: Path, n: int, seconds: float) -> Path:
    """``n`` generated songs (pipeline.synth.good_library: five formats, 22.05/44.1 kHz, mono/stereo)."""
    from pipeline.synth import good_library

    marker = folder / f".done-{n}-{seconds:g}"
    if not marker.exists():
        shutil.rmtree(folder, ignore_errors=True)
        good_library(folder, n=n, seconds=seconds)
        marker.touch()
    return folder


def per_hour(cpu_s: float, audio_s: float) -> float:
    return cpu_s * 3600.0 / audio_s if audio_s > 0 else float("nan")


def breakdown(files: list[Path], work: Path, num_cpus: int) -> dict[str, Any]:
    from pipeline.config import PipelineConfig

    become_subreaper()
    print(f"{len(files)} files; 1/5 the fingerprint job (local Ray, {num_cpus} CPUs) ...", flush=True)
    job = run_job(files, work / "job", num_cpus=num_cpus)
    res = job.result
    metrics = recorded_metrics(work / "job" / "db.sqlite", res["run_id"])
    print("2/5 Ray start-up alone ...", flush=True)
    idle = ray_idle(num_cpus)
    print("3/5 the same kernels in one plain process ...", flush=True)
    plain = plain_split(files, PipelineConfig().feature_batch_rows)
    print("4/5 decode-only, one process per core ...", flush=True)
    dec = decode_only(files, os.cpu_count() or 1)
    print("5/5 librosa loop, one process ...", flush=True)
    lib = librosa_loop(files)

    audio = plain["audio_seconds"]
    total = job.cpu_total_s()
    cls = job.sampled.by_class(job.driver_pid)
    driver_cpu = total - cls["worker"] - cls["ray_system"]
    sink = res["sink_cpu_s"]
    dsp = plain["dsp_cpu_s"]
    idle_total = idle.cpu_total_s()
    idle_cls = idle.sampled.by_class(idle.driver_pid)
    idle_cls["driver"] = idle_total - idle_cls["worker"] - idle_cls["ray_system"]
    # Non-overlapping rows that add up to the Ray run's total: the idle run's share of each
    # kind of process moves to "Ray start-up + shutdown".
    rows: dict[str, float] = dict(plain["cpu_s"])
    rows["workers_outside_dsp"] = cls["worker"] - dsp - idle_cls["worker"]
    rows["sink"] = sink
    rows["driver_other"] = driver_cpu - sink - idle_cls["driver"]
    rows["ray_daemons"] = cls["ray_system"] - idle_cls["ray_system"]
    rows["ray_startup_shutdown"] = idle_total
    overhead = total - dsp
    job_wall = job.wall_s
    result = {
        "machine": {"cpus": os.cpu_count(), "load_avg_1m_at_end": os.getloadavg()[0],
                    "python": platform.python_version(), "shared": True},
        "files": len(files), "audio_seconds": audio, "audio_hours": audio / 3600.0, "num_cpus": num_cpus,
        "cpu_s_per_audio_hour": {k: per_hour(v, audio) for k, v in rows.items()},
        "cpu_s": rows,
        "dsp_cpu_s": dsp, "ray_run_total_cpu_s": total, "overhead_cpu_s": overhead,
        "overhead_share_of_ray_run": overhead / total if total else float("nan"),
        "ray_run_by_process": {"driver": driver_cpu, "workers": cls["worker"], "ray_system": cls["ray_system"],
                               "processes": len(job.sampled.cpu), "by_title": job.sampled.by_title(job.driver_pid),
                               "sampling_interval_s": 0.2},
        "job": {"process_wall_s": job_wall, "run_fingerprint_wall_s": res["job_wall_s"],
                "init_ray_wall_s": res["init_ray_wall_s"], "processed": res["processed"], "errors": res["errors"],
                "driver_maxrss_bytes": res["driver_maxrss_bytes"], "x_realtime": audio / job_wall,
                "recorded": metrics},
        "ray_idle": {"wall_s": idle.wall_s, "start_wall_s": idle.result.get("start_wall_s"), "cpu_s": idle_total,
                     "by_process": idle_cls},
        "serialization_estimate_cpu_s_per_audio_hour": per_hour(plain["serialization_estimate_cpu_s"], audio),
        "plain_process": {"wall_s": plain["wall_s"], "dsp_cpu_s": dsp, "x_realtime_per_core": audio / dsp,
                          "wrapped_kernels": plain["wrapped_kernels"], "batch_rows": plain["batch_rows"]},
        "librosa_loop": {**lib, "x_realtime": lib["audio_seconds"] / lib["wall_s"]},
        "decode_only": {**dec, "x_realtime": dec["audio_seconds"] / dec["wall_s"]},
    }
    pipe_tp = audio / job_wall
    result["ratios"] = {
        "end_to_end_vs_librosa_loop": pipe_tp / result["librosa_loop"]["x_realtime"],
        "end_to_end_vs_decode_only_all_cores": pipe_tp / result["decode_only"]["x_realtime"],
        "target_vs_librosa_loop": TARGET_VS_LIBROSA, "target_vs_decode_only": TARGET_VS_DECODE,
        # On a loaded machine wall time mostly says who won the scheduler. What the same work would
        # take on idle cores: the pipeline's CPU spread over its Ray CPUs, the loop's on one core,
        # decode-only's over all cores (an estimate: it ignores the pipeline's critical path).
        "cpu_estimate_vs_librosa_loop": lib["cpu_s"] / (total / num_cpus),
        "cpu_estimate_vs_decode_only": (dec["cpu_s"] / dec["processes"]) / (total / num_cpus),
    }
    result["targets_met"] = {
        "vs_librosa_loop": result["ratios"]["end_to_end_vs_librosa_loop"] >= TARGET_VS_LIBROSA,
        "vs_decode_only": result["ratios"]["end_to_end_vs_decode_only_all_cores"] >= TARGET_VS_DECODE,
    }
    return result


def print_breakdown(r: dict[str, Any]) -> None:
    h = r["audio_hours"]
    print(f"\n{r['files']} files, {r['audio_seconds'] / 60:.1f} min of audio; local Ray with {r['num_cpus']} CPUs; "
          f"{r['machine']['cpus']} cores, SHARED machine (load {r['machine']['load_avg_1m_at_end']:.1f}): "
          "use the same-run ratios")
    print(f"\n{'stage':<28}{'CPU s':>9}{'CPU s / audio h':>17}")
    labels = {"decode": "decode", "resample": "resample", "stft": "STFT", "hpss": "HPSS", "chroma": "chroma",
              "onset_tempo": "onset + tempo", "fingerprint": "fingerprint", "chain_other": "chain glue + planner",
              "workers_outside_dsp": "workers outside the DSP", "sink": "sink (driver)",
              "driver_other": "driver, outside the sink", "ray_startup_shutdown": "Ray start-up + shutdown",
              "ray_daemons": "Ray's own processes"}
    for k, v in r["cpu_s"].items():
        print(f"{labels.get(k, k):<28}{v:>9.2f}{v / h:>17.0f}")
    print(f"{'= DSP (plain process)':<28}{r['dsp_cpu_s']:>9.2f}{r['dsp_cpu_s'] / h:>17.0f}")
    print(f"{'= Ray run, all processes':<28}{r['ray_run_total_cpu_s']:>9.2f}{r['ray_run_total_cpu_s'] / h:>17.0f}")
    print(f"{'= overhead (Ray run - DSP)':<28}{r['overhead_cpu_s']:>9.2f}{r['overhead_cpu_s'] / h:>17.0f}"
          f"   ({100 * r['overhead_share_of_ray_run']:.0f} % of the Ray run's CPU)")
    print(f"serialization, one hop for the decoded audio and one for the results (Arrow + pickle 5 + a copy;"
          f" part of the rows above where data crosses processes): "
          f"{r['serialization_estimate_cpu_s_per_audio_hour']:.1f} CPU s / audio h")
    print(f"\n{'run':<40}{'wall s':>8}{'CPU s':>8}{'x realtime':>12}")
    j = r["job"]
    print(f"{'chromaray fingerprint (Ray, fresh db)':<40}{j['process_wall_s']:>8.1f}"
          f"{r['ray_run_total_cpu_s']:>8.1f}{j['x_realtime']:>12.1f}")
    pp = r["plain_process"]
    print(f"{'same kernels, plain process (1 core)':<40}{pp['wall_s']:>8.1f}{pp['dsp_cpu_s']:>8.1f}"
          f"{r['audio_seconds'] / pp['wall_s']:>12.1f}")
    lb, dc = r["librosa_loop"], r["decode_only"]
    print(f"{'librosa loop (1 process)':<40}{lb['wall_s']:>8.1f}{lb['cpu_s']:>8.1f}{lb['x_realtime']:>12.1f}")
    label = f"decode-only ({dc['processes']} processes)"
    print(f"{label:<40}{dc['wall_s']:>8.1f}{dc['cpu_s']:>8.1f}"
          f"{dc['x_realtime']:>12.1f}")
    ri = r["ray_idle"]
    print(f"{'Ray start-up + shutdown, no work':<40}{ri['wall_s']:>8.1f}{ri['cpu_s']:>8.1f}{'':>12}")
    ra = r["ratios"]
    print(f"\nend to end vs librosa loop:        {ra['end_to_end_vs_librosa_loop']:.2f}x   (target >= "
          f"{TARGET_VS_LIBROSA:g}x: {'met' if r['targets_met']['vs_librosa_loop'] else 'NOT met'})")
    print(f"end to end vs decode-only (cores): {100 * ra['end_to_end_vs_decode_only_all_cores']:.1f} %  (target >= "
          f"{100 * TARGET_VS_DECODE:g} %: {'met' if r['targets_met']['vs_decode_only'] else 'NOT met'})")
    print(f"idle-core estimates from CPU time (the machine was loaded): {ra['cpu_estimate_vs_librosa_loop']:.2f}x "
          f"the librosa loop, {100 * ra['cpu_estimate_vs_decode_only']:.1f} % of decode-only")
    rec = j["recorded"]
    if rec.get("batches"):
        print(f"recorded: {rec['batches']} feature batches, {rec['tracks_per_batch_mean']:.1f} tracks each, "
              f"{rec.get('actors', 0)} actor(s), {rec.get('oom_splits', 0)} OOM splits; init_ray "
              f"{j['init_ray_wall_s']:.1f} s wall in the driver")


def driver_scaling(sizes: Sequence[int], seconds: float, work: Path, num_cpus: int) -> dict[str, Any]:
    become_subreaper()
    runs = []
    for n in sizes:
        lib = generated_library(work / f"lib-{n}", n, seconds)
        print(f"{n} generated tracks of {seconds:g} s ...", flush=True)
        m = run_job([lib], work / f"job-{n}", num_cpus=num_cpus, timeout_s=1500)
        r = m.result
        runs.append({"tracks": n, "processed": r["processed"], "errors": r["errors"],
                     "audio_seconds": r["audio_seconds"], "wall_s": m.wall_s,
                     "driver_peak_rss_bytes": r["driver_maxrss_bytes"], "driver_cpu_s": r["driver_cpu_s"],
                     "driver_cpu_ms_per_track": 1000 * r["driver_cpu_s"] / max(n, 1),
                     "sink_cpu_s": r["sink_cpu_s"], "ray_run_total_cpu_s": m.cpu_total_s()})
    small, big = runs[0], runs[-1]
    growth = big["driver_peak_rss_bytes"] / small["driver_peak_rss_bytes"] - 1.0
    return {"machine": {"cpus": os.cpu_count(), "shared": True}, "track_seconds": seconds, "num_cpus": num_cpus,
            "runs": runs, "driver_peak_rss_growth": growth,
            "driver_cpu_ratio": big["driver_cpu_s"] / small["driver_cpu_s"],
            "tracks_ratio": big["tracks"] / small["tracks"],
            "target_rss_growth": TARGET_DRIVER_RSS_GROWTH, "target_met": growth <= TARGET_DRIVER_RSS_GROWTH}


def print_driver(r: dict[str, Any]) -> None:
    print(f"\ndriver process only (ru_maxrss, RUSAGE_SELF); {r['machine']['cpus']} cores, SHARED machine")
    print(f"{'tracks':>7}{'audio min':>11}{'wall s':>9}{'peak RSS MB':>13}{'driver CPU s':>14}{'ms/track':>10}"
          f"{'sink CPU s':>12}")
    for x in r["runs"]:
        print(f"{x['tracks']:>7}{x['audio_seconds'] / 60:>11.1f}{x['wall_s']:>9.1f}"
              f"{x['driver_peak_rss_bytes'] / 1e6:>13.0f}{x['driver_cpu_s']:>14.1f}"
              f"{x['driver_cpu_ms_per_track']:>10.1f}{x['sink_cpu_s']:>12.2f}")
    print(f"peak RSS growth {r['runs'][0]['tracks']} -> {r['runs'][-1]['tracks']} tracks: "
          f"{100 * r['driver_peak_rss_growth']:+.1f} % (target <= {100 * TARGET_DRIVER_RSS_GROWTH:g} %: "
          f"{'met' if r['target_met'] else 'NOT met'}); driver CPU x{r['driver_cpu_ratio']:.1f} "
          f"for x{r['tracks_ratio']:.0f} tracks")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("folder", nargs="?", type=Path, default=None,
                    help=f"audio folder (default: {SHARED_AUDIO}, else a generated library)")
    ap.add_argument("--generated", type=int, metavar="N", help="a generated library of N songs instead of FOLDER")
    ap.add_argument("--seconds", type=float, default=30.0, help="length of each generated song (default 30)")
    ap.add_argument("--num-cpus", type=int, default=min(2, os.cpu_count() or 1), help="CPUs of the local Ray")
    ap.add_argument("--quick", action="store_true", help="a few files / small libraries (a smoke run)")
    ap.add_argument("--driver", action="store_true", help="driver peak RSS and CPU vs library size instead")
    ap.add_argument("--tracks", type=int, nargs="+", default=None, help="library sizes for --driver (50 500)")
    ap.add_argument("--track-seconds", type=float, default=None, help="track length for --driver (default 4)")
    ap.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--json", type=Path, default=None, help="write the result here as JSON")
    args = ap.parse_args(argv)
    for k, v in QUIET.items():
        os.environ.setdefault(k, v)
    tmp = None
    if args.workdir is None:
        tmp = tempfile.mkdtemp(prefix="chromaray-bench-")
        work = Path(tmp)
    else:
        work = args.workdir
        work.mkdir(parents=True, exist_ok=True)
    try:
        if args.driver:
            sizes = args.tracks or ([20, 200] if args.quick else [50, 500])
            secs = args.track_seconds or (2.0 if args.quick else 4.0)
            result = driver_scaling(sorted(sizes), secs, work, args.num_cpus)
            print_driver(result)
        else:
            if args.generated:
                files = audio_files(generated_library(work / f"gen-{args.generated}", args.generated, args.seconds))
            else:
                folder = args.folder or SHARED_AUDIO
                if not folder.is_dir():
                    print(f"no folder {folder}: pass one, or --generated N", file=sys.stderr)
                    return 2
                files = audio_files(folder)
            if args.quick:
                files = files[:3]
            if not files:
                print("no audio files found", file=sys.stderr)
                return 2
            result = breakdown(files, work, args.num_cpus)
            print_breakdown(result)
        result["command"] = " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=2, default=str))
            print(f"\nwrote {args.json}")
        else:
            print("\n" + json.dumps(result, indent=2, default=str))
    finally:
        kill_descendants()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
