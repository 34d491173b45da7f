"""The one place every job starts or joins Ray, and adapts stages to Ray Data.

- local (no ``--address``, no ``RAY_ADDRESS``): Ray in-process on this
  machine, offline, no token prompt, no usage-stats prompt;
- ``--address``/``RAY_ADDRESS``: join that cluster (``ray job submit`` sets it);
- quiet by default: Ray's own logs and per-operator progress bars only with -v.

:func:`init_ray` starts or joins and leaves Ray up (fingerprint's driver keeps
it for the whole run); :func:`ray_session` does the same for a ``with`` block and
shuts down on exit whatever that call started (train, doctor), but never a Ray
that was already running in this process.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from actors.errors import ChromarayError
from actors.stages import Resources, Stage

__all__ = ["QUIET_ENV", "STOP_REQUESTED", "RayInfo", "apply_stage", "init_ray", "native_stderr_to",
           "prepare_environment", "ray_session", "stop_on_signals"]

QUIET_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "1",
             "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


#: Set when the job is asked to stop (Ctrl-C, or SIGTERM from `ray job stop`).
STOP_REQUESTED = threading.Event()


def stop_on_signals() -> None:
    """Turn SIGTERM (what `ray job stop` sends) and SIGINT into a recorded stop.

    ``ray.init`` installs its own SIGTERM handler (exit at once), so this is
    called again after it.
    """
    def stop(signum: int, frame: object) -> None:
        STOP_REQUESTED.set()
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)


@dataclass(frozen=True)
class RayInfo:
    address: str | None  # None when local
    dashboard_url: str | None
    cpus: float
    gpus: float


def prepare_environment() -> None:
    """Offline, promptless defaults for Ray and Hugging Face (what is already set wins)."""
    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)


def init_ray(address: str | None = None, *, verbose: bool = False, num_cpus: int | None = None,
             object_store_memory: int | None = None) -> RayInfo:
    """Start a local Ray (``num_cpus`` and ``object_store_memory`` bytes cap it) or join
    ``address``/``$RAY_ADDRESS``; a Ray already running in this process is reused.
    Unreachable cluster: one ChromarayError."""
    prepare_environment()
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or None
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"log_to_driver": verbose,
                                  "logging_level": logging.INFO if verbose else logging.ERROR}
        try:
            if address:
                ctx = ray.init(address=address, **kwargs)
            else:
                ctx = ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                               object_store_memory=object_store_memory, **kwargs)
        except ConnectionError as exc:
            raise ChromarayError(f"cannot connect to the Ray cluster at {address}: {exc}") from exc
        dashboard = getattr(ctx, "dashboard_url", None) or None
    else:
        dashboard = None
    _quiet_ray_data(verbose)
    stop_on_signals()
    res = ray.cluster_resources()
    url = f"http://{dashboard}" if dashboard and not str(dashboard).startswith("http") else dashboard
    return RayInfo(address, url, float(res.get("CPU", 0)), float(res.get("GPU", 0)))


@contextmanager
def ray_session(address: str | None = None, *, verbose: bool = False,
                num_cpus: int | None = None) -> Iterator[RayInfo]:
    """:func:`init_ray` for a ``with`` block; on exit (errors included) shuts down the
    local Ray or the cluster connection this call made, and leaves alone a Ray
    that was running before it."""
    import ray

    ours = not ray.is_initialized()
    try:
        yield init_ray(address, verbose=verbose, num_cpus=num_cpus)
    finally:
        if ours and ray.is_initialized():
            ray.shutdown()


def _quiet_ray_data(verbose: bool) -> None:
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = verbose
    ctx.enable_operator_progress_bars = verbose
    if hasattr(ctx, "print_on_execution_start"):
        ctx.print_on_execution_start = verbose
    level = logging.INFO if verbose else logging.ERROR
    for name in ("ray", "ray.data", "ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(level)


@contextmanager
def native_stderr_to(log_path: str | os.PathLike | None) -> Iterator[None]:
    """Send what Ray's C++ core writes to file descriptor 2 into ``log_path``
    while Python's own stderr (progress bar, errors) still reaches the terminal.

    Ray prints advisory lines from C++ straight to fd 2 (e.g. ray-project/ray#57733),
    which no Python logging setting silences. ``None`` leaves stderr alone (-v).
    """
    if log_path is None:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    python_stderr = sys.stderr
    sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, encoding=python_stderr.encoding or "utf-8",
                           errors="replace")
    os.dup2(log, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        sys.stderr.close()
        sys.stderr = python_stderr
        os.close(saved)
        os.close(log)


def apply_stage(ds: Any, stage_cls: type[Stage], kwargs: dict[str, Any], *, resources: Resources, batch_size: int,
                pool_size: int = 1) -> Any:
    """One adapter for every stage: actor pool when stateful, tasks otherwise."""
    import ray.data

    common: dict[str, Any] = {"batch_size": batch_size, "batch_format": "pyarrow", "num_cpus": resources.num_cpus}
    if resources.num_gpus:
        common["num_gpus"] = resources.num_gpus
    if resources.memory:
        common["memory"] = resources.memory
    if stage_cls.stateful:
        return ds.map_batches(stage_cls, fn_constructor_kwargs=kwargs,
                              compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, pool_size)), **common)
    return ds.map_batches(_run_stateless, fn_kwargs={"stage": stage_cls(**kwargs)}, **common)


def _run_stateless(batch: pa.Table, stage: Stage) -> Iterator[pa.Table]:
    out = stage(batch)
    if isinstance(out, pa.Table):
        yield out
    else:
        yield from out
