"""Fault: the job's output read as a log (#14 defect 8). Real CLI processes, real Ray.

- stderr not a terminal (``ray job logs -f``, CI, ``| tee``): plain progress lines, and the last
  one at the end (the 30 s cadence itself is checked in tests/pipeline/ingest/test_progress.py);
- Ray's ``(raylet)`` messages (a worker died) stay off stdout;
- a second Ctrl-C ends the job with one line, no traceback; the re-run completes every track once.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipeline.synth import good_library
from tests.faults import check_consistent
from tests.paths import REPO

pytestmark = pytest.mark.ray


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}


def _fingerprint_cmd(lib: Path, tmp: Path) -> list[str]:
    return [sys.executable, "-m", "jobs.fingerprint", str(lib), "--db", str(tmp / "c.db"), "--out", str(tmp / "out"),
            "--num-cpus", "2"]


def test_progress_lines_when_stderr_is_a_pipe(tmp_path):
    lib = tmp_path / "lib"
    good_library(lib, n=3, seconds=2.0)
    r = subprocess.run(_fingerprint_cmd(lib, tmp_path), cwd=REPO, env=_env(), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    progress = [ln for ln in r.stderr.splitlines() if ln.startswith("chromaray progress: ")]
    # Before: tqdm disables itself without a terminal, so nothing came between start and summary.
    assert progress, r.stderr[-3000:]
    assert progress[-1].startswith("chromaray progress: 3/3 files, 0 errors, 0.002 audio h, ")
    assert "audio h/min" in progress[-1] and "finished in" in progress[-1]
    assert "\x1b" not in r.stderr and "\r" not in r.stderr  # no bar redraws in a log
    assert r.stdout.splitlines()[-1].startswith("done: 3 processed"), r.stdout
    assert "chromaray progress" not in r.stdout


def test_ray_messages_about_dead_workers_stay_off_stdout(tmp_path):
    script = textwrap.dedent("""
        import os, sys, time
        import ray
        from pipeline.runtime import init_ray

        init_ray(num_cpus=1)

        @ray.remote(max_retries=0)
        def die():
            os._exit(1)

        try:
            ray.get(die.remote())
        except Exception as exc:
            print("task failed:", type(exc).__name__, file=sys.stderr)
        time.sleep(4)  # Ray's error listener prints asynchronously
        print("RESULT 42")
    """)
    r = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=_env(), capture_output=True, text=True,
                       timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    # Before: "\x1b[33m(raylet)\x1b[0m A worker died or was killed ..." on stdout, beside the result.
    assert r.stdout.splitlines() == ["RESULT 42"], r.stdout
    assert "(raylet) A worker died" in r.stderr, r.stderr[-3000:]
    assert "\x1b[" not in r.stderr


def test_ctrl_c_during_the_exit_hooks_is_one_line_not_a_traceback(tmp_path):
    """The window the issue hit: the first Ctrl-C stopped the job, and a second one arrives while
    the interpreter runs its exit hooks (ray.init registers ray.shutdown there, which takes seconds
    on a busy machine; a 3 s hook registered before the job's handlers stands in for it, so the
    window is certain). No Ray: real signals, real atexit."""
    script = textwrap.dedent("""
        import atexit, os, signal, sys, time
        atexit.register(time.sleep, 3.0)  # registered first, like ray.init's shutdown hook
        from pipeline.runtime import stop_on_signals

        stop_on_signals()
        try:
            os.kill(os.getpid(), signal.SIGINT)  # the first Ctrl-C
            time.sleep(5)
        except KeyboardInterrupt:
            print("stopped", flush=True)
        sys.stderr.write("exiting\\n")
        sys.stderr.flush()
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    assert proc.stderr.readline() == "exiting\n"
    time.sleep(0.5)  # inside the 3 s exit hook
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    # Before: "Exception ignored in atexit callback ... Traceback ... KeyboardInterrupt".
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.splitlines() == ["chromaray: interrupted again: exiting now (committed results are kept; "
                                "run the same command to resume)"], err
    assert proc.returncode == 130 and out == "stopped\n"


@pytest.mark.slow
def test_second_ctrl_c_is_one_line_and_the_rerun_completes(tmp_path):
    lib = tmp_path / "lib"
    files = good_library(lib, n=8, seconds=6.0)
    proc = subprocess.Popen([*_fingerprint_cmd(lib, tmp_path), "--no-progress"], cwd=REPO, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not (tmp_path / "out" / "ray-driver.log").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        time.sleep(3.0)  # Ray is up and decoding
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)  # the job is stopping: Ray's shutdown takes seconds
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    # 130: our handler ended it (with its line); -SIGINT: it came during the interpreter's last
    # teardown, where Python restores the default action (the shell shows 130 too). Never a traceback.
    assert proc.returncode in (130, -signal.SIGINT), (proc.returncode, out[-2000:], err[-3000:])
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert err.splitlines()[0] == "chromaray fingerprint: interrupted", err[-3000:]
    assert len(err.splitlines()) <= 2, err[-3000:]
    # What was committed is consistent: the re-run completes every track exactly once.
    r = subprocess.run([*_fingerprint_cmd(lib, tmp_path), "--no-progress"], cwd=REPO, env=_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    done = check_consistent(tmp_path / "c.db", tmp_path / "out", files)
    assert (done.tracks, done.errors) == (8, 0)
