"""A throwaway `ray start --head` for tests that go through `ray job submit`.

`ray stop` would kill every Ray process on the machine, the test session's
own in-process Ray included, so the head gets a private temp dir and is
stopped by killing exactly the processes that carry it (and their children).
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline.runtime import QUIET_ENV
from tests.paths import REPO as ROOT

RAY_BIN = Path(sys.executable).with_name("ray")
# What a job ships and sees: this checkout without the local environment and outputs.
RUNTIME_ENV = {"excludes": [".venv", ".git", "results", "*.egg-info", "__pycache__", "benchmarks/out", ".mypy_cache",
                            ".ruff_cache"],
               "env_vars": dict(QUIET_ENV)}


class PrivateRayHead:
    """`ray start --head` on fixed test ports with a private temp dir; killed by pid."""

    def __init__(self, port: int, dashboard_port: int) -> None:
        self.port, self.dashboard_port = port, dashboard_port
        self.temp_dir = tempfile.mkdtemp(prefix="crh", dir="/tmp")  # short: unix socket paths
        self.address = f"http://127.0.0.1:{dashboard_port}"
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
                    "PATH": f"{RAY_BIN.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        self.env.pop("RAY_ADDRESS", None)

    def _free_port(self) -> int:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def start(self) -> None:
        cmd = [str(RAY_BIN), "start", "--head", f"--port={self.port}", f"--dashboard-port={self.dashboard_port}",
               "--dashboard-host=127.0.0.1", "--num-cpus=2", "--include-dashboard=true", "--disable-usage-stats",
               f"--temp-dir={self.temp_dir}", f"--ray-client-server-port={self._free_port()}",
               f"--dashboard-agent-listen-port={self._free_port()}", "--object-store-memory=300000000"]
        r = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=180)
        if r.returncode != 0:
            self.stop()
            raise RuntimeError(f"ray start failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
        from ray.job_submission import JobSubmissionClient

        deadline = time.monotonic() + 90
        while True:
            try:
                self.client = JobSubmissionClient(self.address)
                self.client.list_jobs()
                return
            except Exception:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(1)

    def processes(self) -> list:
        import psutil

        own = []
        for p in psutil.process_iter(["pid", "cmdline"]):
            try:
                if any(self.temp_dir in a for a in (p.info["cmdline"] or [])):
                    own.append(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        found = {p.pid: p for p in own}
        for p in own:
            try:
                for c in p.children(recursive=True):
                    found.setdefault(c.pid, c)
            except psutil.NoSuchProcess:
                continue
        return list(found.values())

    def stop(self) -> None:
        import psutil

        procs = self.processes()
        for p in procs:
            with_suppress(functools.partial(p.send_signal, signal.SIGTERM))
        _, alive = psutil.wait_procs(procs, timeout=8)
        for p in alive:
            with_suppress(p.kill)
        psutil.wait_procs(alive, timeout=5)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def ray(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(RAY_BIN), *args], env=self.env, capture_output=True, text=True, timeout=timeout)

    def submit(self, *entrypoint: str, wait: bool = True, extra: tuple[str, ...] = (),
               timeout: float = 600) -> subprocess.CompletedProcess:
        """`ray job submit --working-dir <repo> -- <entrypoint>`, as the README says. The job agent
        registers a little after the job API answers: retry while it says so."""
        cmd = ["job", "submit", "--address", self.address, "--working-dir", str(ROOT),
               "--runtime-env-json", json.dumps(RUNTIME_ENV), *extra, *([] if wait else ["--no-wait"]),
               "--", *entrypoint]
        for _ in range(30):
            r = self.ray(*cmd, timeout=timeout)
            if "No available agent" not in r.stderr:
                return r
            time.sleep(2)
        return r

    def __enter__(self) -> PrivateRayHead:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def with_suppress(fn) -> None:
    import psutil

    with contextlib.suppress(psutil.NoSuchProcess):
        fn()
