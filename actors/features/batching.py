"""Memory-aware batch planning for the feature actors.

How many tracks go in one padded batch comes from two measured numbers:

* **bytes per padded audio-second** of the feature chain, measured (peak
  allocation, :class:`PeakMemory`) on a probe batch and then on every batch
  (the estimate only grows: planning stays conservative);
* **the memory budget**: ``BatchConfig.memory_budget_bytes`` if set, else
  ``memory_fraction`` x the free memory of the device: CuPy's free device
  memory plus its pool's cached blocks on GPU; on CPU the tightest of the
  cgroup limit (v2 ``memory.max`` - ``memory.current``, v1
  ``memory.limit_in_bytes`` - ``memory.usage_in_bytes``) and the host's
  ``MemAvailable``.

Tracks are sorted by length so padding wastes little; a track that alone
exceeds the budget is processed in time chunks (see actors.features).
"""
from __future__ import annotations

import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actors.config import BatchConfig
from actors.dsp.xp import cupy_or_none

__all__ = ["CGROUP_ROOT", "MEMINFO", "PeakMemory", "PlannedBatch", "budget_bytes", "cgroup_free_bytes",
           "free_memory_bytes", "is_oom", "meminfo_available_bytes", "plan_batches"]

CGROUP_ROOT = Path("/sys/fs/cgroup")
MEMINFO = Path("/proc/meminfo")


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text or text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def cgroup_free_bytes(root: Path = CGROUP_ROOT) -> int | None:
    """Bytes left under this process's cgroup memory limit, or None if unlimited/unknown.

    Looks at cgroup v2 (``memory.max``/``memory.current`` in ``root``) and v1
    (``memory/memory.limit_in_bytes``/``memory.usage_in_bytes``). v1 reports
    "no limit" as a huge number (~2^63), treated as unlimited.
    """
    candidates = [
        (root / "memory.max", root / "memory.current"),
        (root / "memory" / "memory.limit_in_bytes", root / "memory" / "memory.usage_in_bytes"),
    ]
    for limit_path, usage_path in candidates:
        limit = _read_int(limit_path)
        if limit is None or limit >= 1 << 60:
            continue
        usage = _read_int(usage_path) or 0
        return max(0, limit - usage)
    return None


def meminfo_available_bytes(path: Path = MEMINFO) -> int | None:
    """``MemAvailable`` from /proc/meminfo in bytes, or None."""
    try:
        for line in path.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def free_memory_bytes(device: str, *, cgroup_root: Path = CGROUP_ROOT,
                      meminfo: Path = MEMINFO) -> int:
    """Free memory the feature chain may use on ``device`` ('cpu' or 'gpu'), bytes."""
    if device == "gpu":
        cp = cupy_or_none()
        if cp is None:
            raise RuntimeError("GPU requested but CuPy has no usable device")
        free, _total = cp.cuda.runtime.memGetInfo()
        return int(free) + int(cp.get_default_memory_pool().free_bytes())
    values = [v for v in (cgroup_free_bytes(cgroup_root), meminfo_available_bytes(meminfo))
              if v is not None]
    if not values:
        return 2 << 30  # nothing readable: assume a modest 2 GiB
    return min(values)


def budget_bytes(cfg: BatchConfig, device: str) -> int:
    """The byte budget for one batch: the forced budget, or fraction x free memory."""
    if cfg.memory_budget_bytes > 0:
        return int(cfg.memory_budget_bytes)
    return int(cfg.memory_fraction * free_memory_bytes(device))


def is_oom(exc: BaseException) -> bool:
    """True for host MemoryError and CuPy's out-of-memory errors (incl. cuFFT's)."""
    if isinstance(exc, MemoryError):
        return True
    name = type(exc).__name__
    return name == "OutOfMemoryError" or "CUFFT_ALLOC_FAILED" in str(exc)


class PeakMemory:
    """Context manager measuring peak bytes allocated inside it (``.peak``).

    CPU: ``tracemalloc`` (NumPy registers its data buffers with it, and
    bottleneck/scipy allocate through NumPy). It is started if not already
    running and stopped again afterwards. GPU: a CuPy memory hook summing pool
    allocations minus frees (not exercised here: no GPU on the dev machine).
    """

    def __init__(self, device: str):
        self.device = device
        self.peak = 0
        self._started = False
        self._hook: Any = None

    def __enter__(self) -> PeakMemory:
        if self.device == "gpu":
            self._hook = _cupy_peak_hook()
            self._hook.__enter__()
        else:
            if not tracemalloc.is_tracing():
                tracemalloc.start()
                self._started = True
            self._base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device == "gpu":
            self._hook.__exit__(*exc)
            self.peak = int(self._hook.peak)
        else:
            self.peak = max(0, tracemalloc.get_traced_memory()[1] - self._base)
            if self._started:
                tracemalloc.stop()


def _cupy_peak_hook() -> Any:
    cp = cupy_or_none()
    if cp is None:
        raise RuntimeError("GPU requested but CuPy has no usable device")

    hook_base: Any = cp.cuda.MemoryHook  # typed Any: whether cupy's stubs resolve varies by machine

    class _Hook(hook_base):
        name = "chromaray_peak"

        def __init__(self) -> None:
            self.current = 0
            self.peak = 0

        def malloc_postprocess(self, **kw: Any) -> None:
            self.current += int(kw.get("mem_size", 0))
            self.peak = max(self.peak, self.current)

        def free_postprocess(self, **kw: Any) -> None:
            self.current -= int(kw.get("mem_size", 0))

    return _Hook()


@dataclass(frozen=True)
class PlannedBatch:
    """Track indices processed together; ``chunk_seconds`` set for a lone
    track processed in time chunks of that length."""

    indices: tuple[int, ...]
    padded_seconds: float
    chunk_seconds: float | None = None


def plan_batches(
    durations_s: list[float],
    *,
    bytes_per_second: float,
    budget: int,
    max_tracks: int,
    min_chunk_seconds: float,
) -> list[PlannedBatch]:
    """Group tracks into padded batches whose estimated peak fits ``budget``.

    Estimated peak = n_tracks x longest duration x bytes_per_second. Longest
    tracks first; each batch takes the next tracks (shorter or equal) while
    the estimate fits and n <= max_tracks. A track alone over budget becomes a
    chunked batch with chunk length budget / bytes_per_second (at least
    ``min_chunk_seconds``).
    """
    order = sorted(range(len(durations_s)), key=lambda i: -durations_s[i])
    bps = max(float(bytes_per_second), 1.0)
    plans: list[PlannedBatch] = []
    k = 0
    while k < len(order):
        head = order[k]
        longest = max(durations_s[head], 1e-3)
        if longest * bps > budget:
            chunk = max(min_chunk_seconds, budget / bps)
            plans.append(PlannedBatch((head,), longest, chunk_seconds=chunk))
            k += 1
            continue
        n = max(1, min(max_tracks, int(budget // (longest * bps)), len(order) - k))
        plans.append(PlannedBatch(tuple(order[k : k + n]), n * longest))
        k += n
    return plans
