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

import atexit
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from actors.errors import ChromarayError
from actors.stages import Resources, Stage

__all__ = ["CONNECT_TIMEOUT_S", "QUIET_ENV", "STOP_REQUESTED", "RayInfo", "apply_stage", "check_reachable",
           "here_if_it_has_cpus", "init_ray", "native_stderr_to", "prepare_environment", "ray_session",
           "stop_on_signals"]

QUIET_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "1",
             "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


#: How long joining a cluster may take before it is reported unreachable. Ray's own retries take
#: 20 s to minutes (GCS reconnects, NUM_REDIS_GET_RETRIES); a user waits for one line instead.
CONNECT_TIMEOUT_S = 6.0

#: Set when the job is asked to stop (Ctrl-C, or SIGTERM from `ray job stop`).
STOP_REQUESTED = threading.Event()
_EXITING = threading.Event()  # the interpreter is running its exit hooks


def stop_on_signals() -> None:
    """Turn SIGTERM (what `ray job stop` sends) and SIGINT into a recorded stop.

    ``ray.init`` installs its own SIGTERM handler (exit at once), so this is
    called again after it.
    """
    def stop(signum: int, frame: object) -> None:
        if STOP_REQUESTED.is_set() or _EXITING.is_set():
            # A second Ctrl-C (or one during Ray's shutdown at exit): leave now, in one line. What
            # was committed is kept; an uncommitted transaction or Parquet part is rolled back or
            # removed by the next run, exactly as after a kill.
            try:
                sys.stderr.write("chromaray: interrupted again: exiting now (committed results are kept; "
                                 "run the same command to resume)\n")
                sys.stderr.flush()
            finally:
                os._exit(130)
        STOP_REQUESTED.set()
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        # (Re-)registered last, after ray.init's own atexit shutdown, so it runs first: an interrupt
        # during that shutdown exits at once instead of printing an atexit KeyboardInterrupt traceback.
        atexit.unregister(_EXITING.set)
        atexit.register(_EXITING.set)


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


def _host_port(address: str) -> tuple[str, int] | None:
    """``host:port`` of a cluster address (``ray://``/``http://`` prefixes allowed); None when it names
    no socket (``auto``, ``local``), which Ray resolves itself."""
    rest = address.split("://", 1)[1] if "://" in address else address
    rest = rest.split("/", 1)[0]
    if rest in ("auto", "local") or ":" not in rest:
        return None
    host, _, port = rest.rpartition(":")
    host = host.strip("[]")  # IPv6 literal
    if not host or not port.isdigit():
        return None
    return host, int(port)


