"""``classifier``: the head of an image classifier, pooling + dropout + linear → class logits."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
import torch
from torch import nn

from archforge.blocks._init import transformer_linear_
from archforge.blocks.pool import GlobalPoolModule
from archforge.plugin import Block, BlockArgs, Shape, ShapeError


class Classifier(Block):
    """``logits = W · pool(x) + b``; ``pool: token`` uses the class token (ViT, DeiT, ConViT)."""

    name = "classifier"
    layout = ("map", "tokens", "vector")
    family = "head"

    class Args(BlockArgs):
        classes: int = Field(gt=0)
        pool: Literal["avg", "max", "token"] = "avg"
        dropout: float = Field(0.0, ge=0, lt=1)
        std: float = Field(0.02, gt=0, description="Std of the reference init's (truncated) normal weight, bias 0: 0.02 as "
                                                   "timm's ViT/DeiT/ConViT, 0.01 as byobnet (BoTNet); init: pytorch ignores it.")

    def infer(self, x: Shape, args: Args) -> Shape:
        if args.pool == "token" and (x.layout != "tokens" or x.extra_tokens < 1):
            raise ShapeError("pool 'token' takes the class token, but the input has none (add a 'class_token' block before)")
        return Shape.vector(args.classes)

    def build(self, x: Shape, args: Args, *, device=None, dtype=None) -> nn.Module:
        return ClassifierHead(x.layout, args.pool, x.extra_tokens, x.channels, args.classes, args.dropout, device=device, dtype=dtype)

    def init_weights(self, module: "ClassifierHead", x: Shape, args: Args) -> None:
        # the head of timm's ViT/DeiT/ConViT (byobnet's normal(0, .01) is the same at std 0.01: ±2 is 200 σ away);
        # a ResNet's head keeps torch's default (its spec writes `init: pytorch`)
        transformer_linear_(module.fc, args.std)


class ClassifierHead(nn.Module):
    def __init__(self, layout: str, pool: str, extra_tokens: int, channels: int, classes: int, dropout: float, *, device=None, dtype=None):
        super().__init__()
        self.pool = GlobalPoolModule(layout, pool, extra_tokens)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.fc = nn.Linear(channels, classes, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x)  # (B, C)
        if self.dropout is not None:
            x = self.dropout(x)
        return self.fc(x)
