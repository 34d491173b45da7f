"""GPU readiness check: one command, no Ray, a few minutes on one NVIDIA GPU with CuPy.

    python benchmarks/gpu_check.py [--json PATH] [--smoke] [--audio DIR] [--only NAME,...]

On a machine with a GPU (CuPy answers) it checks, in this order:

1. ``no_ray``: every module of ``actors/`` imports with Ray made unimportable (this whole
   process runs with ``sys.modules["ray"] = None``; only ``actors/train/loop.py`` may need Ray,
   and it imports it inside its functions).
2. ``pytest_gpu``: the ``gpu``-marked tests (``pytest -m gpu`` on the test files that hold
   them, in a subprocess with Ray blocked the same way); pass/fail/skip counts.
3. ``chain_parity``: CuPy vs NumPy of the whole feature chain
   (``actors.features.FeatureExtractor``) on real tracks.
4. ``chain_vs_librosa``: the chain (NumPy, and CuPy on a GPU) against librosa 0.11 on 20 s crops.
5. ``codes_parity``: fingerprint codes (``actors.fingerprint``) on CuPy vs NumPy from the same
   chroma, and from the GPU chain's chroma vs the CPU chain's: bit-identical.
6. ``throughput``: x realtime of the chain on batches of real tracks (repeated to
   ``--throughput-minutes``, default 60, fewer on a slow device), with the batch sizes the
   planner chose; target >= 2,000x realtime per GPU.
7. ``planner_free_memory``: the planner's budget against the real free VRAM
   (``cupy.cuda.runtime.memGetInfo``) and the measured peak of every batch of the throughput run.
8. ``forced_budget``: a forced small ``memory_budget_bytes``: more, smaller batches and time
   chunks, each under the budget, same results.
9. ``oom_split_retry``: a real out-of-memory: a ballast ``cudaMalloc`` leaves less free VRAM than
   the first planned batch needs (the forced budget says it fits), so that batch fails with
   CUDA OOM and the chain must split it and retry; results equal the unconstrained run.
10. ``train_mamba``, ``train_transformer``: a few training steps on CUDA with the GPU profile's
   mixed precision (``pipeline/train/profiles/workstation.yaml``): loss falls; then LoRA: the
   adapters receive gradients, the base weights stay frozen, loss falls.
11. ``train_mamba_ssm``: where ``mamba_ssm`` imports, the same through its fused kernel; LoRA must
   run the adapted blocks on the unfused (pure PyTorch) path, since the fused kernel reads
   ``in_proj``/``x_proj``/``out_proj`` weights directly and bypasses peft's wrappers (shown too).

Without a GPU (or with ``--smoke``) the same checks run on NumPy/CPU on short crops, as a CI
smoke test: parity becomes NumPy vs librosa (features) and library vs query vs batched codes,
the real out-of-memory comes from an address-space limit (``RLIMIT_AS``) in a child process,
training runs on CPU with the laptop profile, and what has no CPU meaning is reported as skipped
with its reason. A table goes to stdout, JSON to ``--json``; the exit status is 1 when a check
failed, 2 for a usage error.
"""
from __future__ import annotations

import sys

# Ray must not be needed anywhere below: any import of it fails loudly.
sys.modules["ray"] = None  # type: ignore[assignment]

import argparse
import ast
import concurrent.futures
import contextlib
import copy
import dataclasses
import importlib
import importlib.util
import json
import logging
import math
import os
import pkgutil
import platform
import re
import subprocess
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from actors.config import BatchConfig, DSPConfig  # after the Ray block and sys.path

DEFAULT_AUDIO = ROOT.parent / "shared" / "data" / "audio"
DEFAULT_JSON = ROOT / "benchmarks" / "out" / "gpu_check.json"
AUDIO_EXTS = (".ogg", ".oga", ".flac", ".wav", ".mp3", ".aiff", ".aif")

#: Target of issue #11: feature chain x realtime on one GPU.
TARGET_X_REALTIME = 2000.0
#: Parity tolerances (README "DSP chain vs librosa": chroma <= 1e-4 abs, onset <= 1e-4 of the
#: peak, tempo equal; tests/actors/features/test_chain.py: rms_mean / harmonic_ratio 1e-5
#: relative; batch vs alone and spans vs whole 1e-5 abs). CuPy vs NumPy uses the same numbers.
TOL_CHROMA_ABS = 1e-4
TOL_ONSET_OF_PEAK = 1e-4
TOL_SUMMARY_REL = 1e-5
TOL_SAME_DEVICE_ABS = 1e-5
#: Free memory left beside the ballast, as a fraction of what the first planned batch needs:
#: the whole batch (1.0) cannot fit, a quarter of it can (measured on CPU: 8 -> 4 -> 2 tracks).
OOM_LEFT_FRACTION = 0.45
OOM_TRACKS = 8
#: A batch's measured peak may exceed its budget by this factor: a time chunk is sized to fill
#: the budget exactly (measured here: peak = 0.9993 x budget), and the 20 % that
#: memory_fraction=0.8 leaves free absorbs a small overshoot.
PEAK_OVER_BUDGET = 1.05

log = logging.getLogger("gpu_check")


class Skipped(Exception):
    """The check cannot run here; the message says why."""


class Failed(Exception):
    """The check ran and its result is wrong; the message says what."""


@dataclasses.dataclass
class Result:
    name: str
    status: str = "pass"  # pass | fail | skip
    detail: str = ""
    figures: dict[str, Any] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None


@dataclasses.dataclass
class Ctx:
    """What the checks share: the mode, the tracks and results computed once."""

    mode: str  # "gpu" | "smoke"
    cp: Any
    dsp: DSPConfig
    tracks: list[tuple[str, np.ndarray]]
    source: str
    throughput_minutes: float = 60.0
    cache: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def gpu(self) -> bool:
        return self.mode == "gpu"

    @property
    def audio_seconds(self) -> float:
        return sum(len(y) for _, y in self.tracks) / self.dsp.sample_rate


# --------------------------------------------------------------------------- helpers
def _mib(n: float) -> float:
    return round(float(n) / 2**20, 1)


def _find_audio(audio_dir: Path) -> list[Path]:
    if not audio_dir.is_dir():
        return []
    return sorted(p for p in audio_dir.iterdir() if p.suffix.lower() in AUDIO_EXTS and not p.name.startswith("."))


def _decode(path: Path, sr: int, seconds: float | None) -> np.ndarray:
    """The project's own decode (soundfile + soxr HQ, mono), stopped after ``seconds``."""
    from actors.decode import iter_mono_blocks

    blocks, n = [], 0
    for block in iter_mono_blocks(str(path), sr):
        blocks.append(block)
        n += len(block)
        if seconds is not None and n >= seconds * sr:
            break
    y = np.concatenate(blocks)
    return y[: int(seconds * sr)] if seconds is not None else y


