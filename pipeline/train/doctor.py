"""What ``chromaray doctor`` reports: versions, devices, the profile that would be
chosen, active fast paths and, given a Ray address, whether the profile fits that cluster."""
from __future__ import annotations

from typing import Any

from actors.errors import ChromarayError

__all__ = ["report"]


def report(profile_name: str | None = None, *, address: str | None = None) -> dict[str, Any]:
    """Everything doctor prints, as a JSON-ready dict.

    Without ``address`` Ray is not started; with one, Ray joins that cluster only
    for the time it takes to read its resources.
    """
    import ray

    from pipeline.runtime import ray_session
    from pipeline.train.profiles import check_cluster_fits, detect_hardware, resolve_workers, select_profile

    hw = detect_hardware()
    info: dict[str, Any] = {
        "torch": hw.torch_version, "ray": ray.__version__, "cpus": hw.cpus,
        "cuda_devices": hw.cuda_devices, "cuda_names": hw.cuda_names, "mps": hw.mps,
        "fast_paths": {
            "cupy_dsp": hw.cupy,
            "mamba_ssm_kernels": hw.mamba_kernels,
            "mamba_force_fallback": hw.mamba_force_fallback,
            "mamba_backend": hw.mamba_backend,
        },
    }
    res: dict[str, float] | None = None
    if address:
        with ray_session(address):  # offline defaults, one-line error when the cluster is unreachable
            res = ray.cluster_resources()
        info["cluster_resources"] = {k: v for k, v in res.items() if k in ("CPU", "GPU", "memory")}
    prof = select_profile(profile_name, hw=hw, cluster_gpus=None if res is None else res.get("GPU", 0.0))
    info["profile"] = prof.to_dict()
    if res is not None:
        try:
            check_cluster_fits(prof, res, resolve_workers(prof, res))
            info["profile_fits_cluster"] = True
        except ChromarayError as exc:
            info["profile_fits_cluster"] = str(exc)
    return info
