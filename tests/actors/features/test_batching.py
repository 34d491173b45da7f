"""Memory-aware batch planning, OOM splitting and time chunking (CPU).

Out-of-memory is injected by a subclass whose ``_compute`` raises MemoryError
above a fixed number of samples: a real OOM cannot be provoked safely on a
shared machine (and a GPU does not exist here). Everything else is real.
"""
from __future__ import annotations

import numpy as np
import pytest

from actors.config import BatchConfig, DSPConfig
from actors.features import FeatureExtractor
from actors.features.batching import (
    MEMINFO,
    PeakMemory,
    budget_bytes,
    cgroup_free_bytes,
    free_memory_bytes,
    is_oom,
    meminfo_available_bytes,
    plan_batches,
)
from pipeline.synth import signals as sg

SR = 22050
DSP = DSPConfig()


def test_cgroup_v2_and_v1(tmp_path):
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.max").write_text("1000000\n")
    (v2 / "memory.current").write_text("250000\n")
    assert cgroup_free_bytes(v2) == 750_000
    (v2 / "memory.max").write_text("max\n")
    assert cgroup_free_bytes(v2) is None
    v1 = tmp_path / "v1" / "memory"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1 "unlimited"
    (v1 / "memory.usage_in_bytes").write_text("5\n")
    assert cgroup_free_bytes(tmp_path / "v1") is None
    (v1 / "memory.limit_in_bytes").write_text("4096\n")
    assert cgroup_free_bytes(tmp_path / "v1") == 4091
    assert cgroup_free_bytes(tmp_path / "absent") is None


def test_free_memory_takes_the_tightest(tmp_path):
    (tmp_path / "memory.max").write_text("3000000\n")
    (tmp_path / "memory.current").write_text("1000000\n")
    info = tmp_path / "meminfo"
    info.write_text("MemTotal: 100 kB\nMemAvailable:     5000 kB\n")
    assert meminfo_available_bytes(info) == 5_120_000
    assert free_memory_bytes("cpu", cgroup_root=tmp_path, meminfo=info) == 2_000_000
    info.write_text("MemAvailable: 1 kB\n")
    assert free_memory_bytes("cpu", cgroup_root=tmp_path, meminfo=info) == 1024


def test_budget():
    assert budget_bytes(BatchConfig(memory_budget_bytes=12345), "cpu") == 12345
    # free memory moves between calls on a shared machine: bound by total RAM
    total = int(MEMINFO.read_text().split("MemTotal:")[1].split()[0]) * 1024
    got = budget_bytes(BatchConfig(memory_fraction=0.5), "cpu")
    assert 0 < got <= 0.5 * total
    assert budget_bytes(BatchConfig(memory_fraction=0.05), "cpu") < 0.05 * total


def test_plan_batches():
    durations = [10.0, 3.0, 60.0, 9.0, 2.0, 1.0]
    plans = plan_batches(durations, bytes_per_second=1000.0, budget=25_000, max_tracks=3,
                         min_chunk_seconds=5.0)
    seen = sorted(i for p in plans for i in p.indices)
    assert seen == list(range(len(durations)))
    assert plans[0].indices == (2,) and plans[0].chunk_seconds == pytest.approx(25.0)
    for p in plans[1:]:
        assert p.chunk_seconds is None
        assert len(p.indices) <= 3
        assert len(p.indices) * max(durations[i] for i in p.indices) * 1000 <= 25_000
    assert plans[1].indices == (0, 3)  # longest first; 3 x 10 s would exceed
    assert plans[2].indices == (1, 4, 5)
    small = plan_batches([100.0], bytes_per_second=1000.0, budget=1000, max_tracks=4,
                         min_chunk_seconds=5.0)
    assert small[0].chunk_seconds == 5.0  # never below min_chunk_seconds


def test_is_oom_and_peak_memory():
    assert is_oom(MemoryError())
    assert not is_oom(ValueError("x"))

    class OutOfMemoryError(Exception):  # CuPy's name (cupy is absent here)
        pass

    assert is_oom(OutOfMemoryError())
    with PeakMemory("cpu") as pm:
        a = np.ones(5_000_000)  # 40 MB
        del a
    assert 40_000_000 <= pm.peak < 60_000_000


_REF: list[FeatureExtractor] = []


def _reference(ys):
    if not _REF:
        _REF.append(FeatureExtractor(DSP, BatchConfig(device="cpu")))
    return _REF[0](ys)


