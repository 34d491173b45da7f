"""Print the detected devices, the training profile that would be chosen, and which
fast paths are active (CuPy DSP kernels, mamba_ssm CUDA kernels)."""
from __future__ import annotations

import argparse
import json

__all__ = ["HELP", "add_arguments", "run"]

HELP = "show devices, chosen hardware profile and active fast paths"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default=None, help="profile to resolve instead of the automatic choice")
    parser.add_argument("--address", default=None,
                        help="also connect to this Ray cluster and check the profile fits its resources")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    from pipeline.text import shown
    from pipeline.train.doctor import report

    info = report(args.profile, address=args.address)
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    p = info["profile"]
    fp = info["fast_paths"]
    gpus = ", ".join(shown(n) for n in info["cuda_names"]) or "none"
    print(f"torch {info['torch']}, ray {info['ray']}, {info['cpus']} CPUs")
    print(f"CUDA devices: {info['cuda_devices']} ({gpus}); Apple MPS: {'yes' if info['mps'] else 'no'}")
    print(f"profile: {shown(p['name'])} (chosen by {shown(p['source'])}): workers={p['workers']} "
          f"cpus/worker={p['cpus_per_worker']} "
          f"gpus/worker={p['gpus_per_worker']} device={shown(p['device'])} precision={shown(p['precision'])} "
          f"batch/worker={p['batch_size']} seq_len={p['seq_len']}")
    print(f"fast path CuPy DSP kernels: {'active' if fp['cupy_dsp'] else 'inactive (NumPy)'}")
    mk = ("active" if fp["mamba_backend"] == "mamba_ssm" else
          "available but forced off (CHROMARAY_MAMBA_FORCE_FALLBACK)" if fp["mamba_ssm_kernels"] else
          "inactive (pure-PyTorch mambapy)")
    print(f"fast path mamba_ssm kernels: {mk}")
    if "cluster_resources" in info:
        print(f"Ray cluster: {info['cluster_resources']}; profile fits: {shown(info['profile_fits_cluster'])}")
    return 0


if __name__ == "__main__":
    from jobs.cli import run_as_module

    run_as_module("doctor")
