"""``mlp``: the position-wise feed-forward network of a Transformer (Vaswani et al. 2017; ViT).

Applied to every token (or to a vector) independently::

    y = drop(fc2(drop(act(fc1(x)))))      fc1: C → hidden,  fc2: hidden → out

with ``act = GELU`` (Hendrycks & Gimpel 2016) as in ViT/DeiT and ``hidden =
int(ratio · C)`` unless given. Submodules are named as in timm's ``Mlp`` (``fc1``,
``fc2``), so parameter counts and weights carry over.
"""

from __future__ import annotations

from pydantic import Field
import torch
from torch import nn

from archforge.blocks._activations import ActivationName, make_activation
from archforge.blocks._init import transformer_linear_
from archforge.plugin import Block, BlockArgs, Shape


class MLP(Block):
    """Linear – activation – dropout – linear – dropout over the channels of each token or vector."""

    name = "mlp"
    layout = ("tokens", "vector")
    family = "mlp"

    class Args(BlockArgs):
        hidden: int | None = Field(None, gt=0, description="Hidden channels; default: int(ratio · input channels).")
        ratio: float = Field(4.0, gt=0, description="Hidden width relative to the input, when hidden is not given.")
        out: int | None = Field(None, gt=0, description="Output channels; default: the input channels.")
        dropout: float = Field(0.0, ge=0, lt=1, description="Dropout after the activation and after fc2.")
        act: ActivationName = "gelu"
        bias: bool = True

    @staticmethod
    def hidden_of(x: Shape, args: Args) -> int:
        return args.hidden or max(1, int(x.channels * args.ratio))

    def infer(self, x: Shape, args: Args) -> Shape:
        return x.replace(channels=args.out or x.channels)

    def build(self, x: Shape, args: Args, *, device=None, dtype=None) -> nn.Module:
        return FeedForward(x.channels, self.hidden_of(x, args), args.out or x.channels, args.act, args.dropout,
                           bias=args.bias, device=device, dtype=dtype)

    def init_weights(self, module: "FeedForward", x: Shape, args: Args) -> None:
        transformer_linear_(module.fc1)  # timm's Mlp inside ViT/ConViT: truncated normal 0.02, zero biases
        transformer_linear_(module.fc2)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, out: int, act: ActivationName = "gelu", dropout: float = 0.0, *,
                 bias: bool = True, device=None, dtype=None):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias, device=device, dtype=dtype)
        self.act = make_activation(act)
        self.drop1 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, out, bias=bias, device=device, dtype=dtype)
        self.drop2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))
