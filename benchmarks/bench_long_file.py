"""A 2-hour file through `chromaray fingerprint`: it must finish with bounded memory.

Writes a long FLAC (synthesized songs back to back, streamed to disk), runs the
fingerprint job on it in a fresh local Ray, samples the resident memory of
every process of the job (driver + Ray workers) and reports the peak next to
the size the whole decoded track would take.

    python benchmarks/bench_long_file.py --hours 2 --json-out benchmarks/out/long_file.json
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.synth import SR, simple_song


def write_long_flac(path: Path, hours: float, *, piece_s: float = 60.0) -> float:
    total = 0.0
    with sf.SoundFile(path, "w", samplerate=SR, channels=1, format="FLAC", subtype="PCM_16") as fh:
        i = 0
        while total < hours * 3600:
            y = simple_song(7000 + i % 40, piece_s)  # 40 distinct minutes, repeated
            fh.write(y)
            total += piece_s
            i += 1
    return total


def tree_uss(root: psutil.Process) -> dict[str, int]:
    """Unique bytes (USS: not counting pages shared with others, such as Ray's object
    store) of every process of the job, keyed by name:pid."""
    out = {}
    for p in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):  # ended between listing and reading
            out[f"{p.name()}:{p.pid}"] = p.memory_full_info().uss
    return out


def run_job(lib: Path, work: Path, chunk_seconds: float) -> dict:
    shutil.rmtree(work, ignore_errors=True)  # a fresh database: the job must do the work
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    cmd = [sys.executable, "-m", "jobs.fingerprint", str(lib), "--db", str(work / "db.sqlite"), "--out",
           str(work / "out"), "--chunk-seconds", str(chunk_seconds), "--no-progress"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    root = psutil.Process(proc.pid)
    peak_total: list[int] = [0]
    peak_each: dict[str, int] = {}

    def sample() -> None:
        while proc.poll() is None:
            try:
                uss = tree_uss(root)
            except psutil.NoSuchProcess:
                break
            peak_total[0] = max(peak_total[0], sum(uss.values()))
            for k, v in uss.items():
                peak_each[k] = max(peak_each.get(k, 0), v)
            time.sleep(0.5)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, _ = proc.communicate()
    th.join()
    top = sorted(peak_each.items(), key=lambda kv: -kv[1])[:5]
    return {"wall_s": time.perf_counter() - t0, "exit_code": proc.returncode, "peak_uss_sum": peak_total[0],
            "peak_uss_top_processes": dict(top), "summary": out.strip().splitlines()[-1:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--hours", type=float, default=2.0)
    ap.add_argument("--chunk-seconds", type=float, default=300.0)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json-out", default="benchmarks/out/long_file.json")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="chromaray-long-"))
    work.mkdir(parents=True, exist_ok=True)
    lib = work / "lib"
    lib.mkdir(exist_ok=True)
    flac = lib / "long.flac"
    if not flac.exists():
        t = time.perf_counter()
        write_long_flac(flac, args.hours)
        print(f"wrote {flac} ({flac.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t:.0f} s")
    seconds = sf.info(flac).duration
    short = work / "short"
    short.mkdir(exist_ok=True)
    sf.write(short / "one-minute.flac", simple_song(7000, 60.0), SR, format="FLAC")
    baseline = run_job(short, work / "run-short", args.chunk_seconds)
    long_run = run_job(lib, work / "run-long", args.chunk_seconds)
    whole_track = seconds * SR * 4  # float32 mono at the analysis rate
    result = {"audio_hours": seconds / 3600, "chunk_seconds": args.chunk_seconds,
              "decoded_track_bytes": whole_track, "long_file": long_run, "one_minute_file": baseline,
              "extra_peak_uss_long_vs_1min": long_run["peak_uss_sum"] - baseline["peak_uss_sum"]}
    print(json.dumps(result, indent=2))
    Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json_out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
