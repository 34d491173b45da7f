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

from actors.config import Settings, require, require_positive
from actors.train.models import ModelSpec

__all__ = ["DEVICES", "PRECISIONS", "FaultInjection", "LoopConfig", "LoraConfig", "MetricsSink",
           "check_loop_settings", "default_warmup"]

PRECISIONS = ("fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda", "mps")

#: Rank 0 hands it per-step rows ``{step, loss, lr, items_per_s, split}``.
MetricsSink = Callable[[list[dict[str, Any]]], None]


def default_warmup(max_steps: int) -> int:
    """Warm-up steps of the learning-rate schedule: a tenth of the run, 1 to 100."""
    return max(1, min(100, max_steps // 10))


def check_loop_settings(cfg: Any) -> None:
    """The rules on the fields a hardware profile and a :class:`LoopConfig` both carry
    (``pipeline.train.profiles.Profile`` checks its values with this too)."""
    require(cfg.precision in PRECISIONS, f"precision must be one of {PRECISIONS}, got {cfg.precision!r}")
    require(cfg.device in DEVICES, f"device must be one of {DEVICES}, got {cfg.device!r}")
    require_positive(cfg, "max_steps", "batch_size", "lr", "checkpoint_every", "log_every")


@dataclass(frozen=True)
class LoraConfig(Settings):
    """Rank and scale of the LoRA adapters (peft's ``r`` and ``lora_alpha``)."""

    r: int
    alpha: int
    dropout: float = 0.0

    def __post_init__(self) -> None:
        require(self.r >= 1 and self.alpha >= 1, f"LoRA r and alpha must be >= 1, got r={self.r} alpha={self.alpha}")
        require(0.0 <= self.dropout < 1.0, f"LoRA dropout must be in [0, 1), got {self.dropout}")


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

    ``base`` is the checkpoint a LoRA run puts adapters on; without one the loop
    builds ``model`` from scratch (:attr:`mode`). ``batch_size`` is per worker. ``precision`` applies
    on CUDA only (elsewhere the loop runs fp32). ``metrics_sink`` is a
    picklable callable, not a setting: :meth:`to_dict` leaves it out.
    """

    model: ModelSpec
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
        check_loop_settings(self)
        require_positive(self, "warmup_steps", "grad_clip")
        require_positive(self, "weight_decay", allow_zero=True)
        require(self.metrics_sink is None or callable(self.metrics_sink),
                f"metrics_sink must be callable, got {self.metrics_sink!r}")

    def to_dict(self) -> dict[str, Any]:
        # Without the sink: asdict would deep-copy it, and it is no setting to store.
        plain = dataclasses.replace(self, metrics_sink=None)
        return {k: v for k, v in Settings.to_dict(plain).items() if k != "metrics_sink"}

    @property
    def mode(self) -> str:
        """``lora`` (adapters on ``base``) or ``scratch``: the base decides, so the two cannot disagree."""
        return "lora" if self.base else "scratch"

    @property
    def task(self) -> str:
        return self.model.task