def load_tracks(audio_dir: Path, sr: int, *, seconds: float | None, limit: int | None,
                synth_tracks: int, synth_seconds: float) -> tuple[list[tuple[str, np.ndarray]], str]:
    """Real tracks of ``audio_dir`` (whole, or cropped to ``seconds``), else generated songs."""
    files = _find_audio(audio_dir)[:limit]
    tracks: list[tuple[str, np.ndarray]] = []
    if files:
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            futures = {pool.submit(_decode, p, sr, seconds): p for p in files}
            for fut, p in futures.items():
                try:
                    tracks.append((p.name, fut.result()))
                except Exception as exc:  # an unreadable file is left out, said once
                    print(f"gpu_check: {p.name} left out: {exc}", file=sys.stderr)
    if tracks:
        return tracks, f"{len(tracks)} real tracks from {audio_dir}"
    from pipeline.synth import varied_song

    tracks = [(f"varied_song-{i}", varied_song(i, seconds=synth_seconds, sr=sr).astype(np.float32))
              for i in range(synth_tracks)]
    return tracks, f"{len(tracks)} generated songs (pipeline.synth.varied_song; {audio_dir} has no audio)"


def _cupy_or_none() -> Any:
    from actors.dsp.xp import cupy_or_none

    return cupy_or_none()


def _extractor(ctx: Ctx, device: str, **batch: Any) -> Any:
    from actors.features import FeatureExtractor

    return FeatureExtractor(ctx.dsp, BatchConfig(device=device, **batch))


