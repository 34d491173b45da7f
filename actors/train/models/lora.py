"""LoRA fine-tuning of a chromaray model with HF peft.

Adapters go on the linear layers of the backbone (Mamba: ``in_proj``,
``x_proj``, ``out_proj``; transformer: ``qkv``, ``proj``, ``fc1``, ``fc2``).
Everything else is frozen: :func:`assert_only_adapters_trainable` checks it.
Layout of an adapter directory (``save_adapter``): peft's
``adapter_config.json`` + ``adapter_model.safetensors`` and the base model's
``spec.json``. ``merge`` folds the adapters into the base weights
(``merge_and_unload``) for export as a plain model checkpoint.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import nn

from actors.errors import ChromarayError
from actors.train.models import ModelSpec, SequenceModel, build_model

__all__ = ["apply_lora", "assert_only_adapters_trainable", "load_adapter", "lora_targets", "merge", "save_adapter",
           "trainable_parameter_names"]

log = logging.getLogger(__name__)


def lora_targets(spec: ModelSpec) -> list[str]:
    """Names of the linear layers that receive adapters for this architecture."""
    from actors.train.models import mamba, transformer

    return list(mamba.LORA_TARGETS if spec.arch == "mamba" else transformer.LORA_TARGETS)


def _pure_mamba_copy(model: SequenceModel) -> SequenceModel:
    """Same weights on the pure-PyTorch Mamba path.

    The mamba_ssm module reads ``in_proj.weight`` (and on its fused path
    ``x_proj``/``out_proj`` weights) directly instead of calling the layers,
    so peft's LoRA wrappers would be bypassed there.
    """
    pure = build_model(model.spec, backend="mambapy")
    pure.load_state_dict(model.state_dict())
    return pure.to(next(model.parameters()).device)


def apply_lora(model: SequenceModel, *, r: int = 8, alpha: int = 16, dropout: float = 0.0) -> nn.Module:
    """Wrap ``model`` in a peft LoRA model; only adapter weights stay trainable."""
    from peft import LoraConfig, get_peft_model

    if getattr(getattr(model, "backbone", None), "backend", None) == "mamba_ssm":
        log.warning("LoRA runs the Mamba layers on the pure-PyTorch path: mamba_ssm bypasses adapter layers")
        model = _pure_mamba_copy(model)
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, bias="none",
                     target_modules=lora_targets(model.spec))
    peft_model = get_peft_model(model, cfg)
    assert_only_adapters_trainable(peft_model)
    return peft_model


def trainable_parameter_names(model: nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


def assert_only_adapters_trainable(model: nn.Module) -> None:
    """Raise AssertionError unless every trainable parameter is a LoRA weight (and there is one)."""
    names = trainable_parameter_names(model)
    wrong = [n for n in names if "lora_" not in n]
    if wrong or not names:
        raise AssertionError(f"LoRA model must train adapters only; trainable non-adapter params: {wrong[:5]}"
                             if wrong else "LoRA model has no trainable adapter parameters")


def save_adapter(peft_model: nn.Module, directory: str | Path) -> None:
    """Adapter weights + peft config + the base model's spec.json in ``directory``."""
    directory = Path(directory)
    inner: Any = getattr(peft_model, "module", peft_model)  # DDP wrapper around a peft model
    inner.save_pretrained(str(directory))
    inner.get_base_model().spec.save(directory)


def load_adapter(base: SequenceModel, directory: str | Path, *, trainable: bool = False) -> nn.Module:
    """``base`` with the adapter from ``directory`` attached (peft PeftModel)."""
    from peft import PeftModel

    directory = Path(directory)
    if not (directory / "adapter_config.json").exists():
        raise ChromarayError(f"{directory} is not a LoRA adapter directory (no adapter_config.json)")
    if getattr(getattr(base, "backbone", None), "backend", None) == "mamba_ssm":
        base = _pure_mamba_copy(base)
    model = PeftModel.from_pretrained(base, str(directory), is_trainable=trainable)
    if trainable:
        assert_only_adapters_trainable(model)
    return model


def merge(peft_model: nn.Module) -> SequenceModel:
    """Fold adapters into the base weights; returns the plain model (same outputs)."""
    inner: Any = getattr(peft_model, "module", peft_model)
    merged = inner.merge_and_unload()
    for p in merged.parameters():
        p.requires_grad_(True)
    return merged
