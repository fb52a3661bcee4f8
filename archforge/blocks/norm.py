"""Normalisation layers: ``batch_norm`` for feature maps, ``layer_norm`` for tokens and vectors.

* Batch norm (Ioffe & Szegedy 2015): ``y = γ (x − E[x]) / √(Var[x] + ε) + β`` with
  statistics per channel over batch and positions (running averages at eval time).
  ``zero_init`` starts γ at 0 under the reference initialisation, for the last BN of a
  residual branch (Goyal et al. 2017; timm's ``zero_init_last``).
* Layer norm (Ba et al. 2016): the same with statistics per sample and position, over
  the channels only; used before every attention and MLP sub-layer of a Transformer.
"""

from __future__ import annotations

from pydantic import Field
from torch import nn

from archforge.plugin import Block, BlockArgs, Shape


class BatchNorm(Block):
    """``nn.BatchNorm2d`` over the channels of a feature map."""

    name = "batch_norm"
    layout = "map"
    family = "norm"

    class Args(BlockArgs):
        eps: float = Field(1e-5, gt=0)
        momentum: float = Field(0.1, ge=0, le=1)
        zero_init: bool = Field(False, description="Under init: reference, γ starts at 0: the last BN of a residual "
                                                   "branch, as timm's zero_init_last (init: pytorch ignores it).")

    def infer(self, x: Shape, args: Args) -> Shape:
        return x

    def build(self, x: Shape, args: Args, *, device=None, dtype=None) -> nn.Module:
        return nn.BatchNorm2d(x.channels, eps=args.eps, momentum=args.momentum, device=device, dtype=dtype)

    def init_weights(self, module: nn.BatchNorm2d, x: Shape, args: Args) -> None:
        if args.zero_init:  # otherwise torch's γ = 1, β = 0 is every reference's
            nn.init.zeros_(module.weight)


class LayerNorm(Block):
    """``nn.LayerNorm`` over the channels of each token (or of a vector)."""

    name = "layer_norm"
    layout = ("tokens", "vector")
    family = "norm"

    class Args(BlockArgs):
        eps: float = Field(1e-6, gt=0, description="1e-6 as in ViT/DeiT/ConViT.")
        affine: bool = True

    def infer(self, x: Shape, args: Args) -> Shape:
        return x

    def build(self, x: Shape, args: Args, *, device=None, dtype=None) -> nn.Module:
        return nn.LayerNorm(x.channels, eps=args.eps, elementwise_affine=args.affine, device=device, dtype=dtype)
