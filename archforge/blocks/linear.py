"""``linear``: an affine map of the channels, ``y = x Wᵀ + b``, per token or per vector."""

from __future__ import annotations

from pydantic import Field
from torch import nn

from archforge.blocks._init import transformer_linear_
from archforge.plugin import Block, BlockArgs, Shape


class Linear(Block):
    """Fully connected layer over the channel dimension (the last one of tokens and vectors).

    A feature map reaching it is converted to tokens first, so on a map it acts as a
    1×1 convolution would, but in the tokens layout. Reference init: timm's transformer
    linear (truncated normal of std ``std``, 0.02, and zero bias); a ResNet's ``fc``, which
    timm and torchvision leave at torch's default, writes ``init: pytorch``.
    """

    name = "linear"
    layout = ("tokens", "vector")
    family = "mlp"

    class Args(BlockArgs):
        features: int = Field(gt=0, description="Output channels.")
        bias: bool = True
        std: float = Field(0.02, gt=0, description="Std of the reference init's truncated normal (timm's transformers: "
                                                   "0.02); init: pytorch ignores it.")

    def infer(self, x: Shape, args: Args) -> Shape:
        return x.replace(channels=args.features)

    def build(self, x: Shape, args: Args, *, device=None, dtype=None) -> nn.Module:
        return nn.Linear(x.channels, args.features, bias=args.bias, device=device, dtype=dtype)

    def init_weights(self, module: nn.Linear, x: Shape, args: Args) -> None:
        transformer_linear_(module, args.std)
