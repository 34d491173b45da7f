"""Hardware profiles: laptop, GPU workstation, cloud cluster (``pipeline/train/profiles/*.yaml``).

A profile fixes the training run's shape: workers and their CPU/GPU
resources, device, precision, per-worker batch size, model size defaults,
checkpoint cadence. Selection order: explicit name (``--profile``) >
``CHROMARAY_PROFILE`` > automatic from detected hardware (CUDA -> workstation,
or cluster when the Ray cluster has GPUs beyond this machine's; otherwise
laptop, CPU or Apple MPS). Per-field CLI options override the file.

The shipped files are the one source of every value: each lists every field
(:class:`Profile` has no defaults for them). A profile file given by path names
only what it changes; the rest comes from ``laptop.yaml`` (:data:`BASE_PROFILE`).

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

import torch

from actors.config import Settings, require, require_positive
from actors.dsp.xp import gpu_available
from actors.errors import ChromarayError
from actors.train.config import LoraConfig, check_loop_settings
from actors.train.models.mamba import force_fallback, kernels_available
from pipeline.config import read_yaml

__all__ = ["BASE_PROFILE", "PROFILE_DIR", "PROFILE_ENV", "SOURCES", "Hardware", "Profile", "auto_profile_name",
           "available_profiles", "check_cluster_fits", "detect_hardware", "load_profile", "resolve_workers",
           "select_profile"]

PROFILE_DIR = Path(__file__).with_name("profiles")
PROFILE_ENV = "CHROMARAY_PROFILE"
#: The shipped profile whose values a profile file given by path starts from.
BASE_PROFILE = "laptop"
#: How a profile was chosen: its file as loaded, --profile, $CHROMARAY_PROFILE, detected hardware.
SOURCES = ("file", "cli", "env", "auto")


@dataclasses.dataclass(frozen=True)
class Profile(Settings):
    """One hardware profile. ``workers`` is an int or ``"auto"`` (one per GPU)."""

    name: str
    workers: int | str
    cpus_per_worker: float
    gpus_per_worker: float
    device: str
    precision: str
    batch_size: int
    seq_len: int
    d_model: int
    n_layers: int
    lr: float
    checkpoint_every: int
    log_every: int
    max_steps: int
    eval_fraction: float
    lora_r: int
    lora_alpha: int
    keep_checkpoints: int
    max_failures: int
    # Shown only: a profile file given by path may leave it out (it does not inherit laptop's).
    description: str = ""
    # How it was chosen (SOURCES), set by the loaders, never written in a file: shown by doctor,
    # stored in the run config.
    source: str = "file"

    def __post_init__(self) -> None:
        check_loop_settings(self)  # precision, device, steps, batch, lr, cadences: the loop's own rules
        require(self.workers == "auto" or (isinstance(self.workers, int) and self.workers >= 1),
                f"workers must be a positive integer or 'auto', got {self.workers!r}")
        require_positive(self, "seq_len", "d_model", "n_layers", "keep_checkpoints")
        require_positive(self, "cpus_per_worker", "gpus_per_worker", "max_failures", allow_zero=True)
        require(0.0 < self.eval_fraction < 1.0, f"eval_fraction must be in (0, 1), got {self.eval_fraction!r}")
        LoraConfig(r=self.lora_r, alpha=self.lora_alpha)  # the LoRA rule is the adapter config's
        require(self.source in SOURCES, f"source must be one of {SOURCES}, got {self.source!r}")


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
    """Probe CUDA, MPS, CuPy and the mamba_ssm kernels."""
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
    """Profile from ``pipeline/train/profiles/<name>.yaml``, or from a path to a YAML file
    (whose missing fields are :data:`BASE_PROFILE`'s, see the module docstring)."""
    by_path = name.endswith((".yaml", ".yml"))
    path = Path(name) if by_path else PROFILE_DIR / f"{name}.yaml"
    if not path.exists():
        raise ChromarayError(f"unknown profile {name!r}; available: {', '.join(available_profiles())}")
    data = read_yaml(path, what="profile")
    if by_path:
        base = read_yaml(PROFILE_DIR / f"{BASE_PROFILE}.yaml", what="profile")
        data = {k: v for k, v in base.items() if k not in ("name", "description")} | data
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
