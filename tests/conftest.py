"""Shared fixtures: array modules, one local Ray session, the shared real-music folder."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.paths import SHARED_DATA

# Offline, quiet, no token prompt: the same settings the CLI applies for local runs.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")



def pytest_collection_modifyitems(config, items):
    from actors.dsp.xp import gpu_available

    if gpu_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU with CuPy")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=["numpy", pytest.param("cupy", marks=pytest.mark.gpu)])
def xp(request):
    """Run a kernel test on NumPy always and on CuPy where a GPU is present."""
    if request.param == "numpy":
        return np
    import cupy

    return cupy


@pytest.fixture(scope="session")
def shared_audio() -> list[Path]:
    files = sorted((SHARED_DATA / "audio").glob("*.ogg"))
    if not files:
        pytest.skip("../shared/data/audio is absent")
    return files


@pytest.fixture(scope="session")
def shared_midi() -> list[Path]:
    files = sorted((SHARED_DATA / "midi").glob("*.mid"))
    if not files:
        pytest.skip("../shared/data/midi is absent")
    return files


@pytest.fixture(scope="session")
def ray_local():
    """One small in-process Ray runtime for the whole session."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, object_store_memory=1_000_000_000)
    yield ray
    ray.shutdown()
