"""pipeline.train.doctor.report against a running Ray (the CLI around it: tests/jobs/test_doctor.py)."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.ray


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
