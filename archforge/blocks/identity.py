"""``identity``: a no-op, e.g. the "skip this layer" option of a search space."""

from __future__ import annotations

from torch import nn

from archforge.plugin import Block, BlockArgs, Shape


class Identity(Block):
    """``y = x``."""

    name = "identity"
    layout = "any"
    family = "other"

    def infer(self, x: Shape, args: BlockArgs) -> Shape:
        return x

    def build(self, x: Shape, args: BlockArgs, *, device=None, dtype=None) -> nn.Module:
        return nn.Identity()
