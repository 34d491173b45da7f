"""Mamba backbone: pure PyTorch (mambapy) everywhere, mamba_ssm CUDA kernels where present.

Both implementations expose the same parameter names and shapes per layer
(``in_proj``, ``conv1d``, ``x_proj``, ``dt_proj``, ``A_log``, ``D``, ``out_proj``),
so a checkpoint trained on a GPU with the kernels loads on a laptop and back.

Scan mode of the pure path: the parallel scan (``mambapy.pscan``) is used for
training and on GPU; for CPU inference (``model.eval()`` on CPU) a sequential
scan is used because it does less work and allocates less (``(B, L, ED, N)``
intermediates are not padded to a power of two), which is faster on a CPU.

``CHROMARAY_MAMBA_FORCE_FALLBACK=1`` forces the pure path even where the
kernels import. ``mamba_ssm`` cannot be imported without CUDA; it is an
optional extra (``pip install chromaray[mamba-cuda]``).
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from actors.train.models import ModelSpec

__all__ = ["FORCE_FALLBACK_ENV", "KERNEL_D_CONV", "LORA_TARGETS", "MambaBackbone", "MambaLayer", "RMSNorm",
           "choose_backend", "force_fallback", "kernel_d_conv", "kernels_available"]

log = logging.getLogger(__name__)

#: Kernel sizes the causal_conv1d CUDA kernel supports.
KERNEL_D_CONV = (2, 3, 4)
FORCE_FALLBACK_ENV = "CHROMARAY_MAMBA_FORCE_FALLBACK"


@functools.lru_cache(maxsize=1)
def _mamba_ssm_class() -> type | None:
    """``mamba_ssm.Mamba`` if CUDA is present and the package imports, else None."""
    if not torch.cuda.is_available():
        return None  # mamba_ssm's import itself needs CUDA
    try:
        from mamba_ssm import Mamba

        return Mamba
    except Exception:  # noqa: BLE001 - ImportError, missing .so, CUDA mismatch ...: all mean "no kernels"
        return None


def force_fallback() -> bool:
    return os.environ.get(FORCE_FALLBACK_ENV, "").strip().lower() in ("1", "true", "yes")


def kernels_available() -> bool:
    """True when the mamba_ssm CUDA kernels import (ignores the force-fallback switch)."""
    return _mamba_ssm_class() is not None


def choose_backend(requested: str | None = None) -> str:
    """``"mamba_ssm"`` (CUDA kernels) or ``"mambapy"`` (pure PyTorch).

    ``requested=None`` picks the kernels when they import and the
    force-fallback switch is off. Asking for ``"mamba_ssm"`` where it cannot
    work falls back with a warning rather than failing a run.
    """
    if requested not in (None, "mamba_ssm", "mambapy"):
        from actors.errors import ChromarayError

        raise ChromarayError(f"unknown Mamba backend {requested!r} (mamba_ssm | mambapy)")
    if requested == "mambapy" or force_fallback():
        return "mambapy"
    if kernels_available():
        return "mamba_ssm"
    if requested == "mamba_ssm":
        log.warning("mamba_ssm kernels are not available here; using the pure-PyTorch Mamba")
    return "mambapy"


def kernel_d_conv(d_conv: int) -> int:
    """Nearest kernel-supported conv width (the CUDA kernels only take 2, 3 or 4)."""
    return min(max(int(d_conv), KERNEL_D_CONV[0]), KERNEL_D_CONV[-1])


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class MambaLayer(nn.Module):
    """Pre-norm residual block: ``x + mixer(norm(x))`` on ``(B, L, D)``."""

    def __init__(self, mixer: nn.Module, d_model: int, backend: str):
        super().__init__()
        self.norm = RMSNorm(d_model)
        self.mixer = mixer
        self.backend = backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.backend == "mambapy":
            # Parallel scan to train (and on GPU); sequential scan for CPU inference.
            mixer: Any = self.mixer  # mambapy's MambaBlock reads its config at every call
            mixer.config.pscan = self.training or x.device.type != "cpu"
        return x + self.mixer(self.norm(x))


class MambaBackbone(nn.Module):
    """Stack of ``spec.n_layers`` Mamba layers, ``(B, L, D) -> (B, L, D)``, causal.

    ``backend`` None picks mamba_ssm kernels where available (see
    :func:`choose_backend`). With the kernels ``d_conv`` is coerced into
    {2, 3, 4} (logged); ``self.spec`` is the spec actually built, for the checkpoint.
    """

    def __init__(self, spec: ModelSpec, *, backend: str | None = None):
        super().__init__()
        self.backend = choose_backend(backend)
        if self.backend == "mamba_ssm":
            coerced = kernel_d_conv(spec.d_conv)
            if coerced != spec.d_conv:
                log.warning("mamba_ssm kernels support d_conv in %s only: using d_conv=%d instead of %d",
                            KERNEL_D_CONV, coerced, spec.d_conv)
                spec = dataclasses.replace(spec, d_conv=coerced)
            cls = _mamba_ssm_class()
            assert cls is not None, "choose_backend returns mamba_ssm only when its class imports"
            mixers = [cls(d_model=spec.d_model, d_state=spec.d_state, d_conv=spec.d_conv, expand=spec.expand)
                      for _ in range(spec.n_layers)]
        else:
            from mambapy.mamba import MambaBlock, MambaConfig

            mixers = []
            for _ in range(spec.n_layers):
                cfg = MambaConfig(d_model=spec.d_model, n_layers=spec.n_layers, d_state=spec.d_state,
                                  d_conv=spec.d_conv, expand_factor=spec.expand, pscan=True)
                mixers.append(MambaBlock(cfg))
        self.spec = spec
        self.layers = nn.ModuleList(MambaLayer(m, spec.d_model, self.backend) for m in mixers)
        self.drop = nn.Dropout(spec.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.drop(x)


#: Linear layers LoRA adapts in a Mamba layer. Not dt_proj: the pure path reads
#: ``dt_proj.weight`` directly, so a LoRA there gets no gradient (and DDP fails
#: on parameters without gradients).
LORA_TARGETS = ("in_proj", "x_proj", "out_proj")