def _crops(ctx: Ctx, n: int, seconds: float) -> list[np.ndarray]:
    """``n`` crops of ``seconds`` from the tracks (cycling; tracks shorter are tiled)."""
    sr = ctx.dsp.sample_rate
    m = int(seconds * sr)
    out = []
    for i in range(n):
        y = ctx.tracks[i % len(ctx.tracks)][1]
        start = (i // len(ctx.tracks)) * m
        seg = y[start: start + m] if len(y) >= start + m else np.resize(y, m)
        out.append(np.ascontiguousarray(seg, dtype=np.float32))
    return out


def _cpu_features(ctx: Ctx) -> list[Any]:
    """CPU chain on every track, computed once."""
    if "cpu_features" not in ctx.cache:
        ex = _extractor(ctx, "cpu")
        t0 = time.perf_counter()
        ctx.cache["cpu_features"] = ex([y for _, y in ctx.tracks])
        ctx.cache["cpu_seconds"] = time.perf_counter() - t0
    return ctx.cache["cpu_features"]


def _feature_diffs(a: Any, b: Any) -> dict[str, float]:
    """How far features ``a`` are from reference ``b`` (one track)."""
    peak = max(float(np.abs(b.onset).max()), 1e-12)
    return {
        "chroma_abs": float(np.abs(a.chroma - b.chroma).max()) if a.chroma.shape == b.chroma.shape else math.inf,
        "onset_of_peak": float(np.abs(a.onset - b.onset).max()) / peak if a.onset.shape == b.onset.shape else math.inf,
        "tempo_diff": abs(float(a.tempo_bpm) - float(b.tempo_bpm)),
        "rms_rel": abs(a.rms_mean - b.rms_mean) / max(abs(b.rms_mean), 1e-12),
        "harmonic_rel": abs(a.harmonic_ratio - b.harmonic_ratio) / max(abs(b.harmonic_ratio), 1e-12),
        "frames_diff": float(abs(a.n_frames - b.n_frames)),
    }


def _violations(name: str, d: dict[str, float], *, chroma: float, onset: float, summary: float) -> list[str]:
    bad = []
    if d["frames_diff"]:
        bad.append(f"{name}: frame count differs by {d['frames_diff']:.0f}")
    if d["chroma_abs"] > chroma:
        bad.append(f"{name}: chroma max abs diff {d['chroma_abs']:.2e} > {chroma:g}")
    if d["onset_of_peak"] > onset:
        bad.append(f"{name}: onset max diff {d['onset_of_peak']:.2e} of the peak > {onset:g}")
    if d["tempo_diff"] != 0:
        bad.append(f"{name}: tempo differs by {d['tempo_diff']:.3f} bpm")
    if d["rms_rel"] > summary:
        bad.append(f"{name}: rms_mean rel diff {d['rms_rel']:.2e} > {summary:g}")
    if d["harmonic_rel"] > summary:
        bad.append(f"{name}: harmonic_ratio rel diff {d['harmonic_rel']:.2e} > {summary:g}")
    return bad


def _worst(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: max(r[k] for r in rows) for k in rows[0]} if rows else {}


@contextlib.contextmanager
def _captured(logger_name: str) -> Iterator[list[str]]:
    """Messages the named logger emits at WARNING and above inside the block."""
    lines: list[str] = []

    class _H(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = _H(level=logging.WARNING)
    lg = logging.getLogger(logger_name)
    lg.addHandler(handler)
    try:
        yield lines
    finally:
        lg.removeHandler(handler)


def _batches(log_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keys = ("n_tracks", "audio_seconds", "oom_splits", "time_chunked", "budget_bytes", "peak_bytes")
    return [{k: (round(r[k], 2) if isinstance(r[k], float) else r[k]) for k in keys} for r in log_rows]


# --------------------------------------------------------------------------- 1. no Ray
def check_no_ray(r: Result, ctx: Ctx) -> None:
    import actors

    needs_ray, missing, imported = [], {}, 0
    for mod in pkgutil.walk_packages(actors.__path__, "actors."):
        try:
            importlib.import_module(mod.name)
            imported += 1
        except ImportError as exc:
            name = getattr(exc, "name", None) or ""
            if name == "ray" or name.startswith("ray."):
                needs_ray.append(mod.name)
            else:
                missing[mod.name] = f"{type(exc).__name__}: {exc}"
    # Lazy imports inside functions too: only the Ray Train loop may name Ray at all.
    allowed = {"actors/train/loop.py"}
    lazy = []
    for path in sorted((ROOT / "actors").rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text(), filename=rel)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            if rel not in allowed and any(n == "ray" or n.startswith("ray.") for n in names):
                lazy.append(f"{rel}:{getattr(node, 'lineno', 0)}")
    r.figures = {"modules_imported": imported, "need_ray": needs_ray, "ray_imports_outside_loop": lazy,
                 "not_importable_here": missing}
    if needs_ray or lazy:
        raise Failed("Ray imported " + "; ".join(
            ([f"at import time by {', '.join(needs_ray)}"] if needs_ray else [])
            + ([f"outside actors/train/loop.py at {', '.join(lazy)}"] if lazy else [])))
    r.detail = f"{imported} actors modules import without Ray; only actors/train/loop.py names Ray"
    if missing:
        r.detail += f"; {len(missing)} need packages missing here: {', '.join(sorted(missing))}"


# --------------------------------------------------------------------------- 2. pytest -m gpu
_PYTEST_BOOT = "import sys; sys.modules['ray'] = None; import pytest; sys.exit(pytest.main(sys.argv[1:]))"
_XP_TEST = re.compile(r"def test_\w+\([^)]*\bxp\b", re.S)


def gpu_test_files() -> list[str]:
    """Test files holding ``gpu``-marked tests: an explicit marker, or the ``xp`` fixture (its
    CuPy parameter carries the marker, tests/conftest.py)."""
    out = []
    for p in sorted((ROOT / "tests").rglob("test_*.py")):
        text = p.read_text(errors="replace")
        if "mark.gpu" in text or _XP_TEST.search(text):
            out.append(str(p.relative_to(ROOT)))
    return out


def start_pytest(ctx: Ctx) -> None:
    """Start ``pytest -m gpu`` in a subprocess (Ray blocked there too); the check collects it.
    In smoke mode it starts first and runs beside the other checks; on a GPU it runs alone so
    that it does not share the device with the throughput measurement."""
    if "pytest" in ctx.cache or importlib.util.find_spec("pytest") is None:
        return
    files = gpu_test_files()
    tmp = tempfile.TemporaryDirectory()
    xml = Path(tmp.name) / "junit.xml"
    cmd = [sys.executable, "-c", _PYTEST_BOOT, "-m", "gpu", "-p", "no:cacheprovider", "-q", "-rfEs",
           f"--junitxml={xml}", *files]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) \
        if files else None
    ctx.cache["pytest"] = {"proc": proc, "tmp": tmp, "xml": xml, "files": files}


def check_pytest_gpu(r: Result, ctx: Ctx) -> None:
    if importlib.util.find_spec("pytest") is None:
        raise Skipped("pytest is not installed here (pip install pytest): the gpu-marked tests did not run")
    start_pytest(ctx)
    run = ctx.cache["pytest"]
    files, proc, xml = run["files"], run["proc"], run["xml"]
    if proc is None:
        raise Failed("no test file under tests/ holds gpu-marked tests")
    timeout = 240 if ctx.gpu else 150
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        proc.communicate()
        raise Failed(f"pytest -m gpu did not finish in {timeout} s") from exc
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    failed_names: list[str] = []
    with run["tmp"]:
        if xml.exists():
            root = ET.parse(xml).getroot()
            for suite in ([root] if root.tag == "testsuite" else root.iter("testsuite")):
                for k in counts:
                    counts[k] += int(suite.get(k, 0))
            failed_names = [f"{case.get('classname')}::{case.get('name')}" for case in root.iter("testcase")
                            if case.find("failure") is not None or case.find("error") is not None]
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    r.figures = {"files": files, "returncode": proc.returncode, "passed": passed, "failed": counts["failures"],
                 "errors": counts["errors"], "skipped": counts["skipped"], "failed_tests": failed_names,
                 "output_tail": out[-3000:] + err[-1000:]}
    r.detail = f"{passed} passed, {counts['failures']} failed, {counts['errors']} errors, {counts['skipped']} skipped"
    if counts["failures"] or counts["errors"] or proc.returncode not in (0, 5):
        raise Failed(r.detail + (f": {', '.join(failed_names[:5])}" if failed_names else
                                 f" (pytest exit {proc.returncode})"))
    if ctx.gpu and passed == 0:
        raise Failed(r.detail + ": no gpu test ran although CuPy answers here")
    if not ctx.gpu:
        r.detail += " (no GPU: the gpu tests skip; collection and markers checked)"


# --------------------------------------------------------------------------- 3. chain parity
def check_chain_parity(r: Result, ctx: Ctx) -> None:
    if not ctx.gpu:
        raise Skipped("no GPU/CuPy: CuPy-vs-NumPy parity needs one (NumPy vs librosa: chain_vs_librosa)")
    ys = [y for _, y in ctx.tracks]
    gpu = _extractor(ctx, "gpu")
    if gpu.device != "gpu":
        raise Failed(f"FeatureExtractor(device=gpu) runs on {gpu.device}")
    t0 = time.perf_counter()
    ctx.cache["gpu_features"] = g = gpu(ys)
    t_gpu = time.perf_counter() - t0
    c = _cpu_features(ctx)
    rows, bad = [], []
    for (name, _), a, b in zip(ctx.tracks, g, c):
        d = _feature_diffs(a, b)
        rows.append({"track": name, **{k: float(f"{v:.3g}") for k, v in d.items()}})
        bad += _violations(name, d, chroma=TOL_CHROMA_ABS, onset=TOL_ONSET_OF_PEAK, summary=TOL_SUMMARY_REL)
    worst = _worst([_feature_diffs(a, b) for a, b in zip(g, c)])
    r.figures = {"tracks": len(ys), "audio_s": round(ctx.audio_seconds, 1), "per_track": rows, "worst": worst,
                 "tolerances": {"chroma_abs": TOL_CHROMA_ABS, "onset_of_peak": TOL_ONSET_OF_PEAK,
                                "tempo": "equal", "summary_rel": TOL_SUMMARY_REL},
                 "first_call_s": {"gpu_incl_compile": round(t_gpu, 2), "cpu": round(ctx.cache["cpu_seconds"], 2)}}
    r.detail = (f"{len(ys)} tracks: chroma {worst['chroma_abs']:.1e}, onset {worst['onset_of_peak']:.1e} of peak, "
                f"tempo diff {worst['tempo_diff']:.2g}, summaries {max(worst['rms_rel'], worst['harmonic_rel']):.1e}")
    if bad:
        raise Failed("; ".join(bad[:6]))


# --------------------------------------------------------------------------- 4. vs librosa
def _librosa_chain(y: np.ndarray, sr: int) -> Any:
    """librosa 0.11's calls for the chain (as tests/actors/features/test_chain.py states them)."""
    import librosa

    D = librosa.stft(y)
    H, _ = librosa.decompose.hpss(D)
    onset = librosa.onset.onset_strength(y=y, sr=sr)
    total = float((np.abs(D) ** 2).sum(dtype=np.float64))
    return dataclasses.make_dataclass("Ref", ["chroma", "onset", "tempo_bpm", "rms_mean", "harmonic_ratio",
                                              "n_frames"])(
        chroma=librosa.feature.chroma_stft(S=np.abs(H) ** 2, sr=sr, tuning=0),
        onset=onset,
        tempo_bpm=float(librosa.feature.tempo(onset_envelope=onset, sr=sr)[0]),
        rms_mean=float(librosa.feature.rms(S=np.abs(D)).mean(dtype=np.float64)),
        harmonic_ratio=float((np.abs(H) ** 2).sum(dtype=np.float64)) / total if total else 0.0,
        n_frames=D.shape[-1])


def check_chain_vs_librosa(r: Result, ctx: Ctx) -> None:
    if importlib.util.find_spec("librosa") is None:
        raise Skipped("librosa is not installed here (pip install librosa)")
    if ctx.dsp != DSPConfig():
        raise Skipped("non-default DSP settings: librosa's defaults are the reference")
    sr = ctx.dsp.sample_rate
    seconds = 20.0 if ctx.gpu else 8.0
    ys = _crops(ctx, 2, seconds)
    refs = [_librosa_chain(y, sr) for y in ys]
    devices = ["cpu", "gpu"] if ctx.gpu else ["cpu"]
    bad, worst = [], {}
    for dev in devices:
        feats = _extractor(ctx, dev)(ys)
        rows = [_feature_diffs(f, ref) for f, ref in zip(feats, refs)]
        worst[dev] = {k: float(f"{v:.3g}") for k, v in _worst(rows).items()}
        for i, d in enumerate(rows):
            bad += _violations(f"{dev} crop {i}", d, chroma=TOL_CHROMA_ABS, onset=TOL_ONSET_OF_PEAK,
                               summary=TOL_SUMMARY_REL)
    r.figures = {"crops": f"2 x {seconds:.0f} s of {ctx.source}", "worst": worst}
    r.detail = "; ".join(f"{dev}: chroma {w['chroma_abs']:.1e}, onset {w['onset_of_peak']:.1e} of peak, "
                         f"tempo diff {w['tempo_diff']:.2g}" for dev, w in worst.items())
    if bad:
        raise Failed("; ".join(bad[:6]))


# --------------------------------------------------------------------------- 5. codes
def check_codes_parity(r: Result, ctx: Ctx) -> None:
    from actors import fingerprint as fp
    from actors.dsp.xp import to_numpy

    cpu = _cpu_features(ctx)
    bad: list[str] = []
    n_codes = sum(int(fp.fingerprint_codes(f.chroma, frame_rate_hz=f.frame_rate_hz).size) for f in cpu)
    r.figures["codes"] = n_codes
    if ctx.gpu:
        cp = ctx.cp
        rel_diff = 0.0
        for (name, _), f in zip(ctx.tracks, cpu):
            rate = f.frame_rate_hz
            lib_np = fp.fingerprint_codes(f.chroma, frame_rate_hz=rate)
            lib_cp = to_numpy(fp.fingerprint_codes(cp.asarray(f.chroma), frame_rate_hz=rate))
            q_np, rel_np = fp.query_codes(f.chroma, frame_rate_hz=rate)
            q_cp, rel_cp = fp.query_codes(cp.asarray(f.chroma), frame_rate_hz=rate)
            if lib_cp.dtype != np.uint32 or not np.array_equal(lib_np, lib_cp):
                bad.append(f"{name}: library codes differ on CuPy ({int((lib_np != lib_cp).sum())} codes)")
            if not np.array_equal(q_np, to_numpy(q_cp)):
                bad.append(f"{name}: query codes differ on CuPy")
            rel_diff = max(rel_diff, float(np.abs(rel_np - to_numpy(rel_cp)).max()))
        r.figures["query_reliability_max_abs_diff"] = rel_diff
        # End to end: codes of the GPU chain's chroma against the CPU chain's (the pipeline packs
        # codes from the host copy of the chroma, actors/stages.py).
        gpu = ctx.cache.get("gpu_features") or _extractor(ctx, "gpu")([y for _, y in ctx.tracks])
        diff_codes = diff_bits = 0
        for (name, _), a, b in zip(ctx.tracks, gpu, cpu):
            ca = fp.fingerprint_codes(a.chroma, frame_rate_hz=a.frame_rate_hz)
            cb = fp.fingerprint_codes(b.chroma, frame_rate_hz=b.frame_rate_hz)
            if ca.shape != cb.shape:
                bad.append(f"{name}: {ca.shape} codes from the GPU chain, {cb.shape} from the CPU chain")
                continue
            diff_codes += int((ca != cb).sum())
            diff_bits += int(fp.popcount32(ca ^ cb).sum())
        r.figures.update({"chain_codes_differing": diff_codes, "chain_bits_differing": diff_bits,
                          "chain_bits_total": n_codes * fp.N_BITS})
        if diff_codes:
            bad.append(f"GPU chain vs CPU chain: {diff_codes} of {n_codes} codes differ "
                       f"({diff_bits} bits of {n_codes * fp.N_BITS})")
        r.detail = (f"{n_codes} codes: CuPy == NumPy on the same chroma; GPU chain vs CPU chain "
                    f"{diff_codes} codes / {diff_bits} bits differ")
    else:
        # No CuPy: the library path, the query path and a batched call must agree bit for bit.
        for (name, _), f in zip(ctx.tracks, cpu):
            rate = f.frame_rate_hz
            lib = fp.fingerprint_codes(f.chroma, frame_rate_hz=rate)
            q, _rel = fp.query_codes(f.chroma, frame_rate_hz=rate)
            if not np.array_equal(lib, q[..., :: fp.DECIMATE]):
                bad.append(f"{name}: library codes != every {fp.DECIMATE}th query code")
        t = min(f.chroma.shape[-1] for f in cpu)
        stacked = np.stack([f.chroma[:, :t] for f in cpu])
        batched = fp.fingerprint_codes(stacked, frame_rate_hz=cpu[0].frame_rate_hz)
        for i, f in enumerate(cpu):
            if not np.array_equal(batched[i], fp.fingerprint_codes(f.chroma[:, :t], frame_rate_hz=f.frame_rate_hz)):
                bad.append(f"track {i}: batched codes differ from the per-track call")
        r.detail = (f"{n_codes} codes: library == decimated query == batched (NumPy); "
                    "CuPy-vs-NumPy skipped: no GPU")
    if bad:
        raise Failed("; ".join(bad[:6]))


# --------------------------------------------------------------------------- 6. throughput
def check_throughput(r: Result, ctx: Ctx) -> None:
    from actors.features import budget_bytes, plan_batches

    sr = ctx.dsp.sample_rate
    base = [y for _, y in ctx.tracks]
    device = "gpu" if ctx.gpu else "cpu"
    ex = _extractor(ctx, device)
    t0 = time.perf_counter()
    ex(base)  # warm-up: probe, FFT plans, CuPy kernel compilation
    warm_s = time.perf_counter() - t0
    ex.drain_batch_log()
    repeat = 1
    if ctx.gpu:  # the tracks repeated to the wanted audio length, but at most ~40 s per timed run
        repeat = max(1, min(math.ceil(60.0 * ctx.throughput_minutes / ctx.audio_seconds),
                            int(40.0 / max(warm_s, 1e-3))))
    ys = base * repeat
    audio_s = sum(len(y) for y in ys) / sr
    best, best_log = math.inf, []
    plan_info: dict[str, Any] = {}
    for _ in range(2 if ctx.gpu else 1):
        if best < math.inf and best > 30.0:
            break  # slow device: one timed run is enough and keeps the check within minutes
        bps = float(ex.bytes_per_second or 1.0)
        budget = budget_bytes(ex.batch_cfg, ex.device)
        planned = plan_batches([len(y) / sr for y in ys], bytes_per_second=bps, budget=budget,
                               max_tracks=ex.batch_cfg.max_tracks_per_batch,
                               min_chunk_seconds=ex.batch_cfg.min_chunk_seconds)
        t0 = time.perf_counter()
        ex(ys)
        wall = time.perf_counter() - t0
        rows = ex.drain_batch_log()
        if wall < best:
            best, best_log = wall, rows
            plan_info = {"bytes_per_second": bps, "budget": budget,
                         "planned": [(len(p.indices), p.padded_seconds, p.chunk_seconds) for p in planned]}
    x_rt = audio_s / best
    ctx.cache["throughput"] = {"batch_log": best_log, "device": device, **plan_info}
    sizes = [row["n_tracks"] for row in best_log]
    r.figures = {"device": device, "tracks": len(ys), "audio_s": round(audio_s, 1), "wall_s": round(best, 3),
                 "x_realtime": round(x_rt, 1), "warmup_s": round(warm_s, 2), "batch_sizes": sizes,
                 "bytes_per_audio_second": round(plan_info["bytes_per_second"], 1),
                 "budget_bytes": plan_info["budget"], "batches": _batches(best_log),
                 "target_x_realtime": TARGET_X_REALTIME if ctx.gpu else None}
    r.detail = (f"{x_rt:,.0f}x realtime on {device} ({audio_s / 60:.0f} min of audio in {best:.2f} s; "
                f"batches of {sorted(set(sizes), reverse=True)} tracks)")
    if ctx.gpu and x_rt < TARGET_X_REALTIME:
        raise Failed(r.detail + f": below the {TARGET_X_REALTIME:,.0f}x target")
    if not ctx.gpu:
        r.detail += "; the 2,000x target applies to a GPU"


# --------------------------------------------------------------------------- 7. planner
def check_planner_free_memory(r: Result, ctx: Ctx) -> None:
    from actors.features import budget_bytes
    from actors.features.batching import cgroup_free_bytes, meminfo_available_bytes

    cfg = BatchConfig(device="gpu" if ctx.gpu else "cpu")
    if ctx.gpu:
        cp = ctx.cp
        pool = cp.get_default_memory_pool()

        def real_free() -> tuple[int, int]:
            free, total = cp.cuda.runtime.memGetInfo()
            return int(free) + int(pool.free_bytes()), int(total)

        before, total = real_free()
        budget = budget_bytes(cfg, "gpu")
        after, _ = real_free()
        slack = 64 << 20
    else:
        def real_free() -> tuple[int, int]:
            vals = [v for v in (cgroup_free_bytes(), meminfo_available_bytes()) if v is not None]
            return (min(vals) if vals else 2 << 30), 0

        before, _ = real_free()
        budget = budget_bytes(cfg, "cpu")
        after, _ = real_free()
        total = 0
        slack = 256 << 20  # host memory moves under other processes between the reads
    lo = cfg.memory_fraction * min(before, after) - slack
    hi = cfg.memory_fraction * max(before, after) + slack
    bad = []
    if not lo <= budget <= hi:
        bad.append(f"budget {_mib(budget)} MiB is not {cfg.memory_fraction} x the free memory "
                   f"({_mib(before)}..{_mib(after)} MiB)")
    if total and budget > total:
        bad.append(f"budget {_mib(budget)} MiB exceeds the device's {_mib(total)} MiB")
    tp = ctx.cache.get("throughput")
    rows = []
    if tp:
        bps = tp["bytes_per_second"]
        for row, planned in zip(tp["batch_log"], tp["planned"]):
            est = planned[1] * bps if planned[2] is None else planned[2] * bps
            rows.append({"n_tracks": row["n_tracks"], "planned_tracks": planned[0], "peak_mib": _mib(row["peak_bytes"]),
                         "estimate_mib": _mib(est), "budget_mib": _mib(row["budget_bytes"]),
                         "peak_over_estimate": round(row["peak_bytes"] / max(est, 1.0), 3)})
            if row["peak_bytes"] > PEAK_OVER_BUDGET * row["budget_bytes"]:
                bad.append(f"a batch of {row['n_tracks']} tracks peaked at {_mib(row['peak_bytes'])} MiB, over its "
                           f"budget of {_mib(row['budget_bytes'])} MiB")
        if [p[0] for p in tp["planned"]] != [row["n_tracks"] for row in tp["batch_log"]]:
            bad.append(f"batches run {[row['n_tracks'] for row in tp['batch_log']]} differ from the plan "
                       f"{[p[0] for p in tp['planned']]} (an OOM split where none should be?)")
    r.figures = {"free_bytes": [before, after], "total_bytes": total or None, "budget_bytes": budget,
                 "memory_fraction": cfg.memory_fraction, "throughput_batches": rows}
    where = "free VRAM (memGetInfo + CuPy pool)" if ctx.gpu else "free host memory (cgroup / MemAvailable)"
    r.detail = f"budget {_mib(budget) / 1024:.2f} GiB = {cfg.memory_fraction} x {where} {_mib(after) / 1024:.2f} GiB"
    if rows:
        r.detail += (f"; {len(rows)} throughput batches peaked at <= "
                     f"{max(x['peak_mib'] for x in rows) / 1024:.2f} GiB, "
                     f"peak/estimate <= {max(x['peak_over_estimate'] for x in rows):.2f}")
    if bad:
        raise Failed("; ".join(bad[:6]))


# --------------------------------------------------------------------------- 8. forced budget
def _compare_same(ref: list[Any], out: list[Any]) -> list[str]:
    bad = []
    for i, (a, b) in enumerate(zip(out, ref)):
        d = _feature_diffs(a, b)
        peak = max(float(np.abs(b.onset).max()), 1e-12)
        onset_abs = d["onset_of_peak"] * peak
        if d["frames_diff"] or d["chroma_abs"] > TOL_SAME_DEVICE_ABS or onset_abs > TOL_SAME_DEVICE_ABS \
                or d["tempo_diff"] != 0:
            bad.append(f"track {i}: differs from the unconstrained run ({d})")
    return bad


def check_forced_budget(r: Result, ctx: Ctx) -> None:
    device = "gpu" if ctx.gpu else "cpu"
    sr = ctx.dsp.sample_rate
    ys = [y for _, y in ctx.tracks]
    ref_ex = _extractor(ctx, device)
    ref = (ctx.cache.get("gpu_features") or ref_ex(ys)) if ctx.gpu else _cpu_features(ctx)
    bps = ref_ex.bytes_per_second or ref_ex.probe(ys[0])
    if not bps > 0:
        raise Failed("PeakMemory measured no allocation: the planner has no bytes-per-second estimate")
    longest = max(len(y) for y in ys) / sr
    # Less than the longest track needs: it is time-chunked; the others go in smaller batches.
    budget = int(bps * 0.6 * longest)
    ex = _extractor(ctx, device, memory_budget_bytes=budget)
    out = ex(ys)
    rows = ex.drain_batch_log()
    bad = _compare_same(ref, out)
    over = [row for row in rows if row["peak_bytes"] > PEAK_OVER_BUDGET * budget]
    if over:
        bad.append(f"{len(over)} of {len(rows)} batches peaked over {PEAK_OVER_BUDGET} x the forced budget of "
                   f"{_mib(budget)} MiB (worst {_mib(max(row['peak_bytes'] for row in over))} MiB)")
    chunked = sum(row["time_chunked"] for row in rows)
    if not chunked:
        bad.append("no track was time-chunked although the longest does not fit the budget")
    worst = max(row["peak_bytes"] for row in rows) / budget
    r.figures = {"budget_bytes": budget, "bytes_per_audio_second": round(bps, 1), "longest_s": round(longest, 1),
                 "peak_over_budget_max": round(worst, 4), "batches": _batches(rows)}
    r.detail = (f"budget {_mib(budget)} MiB (0.6 x the longest track): {len(rows)} batches, {chunked} time-chunked, "
                f"peak <= {worst:.3f} x budget; results equal")
    if bad:
        raise Failed("; ".join(bad[:6]))


# --------------------------------------------------------------------------- 9. real OOM
def _oom_outcome(ref: list[Any], out: list[Any] | None, rows: list[dict[str, Any]], warnings: list[str],
                 error: str | None) -> tuple[list[str], dict[str, Any]]:
    bad = []
    if error:
        bad.append(f"the chain did not recover from the out-of-memory: {error}")
    elif out is not None:
        bad += _compare_same(ref, out)
    splits = max((row["oom_splits"] for row in rows), default=0)
    ooms = [w for w in warnings if w.startswith("OOM")]
    if not error and (splits == 0 or not ooms):
        bad.append("no batch ran out of memory: the forced condition did not bite")
    return bad, {"batches": _batches(rows), "max_oom_splits": splits, "oom_warnings": ooms[:10]}


def check_oom_split_retry(r: Result, ctx: Ctx) -> None:
    seconds = 60.0 if ctx.gpu else 20.0
    ys = _crops(ctx, OOM_TRACKS, seconds)
    if not ctx.gpu:
        _oom_cpu_child(r, ctx, ys)
        return
    cp = ctx.cp
    pool = cp.get_default_memory_pool()
    ref_ex = _extractor(ctx, "gpu")
    ref = ref_ex(ys)
    need = OOM_TRACKS * seconds * float(ref_ex.bytes_per_second or 0.0)
    if not need > 0:
        raise Failed("PeakMemory measured no allocation: the planner has no bytes-per-second estimate")
    ex = _extractor(ctx, "gpu", memory_budget_bytes=int(2 * need))
    ex.probe(ys[0])  # the probe is not what should fail
    ex.drain_batch_log()
    pool.free_all_blocks()
    free, _total = cp.cuda.runtime.memGetInfo()
    leave = int(OOM_LEFT_FRACTION * need)
    if free <= leave:
        raise Skipped(f"only {_mib(free)} MiB free: too little to set the test up")
    ballast_bytes = int(free - leave)
    ptr = cp.cuda.runtime.malloc(ballast_bytes)  # raw cudaMalloc, outside CuPy's pool
    out, error = None, None
    try:
        left = int(cp.cuda.runtime.memGetInfo()[0])
        with _captured("actors.features.chain") as warnings:
            try:
                out = ex([y.copy() for y in ys])
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
    finally:
        cp.cuda.runtime.free(ptr)
        pool.free_all_blocks()
    rows = ex.drain_batch_log()
    bad, figs = _oom_outcome(ref, out, rows, warnings, error)
    r.figures = {"need_estimate_bytes": int(need), "ballast_bytes": ballast_bytes, "free_left_bytes": left,
                 "forced_budget_bytes": int(2 * need), **figs}
    r.detail = (f"{OOM_TRACKS} x {seconds:.0f} s, first batch needs ~{_mib(need)} MiB, {_mib(left)} MiB left free: "
                f"split {figs['max_oom_splits']}x, batches {[b['n_tracks'] for b in figs['batches']]}")
    if bad:
        raise Failed("; ".join(bad[:4]))


def _oom_cpu_child(r: Result, ctx: Ctx, ys: list[np.ndarray]) -> None:
    """CPU: the same test in a child process whose address space is capped (RLIMIT_AS), so the
    batch's allocations fail with a real MemoryError; a crash there cannot take this run down."""
    if not hasattr(os, "fork") or importlib.util.find_spec("resource") is None:
        raise Skipped("no RLIMIT_AS on this platform")
    with tempfile.TemporaryDirectory() as tmp:
        npz, out_json = Path(tmp) / "ys.npz", Path(tmp) / "out.json"
        np.savez(npz, *ys)
        env = {**os.environ, "MALLOC_ARENA_MAX": "1"}  # per-thread malloc arenas reserve address space
        cmd = [sys.executable, str(Path(__file__).resolve()), "--oom-child", str(npz), str(out_json)]
        try:
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
        except subprocess.TimeoutExpired as exc:
            raise Failed("the out-of-memory child did not finish in 120 s") from exc
        if not out_json.exists():
            raise Failed(f"the out-of-memory child died (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
        res = json.loads(out_json.read_text())
    r.figures = {k: v for k, v in res.items() if k != "bad"}
    r.detail = (f"{OOM_TRACKS} x {res['seconds']:.0f} s, first batch needs ~{_mib(res['need'])} MiB, address space "
                f"capped {_mib(res['left'])} MiB above use: split {res['max_oom_splits']}x, "
                f"batches {[b['n_tracks'] for b in res['batches']]}")
    if res["bad"]:
        raise Failed("; ".join(res["bad"][:4]))


def oom_child(npz: Path, out_json: Path) -> int:
    """Child side of :func:`_oom_cpu_child` (``--oom-child``)."""
    import resource

    data = np.load(npz)
    ys = [data[k] for k in data.files]
    dsp = DSPConfig()
    ctx = Ctx(mode="smoke", cp=None, dsp=dsp, tracks=[], source="child")
    ref_ex = _extractor(ctx, "cpu")
    ref = ref_ex(ys)
    seconds = len(ys[0]) / dsp.sample_rate
    need = len(ys) * seconds * float(ref_ex.bytes_per_second or 0.0)
    ex = _extractor(ctx, "cpu", memory_budget_bytes=int(2 * need))
    ex.probe(ys[0])
    ex([ys[0][: 5 * dsp.sample_rate]])  # warm-up: FFT plans, lazy imports, arenas
    ex.drain_batch_log()
    vm = next(int(line.split()[1]) * 1024 for line in Path("/proc/self/status").read_text().splitlines()
              if line.startswith("VmSize:"))
    left = int(OOM_LEFT_FRACTION * need)
    out, error = None, None
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with _captured("actors.features.chain") as warnings:
        resource.setrlimit(resource.RLIMIT_AS, (vm + left, hard))
        try:
            out = ex(ys)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        finally:
            resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
    bad, figs = _oom_outcome(ref, out, ex.drain_batch_log(), warnings, error)
    out_json.write_text(json.dumps({"seconds": seconds, "need": need, "left": left, "bad": bad, **figs}))
    return 0


# --------------------------------------------------------------------------- 10-11. training
def _profile(ctx: Ctx) -> Any:
    from pipeline.train.profiles import load_profile

    return load_profile("workstation" if ctx.gpu else "laptop")


def _token_batches(seed: int, n_steps: int, batch: int, seq_len: int) -> list[Any]:
    """Windows of ``seq_len + 1`` tokens of one sparse Markov chain (pipeline.synth.sequences)."""
    import torch

    from pipeline.synth.sequences import VOCAB, markov_tokens

    rng = np.random.default_rng(seed)
    succ1, succ2 = rng.permutation(VOCAB), rng.permutation(VOCAB)
    stream = markov_tokens(rng, n_steps * batch * (seq_len + 1) + 1, succ1, succ2)
    windows = stream[: n_steps * batch * (seq_len + 1)].reshape(n_steps, batch, seq_len + 1)
    return [torch.from_numpy(w.astype(np.int64)) for w in windows]


def _train(model: Any, batches: list[Any], *, device: Any, precision: str, lr: float,
           watch: Callable[[], dict[str, float]] | None = None) -> dict[str, Any]:
    """Training steps through the loop's own ``train_step`` (AdamW, autocast, GradScaler for fp16,
    gradient clipping); ``watch`` is called after each backward (gradient norms)."""
    import torch

    from actors.train.config import LoopConfig
    from actors.train.models import split_batch, train_step

    defaults: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(LoopConfig)}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=float(defaults["weight_decay"]))
    prec = precision if device.type == "cuda" else "fp32"
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(prec)
    scaler = torch.amp.GradScaler("cuda") if prec == "fp16" else None
    out_dtypes: list[str] = []
    head = getattr(model, "get_base_model", lambda: model)().head  # peft wraps the SequenceModel
    handle = head.register_forward_hook(lambda _m, _i, o: out_dtypes.append(str(o.dtype).replace("torch.", "")))
    losses, watched = [], []
    model.train()
    try:
        for x in batches:
            inputs, targets = split_batch(x.to(device))
            loss = train_step(model, "tokens", inputs, targets, optimizer=opt, params=params,
                              grad_clip=float(defaults["grad_clip"]), amp_dtype=amp, scaler=scaler,
                              after_backward=None if watch is None else lambda: watched.append(watch()))
            losses.append(float(loss.detach().float()))
    finally:
        handle.remove()
    return {"losses": losses, "watched": watched, "precision": prec,
            "head_dtype": out_dtypes[0] if out_dtypes else None}


def _falls(losses: list[float]) -> tuple[bool, float, float]:
    k = max(1, min(3, len(losses) // 4))
    first, last = float(np.mean(losses[:k])), float(np.mean(losses[-k:]))
    return bool(np.isfinite(last) and last < 0.95 * first), first, last


def _lora_grads(model: Any) -> Callable[[], dict[str, float]]:
    def watch() -> dict[str, float]:
        return {n: (0.0 if p.grad is None else float(p.grad.detach().float().norm()))
                for n, p in model.named_parameters() if "lora_" in n}
    return watch


def _train_and_lora(r: Result, ctx: Ctx, arch: str, backend: str | None) -> None:
    import torch

    from actors.train.models import ModelSpec, build_model
    from actors.train.models.lora import apply_lora, lora_targets
    from pipeline.synth.sequences import VOCAB

    if ctx.gpu and not torch.cuda.is_available():
        raise Failed("CuPy sees a GPU but torch has no CUDA (install a CUDA build of PyTorch)")
    device = torch.device("cuda" if ctx.gpu else "cpu")
    prof = _profile(ctx)
    # A few steps, small enough for any GPU; on CPU (smoke) smaller still and one thread: torch's
    # threads on an oversubscribed CI machine made a step 20x slower here.
    seq_len, batch = (min(prof.seq_len, 256), min(prof.batch_size, 16)) if ctx.gpu else (64, 8)
    steps, lora_steps = (30, 20) if ctx.gpu else (20, 20)
    if not ctx.gpu:
        torch.set_num_threads(1)
    torch.manual_seed(0)
    spec = ModelSpec(arch=arch, task="tokens", vocab_size=VOCAB, d_model=prof.d_model, n_layers=prof.n_layers,
                     max_len=max(1024, seq_len))
    model = build_model(spec, backend=backend).to(device)
    got_backend = getattr(model.backbone, "backend", None)
    if arch == "mamba" and backend is not None and got_backend != backend:
        raise Failed(f"asked for Mamba backend {backend}, built {got_backend}")
    t0 = time.perf_counter()
    base = _train(model, _token_batches(1, steps, batch, seq_len), device=device, precision=prof.precision,
                  lr=prof.lr)
    base_s = time.perf_counter() - t0
    ok, first, last = _falls(base["losses"])
    bad = [] if ok else [f"loss did not fall: {first:.3f} -> {last:.3f}"]
    want = {"bf16": "bfloat16", "fp16": "float16"}.get(base["precision"], "float32")
    if base["head_dtype"] != want:
        bad.append(f"{base['precision']} asked, the head computed in {base['head_dtype']}")
    r.figures = {"device": str(device), "profile": prof.name, "precision": base["precision"], "backend": got_backend,
                 "d_model": prof.d_model, "n_layers": prof.n_layers, "seq_len": seq_len, "batch": batch,
                 "steps": steps, "loss_first": round(first, 4), "loss_last": round(last, 4),
                 "head_dtype": base["head_dtype"], "step_s": round(base_s / steps, 4)}

    if arch == "mamba" and got_backend == "mamba_ssm":
        r.figures["fused_bypass"] = _fused_bypass_probe(model, device, batch, seq_len, lora_targets(spec))

    # LoRA on a second Markov chain: adapters only, through apply_lora as the training loop does.
    peft_model: Any = apply_lora(model, r=prof.lora_r, alpha=prof.lora_alpha).to(device)
    inner = peft_model.get_base_model()
    lora_backend = getattr(inner.backbone, "backend", None)
    frozen = {n: p.detach().clone() for n, p in peft_model.named_parameters() if "lora_" not in n}
    t0 = time.perf_counter()
    lo = _train(peft_model, _token_batches(2, lora_steps, batch, seq_len), device=device,
                precision=prof.precision, lr=prof.lr, watch=_lora_grads(peft_model))
    lora_s = time.perf_counter() - t0
    names = sorted(lo["watched"][0]) if lo["watched"] else []
    best_norm = {n: max(w[n] for w in lo["watched"]) for n in names}
    no_grad = [n for n, v in best_norm.items() if not (v > 0 and math.isfinite(v))]
    moved = [n for n, p in peft_model.named_parameters() if "lora_" not in n and not torch.equal(p, frozen[n])]
    lok, lfirst, llast = _falls(lo["losses"])
    if not names:
        bad.append("the LoRA model has no adapter parameters")
    if no_grad:
        bad.append(f"{len(no_grad)} of {len(names)} LoRA tensors never received a gradient"
                   f"{' (fused mamba_ssm path bypasses peft)' if lora_backend == 'mamba_ssm' else ''}: "
                   f"{', '.join(no_grad[:4])}")
    if moved:
        bad.append(f"{len(moved)} frozen base tensors changed: {', '.join(moved[:4])}")
    if not lok:
        bad.append(f"LoRA loss did not fall: {lfirst:.3f} -> {llast:.3f}")
    r.figures.update({"lora_backend": lora_backend, "lora_tensors": len(names), "lora_steps": lora_steps,
                      "lora_min_grad_norm": min(best_norm.values()) if best_norm else None,
                      "lora_loss_first": round(lfirst, 4), "lora_loss_last": round(llast, 4),
                      "lora_step_s": round(lora_s / lora_steps, 4)})
    r.detail = (f"{device} {base['precision']} ({prof.name}), {got_backend or arch}: loss {first:.2f} -> {last:.2f} "
                f"in {steps} steps; LoRA on {lora_backend or arch}: {len(names) - len(no_grad)}/{len(names)} "
                f"adapters got gradients, loss {lfirst:.2f} -> {llast:.2f}")
    if bad:
        raise Failed("; ".join(bad))


def _fused_bypass_probe(model: Any, device: Any, batch: int, seq_len: int, targets: list[str]) -> dict[str, Any]:
    """peft wrapped straight onto the fused mamba_ssm model (what apply_lora avoids): which
    adapters get a gradient. Shown, not judged: it documents why the unfused path is needed."""
    from peft import LoraConfig, get_peft_model

    from actors.train.models import sequence_loss, split_batch

    raw = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    for n, p in raw.named_parameters():
        if "lora_B" in n:  # non-zero B so A's gradient is not zero by construction
            p.data.normal_(0, 0.02)
    inputs, tgt = split_batch(_token_batches(3, 1, batch, seq_len)[0].to(device))
    sequence_loss("tokens", raw(inputs), tgt).backward()
    got: dict[str, bool] = {}
    for t in targets:
        norms = [0.0 if p.grad is None else float(p.grad.float().norm())
                 for n, p in raw.named_parameters() if "lora_" in n and f".{t}." in n]
        got[t] = bool(norms) and all(v > 0 for v in norms)
    return {"adapter_gets_gradient": got, "bypassed": [t for t, v in got.items() if not v]}


def check_train_mamba(r: Result, ctx: Ctx) -> None:
    _train_and_lora(r, ctx, "mamba", "mambapy")


def check_train_transformer(r: Result, ctx: Ctx) -> None:
    _train_and_lora(r, ctx, "transformer", None)


def check_train_mamba_ssm(r: Result, ctx: Ctx) -> None:
    from actors.train.models.mamba import force_fallback, kernels_available

    if not ctx.gpu:
        raise Skipped("no GPU: mamba_ssm's fused kernels need CUDA")
    if not kernels_available():
        raise Skipped("mamba_ssm does not import here (pip install mamba-ssm causal-conv1d)")
    if force_fallback():
        raise Skipped("CHROMARAY_MAMBA_FORCE_FALLBACK is set")
    _train_and_lora(r, ctx, "mamba", "mamba_ssm")
    if r.figures.get("lora_backend") != "mambapy":
        raise Failed("LoRA kept the fused mamba_ssm path for the adapted blocks")
    bypassed = r.figures.get("fused_bypass", {}).get("bypassed", [])
    r.detail += (f"; peft straight on the fused model: adapters on {', '.join(bypassed)} get no gradient"
                 if bypassed else "; peft straight on the fused model: every adapter got a gradient")


# --------------------------------------------------------------------------- driver
CHECKS: list[tuple[str, Callable[[Result, Ctx], None]]] = [
    ("no_ray", check_no_ray),
    ("pytest_gpu", check_pytest_gpu),
    ("chain_parity", check_chain_parity),
    ("chain_vs_librosa", check_chain_vs_librosa),
    ("codes_parity", check_codes_parity),
    ("throughput", check_throughput),
    ("planner_free_memory", check_planner_free_memory),
    ("forced_budget", check_forced_budget),
    ("oom_split_retry", check_oom_split_retry),
    ("train_mamba", check_train_mamba),
    ("train_transformer", check_train_transformer),
    ("train_mamba_ssm", check_train_mamba_ssm),
]


def run_check(name: str, fn: Callable[[Result, Ctx], None], ctx: Ctx) -> Result:
    r = Result(name)
    t0 = time.perf_counter()
    try:
        fn(r, ctx)
    except Skipped as exc:
        r.status, r.detail = "skip", str(exc)
    except Failed as exc:
        r.status, r.detail = "fail", str(exc)
    except Exception as exc:
        r.status, r.detail = "fail", f"{type(exc).__name__}: {exc}"
        r.error = traceback.format_exc()
    r.seconds = round(time.perf_counter() - t0, 2)
    mark = {"pass": "ok  ", "fail": "FAIL", "skip": "skip"}[r.status]
    print(f"  [{mark}] {name} ({r.seconds:.1f} s)", file=sys.stderr, flush=True)
    return r


def versions(cp: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"python": platform.python_version(), "numpy": np.__version__,
                           "machine": platform.platform(), "cpus": os.cpu_count()}
    from importlib import metadata

    for dist in ("scipy", "librosa", "torch", "peft", "transformers", "mambapy", "mamba-ssm", "pytest"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    if cp is not None:
        dev = cp.cuda.Device()
        props = cp.cuda.runtime.getDeviceProperties(dev.id)
        name = props.get("name", b"")
        out.update({"cupy": cp.__version__, "cuda_runtime": cp.cuda.runtime.runtimeGetVersion(),
                    "gpu": name.decode() if isinstance(name, bytes) else str(name),
                    "gpu_total_bytes": int(cp.cuda.runtime.memGetInfo()[1])})
    try:
        import torch

        out["torch_cuda"] = torch.version.cuda if torch.cuda.is_available() else None
    except Exception:
        out["torch_cuda"] = None
    from actors.train.models.mamba import kernels_available

    out["mamba_ssm"] = kernels_available()
    return out


def print_table(results: list[Result], header: str) -> None:
    print(header)
    width = max(len(r.name) for r in results)
    print(f"{'check'.ljust(width)}  status  seconds  result")
    print(f"{'-' * width}  ------  -------  ------")
    for r in results:
        print(f"{r.name.ljust(width)}  {r.status:<6}  {r.seconds:7.1f}  {r.detail}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="NumPy/CPU on short crops (automatic without a GPU)")
    ap.add_argument("--gpu", action="store_true", help="require the GPU path (error if CuPy has no device)")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"JSON output (default {DEFAULT_JSON})")
    ap.add_argument("--audio", type=Path, default=DEFAULT_AUDIO, help="folder of real tracks")
    ap.add_argument("--only", default="", help="comma-separated check names")
    ap.add_argument("--throughput-minutes", type=float, default=60.0,
                    help="GPU: audio minutes per timed throughput run (the tracks repeated; default 60)")
    ap.add_argument("--oom-child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.oom_child:
        return oom_child(*args.oom_child)
    names = [n for n, _ in CHECKS]
    only = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(only) - set(names))
    if unknown:
        print(f"gpu_check: unknown check(s) {', '.join(unknown)}; known: {', '.join(names)}", file=sys.stderr)
        return 2
    if args.smoke and args.gpu:
        print("gpu_check: --smoke and --gpu exclude each other", file=sys.stderr)
        return 2
    t_start = time.perf_counter()
    cp = None if args.smoke else _cupy_or_none()
    if args.gpu and cp is None:
        print("gpu_check: --gpu given but CuPy finds no usable GPU here", file=sys.stderr)
        return 2
    mode = "gpu" if cp is not None else "smoke"
    reason = "--smoke" if args.smoke else ("" if cp is not None else "no GPU/CuPy here")
    dsp = DSPConfig()
    if mode == "gpu":
        tracks, source = load_tracks(args.audio, dsp.sample_rate, seconds=None, limit=None,
                                     synth_tracks=8, synth_seconds=120.0)
    else:
        tracks, source = load_tracks(args.audio, dsp.sample_rate, seconds=12.0, limit=4,
                                     synth_tracks=4, synth_seconds=12.0)
    ctx = Ctx(mode=mode, cp=cp, dsp=dsp, tracks=tracks, source=source, throughput_minutes=args.throughput_minutes)
    print(f"gpu_check: mode {mode}{f' ({reason})' if reason else ''}; {source}, {ctx.audio_seconds / 60:.1f} min",
          file=sys.stderr, flush=True)
    if mode == "smoke" and (not only or "pytest_gpu" in only):
        start_pytest(ctx)
    results = [run_check(n, fn, ctx) for n, fn in CHECKS if not only or n in only]
    total = time.perf_counter() - t_start
    failed = [r.name for r in results if r.status == "fail"]
    header = (f"gpu_check — mode {mode}{f' ({reason})' if reason else ''}, {source} "
              f"({ctx.audio_seconds / 60:.1f} min), {total:.0f} s; "
              + ("all checks passed or skipped" if not failed else f"FAILED: {', '.join(failed)}"))
    print_table(results, header)
    report = {"mode": mode, "mode_reason": reason or None, "source": source,
              "audio_seconds": round(ctx.audio_seconds, 1), "seconds": round(total, 1), "ok": not failed,
              "failed": failed, "versions": versions(cp),
              "gpu_path_ran": mode == "gpu", "checks": [dataclasses.asdict(r) for r in results]}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=str))
    print(f"JSON: {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