def check_reachable(address: str, *, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """One ChromarayError within ``timeout_s`` when nothing answers as a Ray cluster at ``address``.

    Two steps, both bounded: a TCP connect (refused, no route, no DNS name: at once), then, for a
    GCS address, one GCS handshake (its cluster id) in a child process, because a port that
    accepts connections may still not be Ray (a proxy, another server) and Ray's own client
    retries for minutes. A ``ray://`` (Ray Client) or ``http://`` address is only TCP-checked.
    """
    hp = _host_port(address)
    if hp is None:
        return
    start = time.monotonic()
    try:
        with socket.create_connection(hp, timeout=min(3.0, timeout_s)):
            pass
    except socket.gaierror as exc:
        raise ChromarayError(f"cannot reach the Ray cluster at {address}: unknown host {hp[0]} ({exc.strerror})") \
            from None
    except TimeoutError:
        raise ChromarayError(f"cannot reach the Ray cluster at {address}: no answer within "
                             f"{min(3.0, timeout_s):g} s") from None
    except OSError as exc:
        raise ChromarayError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None
    if "://" in address:
        return
    left = max(1.0, timeout_s - (time.monotonic() - start))
    # In a child process: Ray's C++ client logs its retries straight to file descriptor 2 and
    # cannot be interrupted, while a child is silenced and killed at the deadline.
    code = ("import sys\nfrom ray._raylet import GcsClient\n"
            "GcsClient(address=sys.argv[1]).cluster_id\n")
    try:
        r = subprocess.run([sys.executable, "-c", code, f"{hp[0]}:{hp[1]}"], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=left, check=False)
    except subprocess.TimeoutExpired:
        raise ChromarayError(f"cannot reach the Ray cluster at {address}: the port accepts connections but no "
                             f"Ray GCS answered within {timeout_s:g} s") from None
    if r.returncode != 0:
        last = next((ln for ln in reversed(r.stderr.decode(errors="replace").splitlines()) if ln.strip()), "")
        raise ChromarayError(f"cannot reach the Ray cluster at {address}: the port accepts connections but does not "
                             f"answer as a Ray GCS ({last.strip()[:200]})")


def init_ray(address: str | None = None, *, verbose: bool = False, num_cpus: int | None = None,
             object_store_memory: int | None = None) -> RayInfo:
    """Start a local Ray (``num_cpus`` and ``object_store_memory`` bytes cap it) or join
    ``address``/``$RAY_ADDRESS``; a Ray already running in this process is reused.
    Unreachable cluster: one ChromarayError."""
    prepare_environment()
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or None
    if not ray.is_initialized():
        if address:
            check_reachable(address)
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
        except Exception as exc:
            if address:
                raise
            # e.g. "The current node timed out during startup" (the raylet did not register within
            # Ray's 30 s, as on an overloaded machine): the machine's state, not a bug to trace.
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ChromarayError(f"could not start Ray on this machine: {first}") from exc
        dashboard = getattr(ctx, "dashboard_url", None) or None
    else:
        dashboard = None
    _quiet_ray_data(verbose)
    if not verbose:
        _ray_messages_off_stdout()
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


def here_if_it_has_cpus() -> Any:
    """A scheduling strategy that pins tasks to this process's node, or None when Ray can schedule
    no CPU there (a cluster head started with ``--num-cpus 0``, as in cluster.yaml, where job
    drivers run): tasks that read this node's files would wait forever, so the caller works in
    process instead. Needs Ray initialised."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = ray.get_runtime_context().get_node_id()
    cpus = next((float(n.get("Resources", {}).get("CPU", 0.0)) for n in ray.nodes()
                 if n.get("NodeID") == node and n.get("Alive")), 0.0)
    if cpus < 1:
        return None
    return NodeAffinitySchedulingStrategy(node_id=node, soft=False)


def _ray_messages_off_stdout() -> None:
    """Send Ray's driver-side messages (``(raylet) A worker died ...``) to file descriptor 2.

    Ray prints the errors the cluster publishes to the driver on *stdout*, in colour, from a
    background thread, even with ``log_to_driver=False``; they would land between a job's results
    and its summary. Fd 2 is where Ray's C++ lines go: the job's log file under
    :func:`native_stderr_to` (fingerprint), stderr otherwise. Plain text, one line per message.
    """
    import ray._private.worker as ray_worker

    if getattr(ray_worker.print_to_stdstream, "chromaray_routed", False):
        return

    def to_fd2(data: dict[str, Any], ignore_prefix: bool = False) -> None:
        who = data.get("pid") or "ray"
        text = "".join(f"({who}) {' '.join(str(line).split())}\n" for line in data.get("lines", []))
        with contextlib.suppress(OSError):  # a closed stderr must not kill Ray's listener thread
            os.write(2, text.encode("utf-8", errors="replace"))

    to_fd2.chromaray_routed = True  # type: ignore[attr-defined]
    ray_worker.print_to_stdstream = to_fd2


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
    if not verbose:
        # Ray Data logs a failed task at ERROR ("Dataset execution will now abort") before raising
        # it; the job reports the exception itself, in one line where it is a known fault.
        logging.getLogger("ray.data").setLevel(logging.CRITICAL)


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
        # A fixed pool: an autoscaling one starts its second actor seconds after the first's batch.
        return ds.map_batches(stage_cls, fn_constructor_kwargs=kwargs,
                              compute=ray.data.ActorPoolStrategy(size=max(1, pool_size)), **common)
    return ds.map_batches(_run_stateless, fn_kwargs={"stage": stage_cls(**kwargs)}, **common)


def _run_stateless(batch: pa.Table, stage: Stage) -> Iterator[pa.Table]:
    out = stage(batch)
    if isinstance(out, pa.Table):
        yield out
    else:
        yield from out
