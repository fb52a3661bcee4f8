"""``class_token``: prepend a learned token that gathers the sequence for classification.

BERT's ``[CLS]`` (Devlin et al. 2019) as used by ViT (Dosovitskiy et al. 2021): for
tokens ``x`` of shape ``(B, N, C)``::

    y = concat([t, x_1, …, x_N])        t: (1, 1, C), the same for every sample

giving ``N + 1`` tokens with one more extra token in front of the grid. Initialised
``N(0, 1e−6)`` as in timm's ViT. The token is the node's own parameter (a
:class:`ParameterNode`): a node ``cls_token`` holds the parameter ``cls_token``, as in timm.
"""

from __future__ import annotations

import torch
from torch import nn

from archforge.plugin import Block, BlockArgs, ParameterNode, Shape


class ClassToken(Block):
    """Tokens ``N → N + 1``, ``extra_tokens → extra_tokens + 1``."""

    name = "class_token"
    layout = "tokens"
    family = "positional"

    def infer(self, x: Shape, args: BlockArgs) -> Shape:
        return x.replace(extra_tokens=x.extra_tokens + 1)

    def build(self, x: Shape, args: BlockArgs, *, device=None, dtype=None) -> nn.Module:
        return PrependClassToken(x.channels, device=device, dtype=dtype)


class PrependClassToken(ParameterNode):
    def __init__(self, dim: int, *, device=None, dtype=None):
        super().__init__(torch.empty(1, 1, dim, device=device, dtype=dtype))
        nn.init.normal_(self.tensor, std=1e-6)

    @staticmethod
    def apply(x: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        return torch.cat([token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)  # (B, 1 + N, C)
