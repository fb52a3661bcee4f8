"""``act``: an elementwise activation function, in any layout."""

from __future__ import annotations

from torch import nn

from archforge.blocks._activations import ActivationName, make_activation
from archforge.plugin import Block, BlockArgs, Shape


class Activation(Block):
    """``y = f(x)`` elementwise, e.g. ReLU (Nair & Hinton 2010) or GELU (Hendrycks & Gimpel 2016)."""

    name = "act"
    layout = "any"
    family = "activation"

    class Args(BlockArgs):
        fn: ActivationName = "relu"

    def infer(self, x: Shape, args: Args) -> Shape:
        return x

    def build(self, x: Shape, args: Args, *, device=None, dtype=None) -> nn.Module:
        return make_activation(args.fn)
