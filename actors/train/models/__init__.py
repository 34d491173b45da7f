"""Sequence models trained on the pipeline's outputs (MIDI tokens, audio frames).

One wrapper, :class:`SequenceModel`, turns a backbone that maps ``(B, L, D)`` to
``(B, L, D)`` (Mamba or a small causal transformer) into a model for one of two
tasks:

- ``tokens``: next-token prediction on MIDI token ids. Input ``(B, L)`` int64,
  output logits ``(B, L, vocab_size)``; loss = cross-entropy (nats/token).
- ``frames``: next-frame prediction on audio feature frames (12 chroma bins +
  1 normalised onset strength = 13 features). Input ``(B, L, 13)`` float32,
  output ``(B, L, 13)``; loss = mean squared error per feature ("frame error").

Both backbones are causal: output at position t depends on inputs <= t only.
Nothing here imports Ray; the Ray Train loop is ``actors.train.loop``.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from actors.config import Settings, require, require_positive
from actors.errors import ChromarayError

__all__ = ["ARCHS", "N_FRAME_FEATURES", "TASKS", "ModelSpec", "SequenceModel", "build_model", "items_in",
           "load_model", "save_model", "sequence_loss", "split_batch", "train_step"]

log = logging.getLogger(__name__)

ARCHS = ("mamba", "transformer")
TASKS = ("tokens", "frames")
#: Per-frame features of the ``frames`` task: 12 chroma bins then onset.
N_FRAME_FEATURES = 13


@dataclass(frozen=True)
class ModelSpec(Settings):
    """Everything needed to rebuild a model (stored as ``spec.json`` in checkpoints).

    ``vocab_size`` is used by the tokens task only; ``n_features`` by frames.
    ``d_conv``/``d_state``/``expand`` are Mamba-only; ``n_heads``/``max_len``
    transformer-only (max_len bounds the learned position table).
    """

    arch: str = "mamba"
    task: str = "tokens"
    vocab_size: int = 0
    n_features: int = N_FRAME_FEATURES
    d_model: int = 64
    n_layers: int = 2
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    n_heads: int = 4
    max_len: int = 1024
    dropout: float = 0.0

    def __post_init__(self) -> None:
        require(self.arch in ARCHS, f"unknown model {self.arch!r}; choose one of {', '.join(ARCHS)}")
        require(self.task in TASKS, f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        require(self.task != "tokens" or self.vocab_size >= 2,
                f"tokens task needs vocab_size >= 2, got {self.vocab_size}")
        require_positive(self, "d_model", "n_layers")

    def save(self, directory: str | Path) -> None:
        Path(directory, "spec.json").write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, directory: str | Path) -> ModelSpec:
        p = Path(directory, "spec.json")
        if not p.exists():
            raise ChromarayError(f"{directory} is not a chromaray model checkpoint (no spec.json)")
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError) as exc:
            raise ChromarayError(f"cannot read model spec {p}: {exc}") from exc
        if not isinstance(data, dict):
            raise ChromarayError(f"model spec {p} must hold a JSON object")
        return cls.from_dict(data, where=str(p))


class SequenceModel(nn.Module):
    """Input adapter -> causal backbone -> final norm -> output head.

    ``forward(x)``: tokens ``(B, L)`` int64 -> logits ``(B, L, vocab)``;
    frames ``(B, L, F)`` float32 -> next-frame predictions ``(B, L, F)``.
    """

    def __init__(self, spec: ModelSpec, *, backend: str | None = None):
        super().__init__()
        d = spec.d_model
        if spec.task == "tokens":
            self.embed: nn.Module = nn.Embedding(spec.vocab_size, d)
            n_out = spec.vocab_size
        else:
            self.embed = nn.Linear(spec.n_features, d)
            n_out = spec.n_features
        if spec.arch == "mamba":
            from actors.train.models.mamba import MambaBackbone

            mamba = MambaBackbone(spec, backend=backend)
            spec = mamba.spec  # d_conv as the CUDA kernels built it, so the checkpoint matches
            self.backbone: nn.Module = mamba
        else:
            from actors.train.models.transformer import TransformerBackbone

            self.backbone = TransformerBackbone(spec)
        self.spec = spec
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.backbone(self.embed(x))))


def build_model(spec: ModelSpec, *, backend: str | None = None) -> SequenceModel:
    """A freshly initialised model; ``backend`` picks the Mamba implementation
    (None = fastest available, see ``actors.train.models.mamba.choose_backend``)."""
    return SequenceModel(spec, backend=backend)


def split_batch(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows of L+1 steps -> (inputs[:, :L], targets[:, 1:])."""
    return x[:, :-1], x[:, 1:]


def sequence_loss(task: str, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean loss: tokens -> cross-entropy in nats/token; frames -> MSE per feature."""
    if task == "tokens":
        return F.cross_entropy(pred.reshape(-1, pred.shape[-1]).float(), target.reshape(-1))
    return F.mse_loss(pred.float(), target.float())


def train_step(model: nn.Module, task: str, inputs: torch.Tensor, targets: torch.Tensor, *,
               optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor], grad_clip: float,
               amp_dtype: torch.dtype | None = None, scaler: Any = None,
               after_backward: Callable[[], object] | None = None) -> torch.Tensor:
    """One optimizer step (the Ray Train loop's and the GPU check's): autocast forward at
    ``amp_dtype`` (None = full precision), backward through ``scaler`` for fp16, gradient
    clipping, step. ``after_backward`` sees the unscaled gradients. Returns the loss."""
    model.train()
    device_type = inputs.device.type
    with torch.autocast(device_type=device_type, dtype=amp_dtype, enabled=amp_dtype is not None):
        loss = sequence_loss(task, model(inputs), targets)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    if after_backward is not None:
        after_backward()
    torch.nn.utils.clip_grad_norm_(params, grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return loss


def items_in(task: str, target: torch.Tensor) -> int:
    """Tokens (tokens task) or frames (frames task) predicted in a batch."""
    return int(target.shape[0] * target.shape[1])


def save_model(model: nn.Module, directory: str | Path) -> None:
    """``spec.json`` + ``model.pt`` (plain state dict of the unwrapped model)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    inner = getattr(model, "module", model)  # DDP wrapper
    cast(ModelSpec, inner.spec).save(directory)
    torch.save(inner.state_dict(), directory / "model.pt")


def load_model(directory: str | Path, *, backend: str | None = None,
               map_location: str | torch.device = "cpu") -> SequenceModel:
    """Model saved by :func:`save_model` (a base checkpoint or a merged LoRA export)."""
    directory = Path(directory)
    spec = ModelSpec.load(directory)
    weights = directory / "model.pt"
    if not weights.exists():
        raise ChromarayError(f"{directory} has no model.pt (is it a LoRA adapter? use its merged export)")
    model = build_model(spec, backend=backend)
    state = torch.load(weights, map_location=map_location, weights_only=True)
    model.load_state_dict(state)
    return model
