"""Shared fixtures: array modules, one local Ray session, the shared real-music folder."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from pipeline.runtime import QUIET_ENV
from tests.paths import SHARED_DATA

# Offline, quiet, no token prompt: the settings the CLI applies for local runs (Ray's log
# deduplication off, so a failing test shows every worker's lines).
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
for _key, _value in QUIET_ENV.items():
    os.environ.setdefault(_key, _value)
# Ray Train's controller looks at its workers every 2 s by default, so each training run waits up
# to that long to see its workers finish, report a checkpoint or die; the test runs are seconds
# long. Ray Train hands this process's RAY_TRAIN_* variables to its controller actor.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")



#: Ray's metrics export period (ms), a system setting read from the environment at start.
METRICS_INTERVAL_ENV = "RAY_metrics_report_interval_ms"

#: Fixtures that start Ray: a test using one is marked ``ray`` automatically.
RAY_FIXTURES = frozenset({"ray_local"})


def pytest_collection_modifyitems(config, items):
    from actors.dsp.xp import gpu_available

    for item in items:
        if RAY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.ray)
    if gpu_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU with CuPy")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def _ray_running() -> bool:
    import sys

    ray = sys.modules.get("ray")
    return bool(ray is not None and ray.is_initialized())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    import sys

    item.stash[_RAY_BEFORE] = _ray_running()
    ray = sys.modules.get("ray")
    if ray is not None and "ray" not in item.keywords:
        # Ray is already imported: an unmarked test calling ray.init fails at once (one that
        # imports Ray itself is caught at teardown if it leaves Ray running).
        real_init = ray.init

        def refuse(*args, **kwargs):
            pytest.fail(f"{item.nodeid} starts Ray but is not marked @pytest.mark.ray", pytrace=False)

        ray.init = refuse
        item.stash[_RAY_INIT] = (ray, real_init)
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """Keep ``-m "not ray"`` honest: a test that starts Ray in this process must say so."""
    yield
    saved = item.stash.get(_RAY_INIT, None)
    if saved is not None:
        saved[0].init = saved[1]
    if "ray" not in item.keywords and not item.stash.get(_RAY_BEFORE, True) and _ray_running():
        pytest.fail(f"{item.nodeid} started Ray but is not marked @pytest.mark.ray", pytrace=False)


_RAY_BEFORE = pytest.StashKey[bool]()
_RAY_INIT = pytest.StashKey[tuple]()


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
    """One small in-process Ray runtime for the whole session, started as every job starts it."""
    import ray

    from pipeline.runtime import init_ray

    # Metrics are exported every second instead of Ray's 10 s (the Prometheus test waits for a
    # cycle); only this runtime's processes read it, not the jobs the tests start in subprocesses.
    before = os.environ.get(METRICS_INTERVAL_ENV)
    os.environ[METRICS_INTERVAL_ENV] = "1000"
    try:
        init_ray(num_cpus=2, object_store_memory=1_000_000_000)
    finally:
        if before is None:
            os.environ.pop(METRICS_INTERVAL_ENV, None)
        else:
            os.environ[METRICS_INTERVAL_ENV] = before
    yield ray
    ray.shutdown()
