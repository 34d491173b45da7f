"""Hardware profiles: laptop, GPU workstation, cloud cluster (``pipeline/profiles/*.yaml``).

A profile fixes the training run's shape: workers and their CPU/GPU
resources, device, precision, per-worker batch size, model size defaults,
checkpoint cadence. Selection order: explicit name (``--profile``) >
``CHROMARAY_PROFILE`` > automatic from detected hardware (CUDA -> workstation,
or cluster when the Ray cluster has GPUs beyond this machine's; otherwise
laptop, CPU or Apple MPS). Per-field CLI options override the file.

A :class:`Profile` is a frozen :class:`~actors.config.Settings`: files load through
``from_dict`` and overrides go through ``replace``, so an unknown field or a
value of the wrong type is one ChromarayError naming it.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from actors.config import Settings
from actors.errors import ChromarayError
from actors.train.config import DEVICES, PRECISIONS
from pipeline.config import read_yaml

__all__ = ["DEVICES", "PRECISIONS", "PROFILE_DIR", "PROFILE_ENV", "SOURCES", "Hardware", "Profile",
           "auto_profile_name", "available_profiles", "check_cluster_fits", "detect_hardware", "load_profile",
           "resolve_workers", "select_profile"]

PROFILE_DIR = Path(__file__).with_name("profiles")
PROFILE_ENV = "CHROMARAY_PROFILE"
#: How a profile was chosen: its file as loaded, --profile, $CHROMARAY_PROFILE, detected hardware.
SOURCES = ("file", "cli", "env", "auto")


@dataclasses.dataclass(frozen=True)
class Profile(Settings):
    """One hardware profile. ``workers`` is an int or ``"auto"`` (one per GPU)."""

    name: str
    description: str = ""
    workers: int | str = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    device: str = "auto"
    precision: str = "fp32"
    batch_size: int = 16
    seq_len: int = 128
    d_model: int = 64
    n_layers: int = 2
    lr: float = 3e-3
    checkpoint_every: int = 50
    log_every: int = 10
    max_steps: int = 300
    eval_fraction: float = 0.1
    lora_r: int = 8
    lora_alpha: int = 16
    keep_checkpoints: int = 2
    max_failures: int = 1
    source: str = "file"  # how it was chosen (SOURCES): shown by doctor, stored in the run config

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ChromarayError(f"profile {self.name}: precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.device not in DEVICES:
            raise ChromarayError(f"profile {self.name}: device must be one of {DEVICES}, got {self.device!r}")
        if not (self.workers == "auto" or (isinstance(self.workers, int) and self.workers >= 1)):
            raise ChromarayError(f"profile {self.name}: workers must be a positive integer or 'auto'")
        for f in ("batch_size", "seq_len", "d_model", "n_layers", "checkpoint_every", "log_every", "max_steps"):
            if int(getattr(self, f)) < 1:
                raise ChromarayError(f"profile {self.name}: {f} must be >= 1")
        if not 0.0 < self.eval_fraction < 1.0:
            raise ChromarayError(f"profile {self.name}: eval_fraction must be in (0, 1)")
        if self.cpus_per_worker < 0 or self.gpus_per_worker < 0:
            raise ChromarayError(f"profile {self.name}: resources per worker must be >= 0")
        if self.lora_r < 1 or self.lora_alpha < 1 or self.keep_checkpoints < 1 or self.max_failures < 0:
            raise ChromarayError(f"profile {self.name}: lora_r, lora_alpha and keep_checkpoints must be >= 1, "
                                 "max_failures >= 0")
        if self.source not in SOURCES:
            raise ChromarayError(f"profile {self.name}: source must be one of {SOURCES}, got {self.source!r}")


@dataclasses.dataclass
class Hardware:
    """What this machine offers (driver side)."""

    cpus: int
    cuda_devices: int
    cuda_names: list[str]
    mps: bool
    cupy: bool
    mamba_kernels: bool
    mamba_force_fallback: bool
    torch_version: str

    @property
    def mamba_backend(self) -> str:
        return "mamba_ssm" if self.mamba_kernels and not self.mamba_force_fallback else "mambapy"


def detect_hardware() -> Hardware:
    """Probe CUDA, MPS, CuPy and the mamba_ssm kernels (imports torch)."""
    import torch

    from actors.dsp.xp import gpu_available
    from actors.train.models.mamba import force_fallback, kernels_available

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    names = [torch.cuda.get_device_name(i) for i in range(n)]
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return Hardware(cpus=os.cpu_count() or 1, cuda_devices=n, cuda_names=names, mps=mps, cupy=gpu_available(),
                    mamba_kernels=kernels_available(), mamba_force_fallback=force_fallback(),
                    torch_version=torch.__version__)


def available_profiles() -> list[str]:
    """Names of the profile files shipped in ``pipeline/train/profiles/``."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_profile(name: str) -> Profile:
    """Profile from ``pipeline/profiles/<name>.yaml`` (or a path to a YAML file)."""
    path = Path(name) if name.endswith((".yaml", ".yml")) else PROFILE_DIR / f"{name}.yaml"
    if not path.exists():
        raise ChromarayError(f"unknown profile {name!r}; available: {', '.join(available_profiles())}")
    data = read_yaml(path, what="profile")
    data.setdefault("name", path.stem)
    return Profile.from_dict(data, where=f"profile {path}")


