"""Small causal transformer baseline for the same tasks as the Mamba model.

Pre-norm blocks with explicit ``nn.Linear`` layers (``qkv``, ``proj``, ``fc1``,
``fc2``) so LoRA (peft) can adapt them; attention is
``scaled_dot_product_attention(is_causal=True)``; learned absolute positions
up to ``spec.max_len``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from actors.errors import ChromarayError

if TYPE_CHECKING:
    from actors.train.models import ModelSpec

__all__ = ["LORA_TARGETS", "Block", "CausalSelfAttention", "TransformerBackbone"]


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        if d_model % n_heads:
            raise ChromarayError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, L, d = x.shape
        q, k, v = self.qkv(x).view(b, L, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(b, L, d))


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads, dropout)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, 4 * d_model)
        self.fc2 = nn.Linear(4 * d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x)))
        return x + self.drop(self.fc2(F.gelu(self.fc1(self.ln2(x)))))


class TransformerBackbone(nn.Module):
    """``(B, L, D) -> (B, L, D)``, causal; L must not exceed ``spec.max_len``."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.max_len = spec.max_len
        self.pos = nn.Embedding(spec.max_len, spec.d_model)
        self.blocks = nn.ModuleList(Block(spec.d_model, spec.n_heads, spec.dropout) for _ in range(spec.n_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        L = x.shape[1]
        if self.max_len < L:
            raise ChromarayError(f"sequence length {L} exceeds the transformer's max_len {self.max_len}")
        x = x + self.pos(torch.arange(L, device=x.device))
        for blk in self.blocks:
            x = blk(x)
        return x


LORA_TARGETS = ("qkv", "proj", "fc1", "fc2")
