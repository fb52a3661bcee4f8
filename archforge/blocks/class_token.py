"""``class_token``: prepend a learned token that gathers the sequence for classification.

BERT's ``[CLS]`` (Devlin et al. 2019) as used by ViT (Dosovitskiy et al. 2021): for
tokens ``x`` of shape ``(B, N, C)``::

    y = concat([t, x_1, …, x_N])        t: (1, 1, C), the same for every sample

giving ``N + 1`` tokens with one more extra token in front of the grid. ``build`` draws
the token from ``N(0, 1e−6²)`` (timm's ViT); the reference initialisation draws it from
``N(0, std²)`` truncated at ±2 (timm's ``trunc_normal_``): ``std: 1e-6`` (the default) as
ViT and DeiT (a plain normal there, the same distribution), ``std: 0.02`` as ConViT. The
token is the node's own parameter (a :class:`ParameterNode`): a node ``cls_token`` holds
the parameter ``cls_token``, as in timm.
"""

from __future__ import annotations

from pydantic import Field
import torch
from torch import nn

from archforge.plugin import Block, BlockArgs, ParameterNode, Shape


class ClassToken(Block):
    """Tokens ``N → N + 1``, ``extra_tokens → extra_tokens + 1``."""

    name = "class_token"
    layout = "tokens"
    family = "positional"

    class Args(BlockArgs):
        std: float = Field(1e-6, gt=0, description="Std of the reference init (init: reference): 1e-6 as in ViT/DeiT, "
                                                   "0.02 as in ConViT; build (init: pytorch) always draws 1e-6.")

    def infer(self, x: Shape, args: Args) -> Shape:
        return x.replace(extra_tokens=x.extra_tokens + 1)

    def build(self, x: Shape, args: Args, *, device=None, dtype=None) -> nn.Module:
        return PrependClassToken(x.channels, device=device, dtype=dtype)

    def init_weights(self, module: "PrependClassToken", x: Shape, args: Args) -> None:
        nn.init.trunc_normal_(module.tensor, std=args.std)  # ConViT: trunc_normal_(cls_token, std=.02)


class PrependClassToken(ParameterNode):
    def __init__(self, dim: int, *, device=None, dtype=None):
        super().__init__(torch.empty(1, 1, dim, device=device, dtype=dtype))
        nn.init.normal_(self.tensor, std=1e-6)

    @staticmethod
    def apply(x: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        return torch.cat([token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)  # (B, 1 + N, C)
