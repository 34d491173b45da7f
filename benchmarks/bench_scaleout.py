"""Scale-out: the fingerprint job on one Ray node vs two nodes started on this machine.

Starts two clusters: ``ray start --head --num-cpus 1``, and another such head plus
``ray start --address HEAD --num-cpus 1`` (free ports, private temp dirs). Runs the job through
its ``--address`` (``pipeline.ingest.run.run_fingerprint(address=...)`` in a child process, fresh
database each time) on each, alternating 1-2-2-1 (``--repeat 2``).
Reports wall time, audio throughput, the CPU of every process during each run, and the
two-node/one-node ratio of mean throughputs (target >= 1.7x). (The job's ``progress`` rows are
no steady-rate clock at this size: they move in bursts.)

Config: both runs use the same settings, the shipping ones; ``--pipeline KEY=VALUE`` sets others
(``CHROMARAY_PIPELINE__KEY``). A run that fails or times out is reported as such.

The nodes are stopped by killing exactly the processes this benchmark started (this process is
their child subreaper), on success and on failure alike: ``ray stop`` would also stop every
other Ray on a shared machine.

Workload: by default a generated library of 64 songs of 15 s (16 min; pipeline.synth), so the
work splits into equal input blocks (``pipeline.files_per_shard`` files each, 16 by default: 4
blocks); a FOLDER of real music works too, but few files make one or two blocks and then a second
node has nothing to do.

    python benchmarks/bench_scaleout.py [FOLDER | --generated N --seconds S] [--quick] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_pipeline import (
    QUIET,
    SHARED_AUDIO,
    audio_files,
    become_subreaper,
    generated_library,
    job_env,
    kill_descendants,
    reap_zombies,
    recorded_metrics,
    run_job,
)

RAY_BIN = Path(sys.executable).with_name("ray")
TARGET_RATIO = 1.7


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def node_ports() -> list[str]:
    """Every port a node opens that would otherwise be a fixed default shared with other Rays."""
    return [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
            f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
            f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}"]


class LocalCluster:
    """Ray nodes of 1 CPU each on this machine, started with ``ray start``; stopped by pid."""

    def __init__(self, object_store_bytes: int, settings: dict[str, str]) -> None:
        self.temp_dir = tempfile.mkdtemp(prefix="crs", dir="/tmp")  # short: unix socket paths
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.object_store = object_store_bytes
        self.env = job_env()
        self.env.pop("RAY_ADDRESS", None)
        self.env["PATH"] = f"{RAY_BIN.parent}{os.pathsep}{self.env.get('PATH', '')}"
        self.job_env = dict(self.env, **{f"CHROMARAY_PIPELINE__{k.upper()}": v for k, v in settings.items()})
        self.nodes = 0

    def _ray_start(self, args: list[str]) -> None:
        cmd = [str(RAY_BIN), "start", "--num-cpus=1", "--disable-usage-stats",
               f"--object-store-memory={self.object_store}", *node_ports(), *args]
        r = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=240, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"ray start failed ({' '.join(args)}):\n{r.stdout[-1500:]}\n{r.stderr[-1500:]}")
        self.nodes += 1

    def start_head(self) -> None:
        self._ray_start(["--head", f"--port={self.port}", "--node-ip-address=127.0.0.1",
                         f"--ray-client-server-port={free_port()}", "--include-dashboard=false",
                         f"--dashboard-port={free_port()}",
                         f"--temp-dir={self.temp_dir}"])
        self.wait_for_cpus(1)

    def add_node(self) -> None:
        self._ray_start([f"--address={self.address}", "--node-ip-address=127.0.0.1"])
        self.wait_for_cpus(self.nodes)

    def wait_for_cpus(self, n: int, timeout_s: float = 120.0) -> None:
        """Until the cluster reports ``n`` alive nodes (asked from a child process, so this
        process never joins the cluster itself)."""
        probe = ("import sys, ray; ray.init(address=sys.argv[1], logging_level='ERROR'); "
                 "print(sum(1 for n in ray.nodes() if n['Alive']))")
        deadline = time.monotonic() + timeout_s
        while True:
            r = subprocess.run([sys.executable, "-c", probe, self.address], env=self.env, capture_output=True,
                               text=True, timeout=120, check=False)
            reap_zombies()
            lines = r.stdout.strip().splitlines()
            if r.returncode == 0 and lines and int(lines[-1]) >= n:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster did not reach {n} node(s): {r.stderr[-800:]}")
            time.sleep(1.0)


def input_blocks(n_files: int, settings: dict[str, str]) -> int:
    """The fewest input blocks of the job's manifest (at most ``pipeline.files_per_shard`` files each)."""
    from pipeline.config import PipelineConfig

    per = int(settings.get("files_per_shard", getattr(PipelineConfig(), "files_per_shard", 1)))
    return -(-n_files // max(1, per))


def one_run(cluster: LocalCluster, files: list[Path], work: Path, timeout_s: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        m = run_job(files, work, num_cpus=None, address=cluster.address, timeout_s=timeout_s, wait_all=False,
                    env=cluster.job_env)
    except RuntimeError as exc:
        wall = time.perf_counter() - t0
        print(f"  {cluster.nodes} node(s): FAILED after {wall:.0f} s (timeout {timeout_s:g} s): "
              f"{str(exc).splitlines()[-1]}", flush=True)
        return {"nodes": cluster.nodes, "failed": True, "wall_s": wall, "reason": str(exc)[-1500:]}
    r = m.result
    rec = recorded_metrics(work / "db.sqlite", r["run_id"])
    cls = m.sampled.by_class(m.driver_pid)
    cls["driver"] = max(cls["driver"], r.get("driver_cpu_s", 0.0))
    out = {"nodes": cluster.nodes, "wall_s": m.wall_s, "audio_seconds": r["audio_seconds"],
           # every process of both clusters during this run (the other cluster idles)
           "cpu_s": {k: round(v, 2) for k, v in cls.items()}, "cpu_by_title": m.sampled.by_title(m.driver_pid),
           "processed": r["processed"], "errors": r["errors"],
           "audio_s_per_s": r["audio_seconds"] / m.wall_s, "recorded": rec}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("folder", nargs="?", type=Path, default=None,
                    help=f"audio folder (e.g. {SHARED_AUDIO}; default: a generated library)")
    ap.add_argument("--generated", type=int, metavar="N", help="generated songs (default 64; --quick 16)")
    ap.add_argument("--seconds", type=float, default=None, help="length of each generated song (default 15)")
    ap.add_argument("--quick", action="store_true", help="a small library (a smoke run: one block per node)")
    ap.add_argument("--repeat", type=int, default=None, help="runs per cluster, alternating (default 2; --quick 1)")
    ap.add_argument("--object-store-mb", type=int, default=400, help="object store of each node (MB)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds one job may take (default 300)")
    ap.add_argument("--pipeline", action="append", default=[], metavar="KEY=VALUE",
                    help="a pipeline setting for both runs (repeatable)")
    ap.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--json", type=Path, default=None, help="write the result here as JSON")
    args = ap.parse_args(argv)
    for k, v in QUIET.items():
        os.environ.setdefault(k, v)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="chromaray-scaleout-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.folder is None:
        n = args.generated or (16 if args.quick else 64)
        secs = args.seconds or (5.0 if args.quick else 15.0)
        files = audio_files(generated_library(work / f"gen-{n}-{secs:g}", n, secs))
    else:
        if not args.folder.is_dir():
            print(f"no folder {args.folder}", file=sys.stderr)
            return 2
        files = audio_files(args.folder)
        if args.quick:
            files = files[:3]
    if not files:
        print("no audio files found", file=sys.stderr)
        return 2
    args.repeat = max(1, args.repeat or (1 if args.quick else 2))
    become_subreaper()
    settings: dict[str, str] = {}
    for kv in args.pipeline:
        key, sep, value = kv.partition("=")
        if not sep:
            print(f"--pipeline wants KEY=VALUE, got {kv!r}", file=sys.stderr)
            return 2
        settings[key.strip()] = value.strip()
    store = args.object_store_mb * 1024 * 1024
    one_node, two_nodes = LocalCluster(store, settings), LocalCluster(store, settings)
    # Both clusters stay up and the runs alternate, 1-2-2-1 (--repeat 2): on a shared machine the
    # load drifts, and this order cancels a steady drift.
    order = [one_node, two_nodes] if args.repeat == 1 else \
        [c for i in range(args.repeat) for c in ((one_node, two_nodes) if i % 2 == 0 else (two_nodes, one_node))]
    # SIGTERM (a CI timeout, kill) still stops the nodes: finally blocks run on SystemExit.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    runs: list[dict[str, Any]] = []
    try:
        print(f"{len(files)} files; starting a 1-node and a 2-node cluster (1 CPU per node) ...", flush=True)
        one_node.start_head()
        two_nodes.start_head()
        two_nodes.add_node()
        for i, cluster in enumerate(order):
            print(f"run {i + 1}/{len(order)}: {cluster.nodes} node(s) ...", flush=True)
            runs.append(one_run(cluster, files, work / f"run-{i}", args.timeout))
    finally:
        kill_descendants()
        for c in (one_node, two_nodes):
            shutil.rmtree(c.temp_dir, ignore_errors=True)
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    ok = len(runs) == len(order) and not any(r.get("failed") for r in runs)

    def rate(nodes: int, key: str) -> float | None:
        xs = [r for r in runs if r["nodes"] == nodes and not r.get("failed")]
        if not xs or any(key not in r for r in xs):
            return None
        return sum(r[key] for r in xs) / len(xs)

    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "shared": True, "load_avg_1m_at_end": os.getloadavg()[0]},
        "files": len(files), "input_blocks_at_least": input_blocks(len(files), settings),
        "pipeline_settings": settings,
        "repeat": args.repeat, "runs": runs, "target": TARGET_RATIO,
    }
    r1, r2 = rate(1, "audio_s_per_s"), rate(2, "audio_s_per_s")
    result["ratio_end_to_end"] = r2 / r1 if ok and r1 and r2 else None
    result["target_met"] = bool(result["ratio_end_to_end"] and result["ratio_end_to_end"] >= TARGET_RATIO)
    result["command"] = " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])

    audio_min = next((x["audio_seconds"] for x in runs if not x.get("failed")), 0.0) / 60
    print(f"\n{len(files)} files, {audio_min:.1f} min of audio; {os.cpu_count()} cores, SHARED machine: use the "
          f"same-run ratio; >= {result['input_blocks_at_least']} input block(s); "
          f"settings {settings or 'shipping defaults'}; CPU: every process of both clusters during the run")
    print(f"{'run':>4}{'nodes':>6}{'wall s':>9}{'audio s/s':>11}{'actors':>8}"
          f"{'CPU s: workers':>16}{'Ray':>6}{'driver':>8}")
    for i, x in enumerate(runs):
        if x.get("failed"):
            print(f"{i + 1:>4}{x['nodes']:>6}{x['wall_s']:>9.1f}  FAILED (see the JSON)")
            continue
        print(f"{i + 1:>4}{x['nodes']:>6}{x['wall_s']:>9.1f}{x['audio_s_per_s']:>11.1f}"
              f"{x['recorded'].get('actors', 0):>8}"
              f"{x['cpu_s']['worker']:>16.1f}{x['cpu_s']['ray_system']:>6.1f}{x['cpu_s']['driver']:>8.1f}")
    if result["ratio_end_to_end"]:
        print(f"two nodes / one node (mean rates): {result['ratio_end_to_end']:.2f}x"
              f"  (target >= {TARGET_RATIO:g}x: {'met' if result['target_met'] else 'NOT met'})")
    else:
        print(f"no ratio: a run failed (target >= {TARGET_RATIO:g}x: NOT met)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str))
        print(f"wrote {args.json}")
    else:
        print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