def _same(a, b):
    np.testing.assert_allclose(a.chroma, b.chroma, rtol=0, atol=1e-5)
    np.testing.assert_allclose(a.onset, b.onset, rtol=0, atol=1e-5)
    assert a.tempo_bpm == b.tempo_bpm
    assert a.harmonic_ratio == pytest.approx(b.harmonic_ratio, rel=1e-6)


def test_forced_small_budget_plans_small_batches_and_chunks():
    ys = [sg.music(seconds=1.5, seed=i) for i in range(6)] + [sg.music(seconds=12.0, seed=9)]
    ex = FeatureExtractor(DSP, BatchConfig(device="cpu", memory_budget_bytes=8_000_000,
                                           min_chunk_seconds=1.0))
    feats = ex(ys)
    bps = ex.bytes_per_second
    assert bps is not None and 1e5 < bps < 1e8  # measured, a plausible size
    log = ex.batch_log
    assert sum(r["n_tracks"] for r in log) == len(ys)
    chunked = [r for r in log if r["time_chunked"]]
    assert len(chunked) == 1 and chunked[0]["audio_seconds"] == pytest.approx(12.0)
    whole = [r for r in log if not r["time_chunked"]]
    assert len(whole) >= 2  # 6 x 1.5 s do not fit in one batch under this budget
    for r in log:
        assert r["budget_bytes"] == 8_000_000 and r["device"] == "cpu"
        assert 0 < r["peak_bytes"] <= 8_000_000 * 1.1
    for a, b in zip(feats, _reference(ys)):
        _same(a, b)


class FlakyExtractor(FeatureExtractor):
    """Raises MemoryError when one computation holds more than ``limit`` samples."""

    def __init__(self, *a, limit: int, **kw):
        super().__init__(*a, **kw)
        self.limit = limit
        self.failures = 0

    def _compute(self, Yc, **kw):
        if Yc.size > self.limit:
            self.failures += 1
            raise MemoryError(f"injected: {Yc.size} samples > {self.limit}")
        return super()._compute(Yc, **kw)


def test_injected_oom_splits_then_chunks():
    ys = [sg.music(seconds=2.5, seed=i) for i in range(4)] + [sg.music(seconds=15.0, seed=7)]
    # a fixed budget keeps the plan deterministic (free memory moves on a shared machine)
    ex = FlakyExtractor(DSP, BatchConfig(device="cpu", memory_budget_bytes=10**9),
                        limit=int(6.5 * SR))
    feats = ex(ys)
    assert ex.failures > 0
    log = ex.batch_log
    assert sum(r["n_tracks"] for r in log) == len(ys)
    # the 15 s track: alone it fails, so it is time-chunked (7.5 s fails, 3.75 s fits)
    long = [r for r in log if r["time_chunked"]]
    assert len(long) == 1 and long[0]["oom_splits"] >= 2
    # the big first batch (all five) fails and is halved until the pieces fit:
    # at most 2 x 2.5 s fit under the injected limit
    short = [r for r in log if not r["time_chunked"]]
    assert sum(r["n_tracks"] for r in short) == 4
    assert all(1 <= r["n_tracks"] <= 2 and r["oom_splits"] >= 1 for r in short)
    for a, b in zip(feats, _reference(ys)):
        _same(a, b)
    # the estimate learnt from the failures: the next call plans batches that fit
    failures, n_log = ex.failures, len(ex.batch_log)
    ex(ys[:4])
    assert ex.failures == failures
    assert [r["n_tracks"] for r in ex.batch_log[n_log:]] == [2, 2]


def test_oom_that_never_fits_raises():
    ex = FlakyExtractor(DSP, BatchConfig(device="cpu", min_chunk_seconds=5.0), limit=2 * SR)
    ex.bytes_per_second = 1.0  # skip the probe (it would fail first: that path is tested too)
    with pytest.raises(MemoryError):
        ex([sg.music(seconds=12.0)])
    ex2 = FlakyExtractor(DSP, BatchConfig(device="cpu"), limit=SR // 4)
    with pytest.raises(MemoryError):
        ex2([sg.music(seconds=3.0)])


def test_other_errors_are_not_swallowed():
    class Broken(FeatureExtractor):
        def _compute(self, Yc, **kw):
            raise ValueError("boom")

    with pytest.raises(ValueError):
        Broken(DSP, BatchConfig(device="cpu"))([sg.noise(seconds=1.0)])
