"""pipeline.runtime.ray_session, as train and doctor use it: it stops the Ray it started
(also on errors) and never one that was already running in the process."""
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


def test_doctor_joins_a_running_ray_and_leaves_it_running(ray_local):
    """doctor --address reads the cluster's resources; a Ray it did not start stays up."""
    from pipeline.train.doctor import report

    info = report("laptop", address="auto")
    assert ray_local.is_initialized()
    assert info["cluster_resources"]["CPU"] == 2.0
    assert info["profile"]["name"] == "laptop" and info["profile"]["source"] == "cli"
    assert info["profile_fits_cluster"] is True  # 2 workers x 1 CPU
    ws = report("workstation", address="auto")
    assert ray_local.is_initialized()
    assert "needs 1 GPUs" in ws["profile_fits_cluster"]
