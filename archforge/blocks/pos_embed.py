"""Absolute position embeddings added to tokens: ``learned_pos_embed`` and ``sincos_pos_embed``.

Self-attention is equivariant to permutations of its tokens; adding a different vector
per position, ``y = x + p`` with ``p: (1, N, C)``, tells the tokens where they are.

* ``learned_pos_embed`` (ViT, Dosovitskiy et al. 2021): ``p`` is a parameter covering
  every token, the extra (class) tokens included when it follows ``class_token`` as in
  ViT/DeiT; initialised with a truncated normal of std 0.02. It is the node's own
  parameter (a :class:`ParameterNode`): a node ``pos_embed`` holds ``pos_embed``, as in timm.
* ``sincos_pos_embed`` (Vaswani et al. 2017, in 2-D as in MAE, He et al. 2022, and
  MoCo v3, Chen et al. 2021): fixed. For a grid position ``(r, c)`` and
  ``k = 0 … C/4 − 1``, with ``ω_k = T^(−k / (C/4))`` and ``T = 10000``::

      p(r, c) = [sin(c·ω), cos(c·ω), sin(r·ω), cos(r·ω)]       (each C/4 wide)

  Extra tokens get ``p = 0``.
"""

from __future__ import annotations

from pydantic import Field
import torch
from torch import nn

from archforge.plugin import Block, BlockArgs, ParameterNode, Shape, ShapeError


class LearnedPosEmbed(Block):
    """``y = x + p`` with a learned ``p`` of shape ``(1, N, C)``."""

    name = "learned_pos_embed"
    layout = "tokens"
    family = "positional"

    class Args(BlockArgs):
        std: float = Field(0.02, gt=0, description="Std of the truncated-normal initialisation.")

    def infer(self, x: Shape, args: Args) -> Shape:
        return x

    def build(self, x: Shape, args: Args, *, device=None, dtype=None) -> nn.Module:
        return LearnedPositionEmbedding(x.num_tokens, x.channels, args.std, device=device, dtype=dtype)


class LearnedPositionEmbedding(ParameterNode):
    def __init__(self, tokens: int, dim: int, std: float = 0.02, *, device=None, dtype=None):
        super().__init__(torch.empty(1, tokens, dim, device=device, dtype=dtype))
        nn.init.trunc_normal_(self.tensor, std=std)

    @staticmethod
    def apply(x: torch.Tensor, pos_embed: torch.Tensor) -> torch.Tensor:
        return x + pos_embed  # (B, N, C) + (1, N, C)


class SinCosPosEmbed(Block):
    """``y = x + p`` with the fixed 2-D sine-cosine ``p`` of the token grid (no parameters)."""

    name = "sincos_pos_embed"
    layout = "tokens"
    family = "positional"

    class Args(BlockArgs):
        temperature: float = Field(10000.0, gt=0, description="T in ω_k = T^(−4k/C).")

    def infer(self, x: Shape, args: Args) -> Shape:
        if x.channels % 4:
            raise ShapeError(f"2-D sine-cosine embedding needs channels divisible by 4, got {x.channels}")
        return x

    def build(self, x: Shape, args: Args, *, device=None, dtype=None) -> nn.Module:
        table = sincos_2d(x.height, x.width, x.channels, args.temperature, extra_tokens=x.extra_tokens)
        return FixedPositionEmbedding(table.to(device=device, dtype=dtype or torch.get_default_dtype()))


def sincos_2d(height: int, width: int, dim: int, temperature: float = 10000.0, *, extra_tokens: int = 0) -> torch.Tensor:
    """The ``(1, extra_tokens + H·W, dim)`` table of the module docstring, computed in float64."""
    omega = temperature ** -(torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))  # (C/4,)
    rows = torch.arange(height, dtype=torch.float64).repeat_interleave(width)  # (HW,) row-major r
    cols = torch.arange(width, dtype=torch.float64).repeat(height)  # (HW,) row-major c
    angle_c, angle_r = cols[:, None] * omega, rows[:, None] * omega  # (HW, C/4)
    table = torch.cat([angle_c.sin(), angle_c.cos(), angle_r.sin(), angle_r.cos()], dim=1)  # (HW, C)
    table = torch.cat([table.new_zeros(extra_tokens, dim), table])  # (N, C)
    return table[None]


class FixedPositionEmbedding(nn.Module):
    """Adds a constant table, kept as a non-persistent buffer (not in the state dict, recomputed on build)."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.register_buffer("pos_embed", table, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pos_embed
