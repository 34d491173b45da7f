"""What the Ray Train loop (:mod:`actors.train.loop`) is told: one typed, frozen config.

The driver (``pipeline.train.driver.loop_config``) fills every field from the
hardware profile and the request; the loop reads fields, never guesses a
default. The few settings no profile carries (weight decay, gradient clipping,
LoRA dropout, the fault hook's rank) have their one default here.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from actors.config import Settings
from actors.errors import ChromarayError
from actors.train.models import ModelSpec

__all__ = ["DEVICES", "MODES", "PRECISIONS", "FaultInjection", "LoopConfig", "LoraConfig", "MetricsSink",
           "default_warmup"]

PRECISIONS = ("fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda", "mps")
MODES = ("scratch", "lora")

#: Rank 0 hands it per-step rows ``{step, loss, lr, items_per_s, split}``.
MetricsSink = Callable[[list[dict[str, Any]]], None]


def default_warmup(max_steps: int) -> int:
    """Warm-up steps of the learning-rate schedule: a tenth of the run, 1 to 100."""
    return max(1, min(100, max_steps // 10))


@dataclass(frozen=True)
class LoraConfig(Settings):
    """Rank and scale of the LoRA adapters (peft's ``r`` and ``lora_alpha``)."""

    r: int
    alpha: int
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha < 1:
            raise ChromarayError(f"LoRA r and alpha must be >= 1, got r={self.r} alpha={self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ChromarayError(f"LoRA dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class FaultInjection(Settings):
    """Testing hook: worker ``rank`` exits hard once when it reaches ``step``;
    the file ``marker`` (written just before) makes it "once" across restarts."""

    step: int
    marker: str
    rank: int = 0


@dataclass(frozen=True)
class LoopConfig(Settings):
    """Everything one training worker needs besides its dataset shards.

    ``mode`` is ``scratch`` (build ``model``) or ``lora`` (adapters on the
    checkpoint at ``base``). ``batch_size`` is per worker. ``precision`` applies
    on CUDA only (elsewhere the loop runs fp32). ``metrics_sink`` is a
    picklable callable, not a setting: :meth:`to_dict` leaves it out.
    """

    model: ModelSpec
    mode: str
    base: str | None
    lora: LoraConfig
    max_steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    checkpoint_every: int
    log_every: int
    precision: str
    device: str
    seed: int
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    fault: FaultInjection | None = None
    metrics_sink: MetricsSink | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ChromarayError(f"loop mode must be one of {MODES}, got {self.mode!r}")
        if self.mode == "lora" and not self.base:
            raise ChromarayError("a LoRA loop needs the base checkpoint (base)")
        if self.precision not in PRECISIONS:
            raise ChromarayError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.device not in DEVICES:
            raise ChromarayError(f"device must be one of {DEVICES}, got {self.device!r}")
        for name in ("max_steps", "batch_size", "warmup_steps", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ChromarayError(f"loop {name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.weight_decay < 0 or self.grad_clip <= 0:
            raise ChromarayError(f"lr and grad_clip must be > 0 and weight_decay >= 0 (lr={self.lr}, "
                                 f"weight_decay={self.weight_decay}, grad_clip={self.grad_clip})")
        if self.metrics_sink is not None and not callable(self.metrics_sink):
            raise ChromarayError(f"metrics_sink must be callable, got {self.metrics_sink!r}")

    def to_dict(self) -> dict[str, Any]:
        # Without the sink: asdict would deep-copy it, and it is no setting to store.
        plain = dataclasses.replace(self, metrics_sink=None)
        return {k: v for k, v in Settings.to_dict(plain).items() if k != "metrics_sink"}

    @property
    def task(self) -> str:
        return self.model.task
