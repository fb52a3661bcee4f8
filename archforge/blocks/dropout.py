"""``dropout`` (Srivastava et al. 2014): random zeroing as a regulariser."""

from __future__ import annotations

from pydantic import Field
from torch import nn

from archforge.plugin import Block, BlockArgs, Shape


class Dropout(Block):
    """Zero each element with probability ``p`` during training and scale the rest by ``1/(1−p)``."""

    name = "dropout"
    layout = "any"
    family = "other"

    class Args(BlockArgs):
        p: float = Field(0.1, ge=0, lt=1)

    def infer(self, x: Shape, args: Args) -> Shape:
        return x

    def build(self, x: Shape, args: Args, *, device=None, dtype=None) -> nn.Module:
        return nn.Dropout(args.p)
