"""A throwaway `ray start --head` for tests that go through `ray job submit`.

`ray stop` would kill every Ray process on the machine, the test session's
own in-process Ray included, so the head gets a private temp dir and is
stopped by killing exactly the processes that mention it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))


def ray_env() -> dict[str, str]:
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    return env


@contextmanager
def ray_head(port: int, dashboard_port: int, num_cpus: int = 2) -> Iterator[str]:
    """Start a head; yields the job-submission address (http://127.0.0.1:<dashboard_port>)."""
    import psutil

    temp = tempfile.mkdtemp(prefix="crh-", dir="/tmp")  # short: Ray's socket paths are length-limited
    cmd = [RAY, "start", "--head", f"--port={port}", f"--dashboard-port={dashboard_port}",
           "--dashboard-host=127.0.0.1", f"--num-cpus={num_cpus}", "--include-dashboard=true",
           f"--temp-dir={temp}", "--disable-usage-stats"]
    subprocess.run(cmd, check=True, env=ray_env(), capture_output=True, timeout=180)
    try:
        yield f"http://127.0.0.1:{dashboard_port}"
    finally:
        for _ in range(3):
            victims = []
            for p in psutil.process_iter(["pid", "cmdline"]):
                try:
                    if any(temp in arg for arg in p.info["cmdline"] or []):
                        victims.append(p)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            for p in victims:
                try:
                    p.kill()
                except psutil.NoSuchProcess:
                    pass
            psutil.wait_procs(victims, timeout=10)
            if not victims:
                break
            time.sleep(1)
        shutil.rmtree(temp, ignore_errors=True)


def submit(address: str, *entrypoint: str, wait: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """`ray job submit --working-dir <repo> -- <entrypoint>` exactly as the README says."""
    cmd = [RAY, "job", "submit", f"--address={address}", f"--working-dir={ROOT}",
           '--runtime-env-json={"excludes": [".venv", ".git", "results", "benchmarks/out"]}']
    if not wait:
        cmd.append("--no-wait")
    cmd += ["--", *entrypoint]
    return subprocess.run(cmd, env=ray_env(), capture_output=True, text=True, timeout=timeout, cwd=ROOT)
