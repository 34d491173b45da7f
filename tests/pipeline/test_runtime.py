"""pipeline.runtime.ray_session, as train and doctor use it: it stops the Ray it started
(also on errors) and never one that was already running in the process (doctor's side:
tests/pipeline/train/test_doctor.py)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.paths import REPO

pytestmark = pytest.mark.ray


def test_session_stops_the_local_ray_it_started_even_on_error():
    script = textwrap.dedent("""
        import ray
        from pipeline.runtime import ray_session

        try:
            with ray_session(num_cpus=1) as info:
                print("inside", ray.is_initialized(), info.address, info.cpus)
                raise RuntimeError("boom")
        except RuntimeError:
            pass
        print("after", ray.is_initialized())
    """)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    r = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    assert "inside True None 1.0" in lines and "after False" in lines, r.stdout