def auto_profile_name(hw: Hardware, *, cluster_gpus: float | None = None) -> str:
    """laptop without CUDA; cluster when Ray sees more GPUs than this machine has; else workstation."""
    if cluster_gpus is not None and cluster_gpus > hw.cuda_devices:
        return "cluster"
    if hw.cuda_devices > 0:
        return "workstation"
    return "laptop"


def select_profile(name: str | None = None, *, hw: Hardware | None = None, cluster_gpus: float | None = None,
                   overrides: Mapping[str, Any] | None = None) -> Profile:
    """Resolve the profile (explicit > $CHROMARAY_PROFILE > auto) and apply non-None overrides."""
    if name:
        source = "cli"
    elif os.environ.get(PROFILE_ENV):
        name, source = os.environ[PROFILE_ENV], "env"
    else:
        name, source = auto_profile_name(hw or detect_hardware(), cluster_gpus=cluster_gpus), "auto"
    changes = {k: v for k, v in (overrides or {}).items() if v is not None}
    return load_profile(name).replace(where=f"profile {name}", **{**changes, "source": source})


def resolve_workers(profile: Profile, resources: dict[str, float]) -> int:
    """Worker count; ``auto`` = GPUs in the cluster / GPUs per worker (>= 1)."""
    if profile.workers != "auto":
        return int(profile.workers)
    if profile.gpus_per_worker > 0:
        return max(1, int(resources.get("GPU", 0) // profile.gpus_per_worker))
    return max(1, int(resources.get("CPU", 1) // max(profile.cpus_per_worker, 1)))


def check_cluster_fits(profile: Profile, resources: dict[str, float], workers: int) -> None:
    """Raise ChromarayError when the Ray cluster cannot host the workers.

    Ray does not fail a request for GPUs a cluster lacks: the placement group
    waits forever. So the check is done here, from ``ray.cluster_resources()``.
    """
    need_gpu = workers * profile.gpus_per_worker
    have_gpu = float(resources.get("GPU", 0.0))
    if need_gpu > have_gpu:
        raise ChromarayError(
            f"profile {profile.name!r} needs {need_gpu:g} GPUs ({workers} workers x {profile.gpus_per_worker:g}) "
            f"but the Ray cluster has {have_gpu:g}; use --profile laptop, --gpus-per-worker 0 or fewer --workers")
    need_cpu = workers * profile.cpus_per_worker
    have_cpu = float(resources.get("CPU", 0.0))
    if need_cpu > have_cpu:
        raise ChromarayError(
            f"profile {profile.name!r} needs {need_cpu:g} CPUs ({workers} workers x {profile.cpus_per_worker:g}) "
            f"but the Ray cluster has {have_cpu:g}; lower --workers or --cpus-per-worker")
