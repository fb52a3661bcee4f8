"""``drop_path``: stochastic depth (Huang et al. 2016), per sample.

During training each sample of the batch is kept with probability ``q = 1 − p`` and
zeroed otherwise, as a whole::

    y_b = x_b · m_b / q        m_b ~ Bernoulli(q), one draw per sample b

so ``E[y] = x``. Placed on a residual branch before the ``add``, it drops the whole
branch for that sample (the "drop path" of timm's ViT/DeiT/Swin). Identity at eval
time and when ``p = 0``.
"""

from __future__ import annotations

from pydantic import Field
import torch
from torch import nn

from archforge.plugin import Block, BlockArgs, Shape


class DropPath(Block):
    """Zero whole samples with probability ``p`` in training and rescale the rest by ``1/(1−p)``."""

    name = "drop_path"
    layout = "any"
    family = "other"

    class Args(BlockArgs):
        p: float = Field(0.1, ge=0, lt=1, description="Probability of dropping a sample's path.")

    def infer(self, x: Shape, args: Args) -> Shape:
        return x

    def build(self, x: Shape, args: Args, *, device=None, dtype=None) -> nn.Module:
        return StochasticDepth(args.p)


class StochasticDepth(nn.Module):
    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)  # (B, 1, ...)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"
