"""Explicit layout changes: ``to_tokens``, ``to_map`` and ``flatten``.

``to_tokens`` and ``to_map`` are what the graph stage inserts by itself where a tokens
block follows a map block or the reverse; writing them is only needed for clarity.
``flatten`` turns a ``(B, C, H, W)`` map into a ``(B, C·H·W)`` vector, as in LeNet.
"""

from __future__ import annotations

import torch
from torch import nn

from archforge.plugin import Block, BlockArgs, MapToTokens, Shape, ShapeError, TokensToMap


class ToTokens(Block):
    """``(B, C, H, W)`` → ``(B, H·W, C)``, row-major; the grid is remembered."""

    name = "to_tokens"
    layout = "map"
    family = "layout"

    def infer(self, x: Shape, args: BlockArgs) -> Shape:
        return Shape.tokens(x.channels, x.grid)  # type: ignore[arg-type]

    def build(self, x: Shape, args: BlockArgs, *, device=None, dtype=None) -> nn.Module:
        return MapToTokens()


class ToMap(Block):
    """``(B, H·W, C)`` → ``(B, C, H, W)``; refuses tokens that carry a class token."""

    name = "to_map"
    layout = "tokens"
    family = "layout"

    def infer(self, x: Shape, args: BlockArgs) -> Shape:
        if x.extra_tokens:
            raise ShapeError(f"{x.extra_tokens} extra (class) token(s) cannot be laid out on a grid")
        return Shape.map(x.channels, x.height, x.width)

    def build(self, x: Shape, args: BlockArgs, *, device=None, dtype=None) -> nn.Module:
        return TokensToMap(x.height, x.width)


class Flatten(Block):
    """``(B, C, H, W)`` → ``(B, C·H·W)`` (or tokens ``(B, N, C)`` → ``(B, N·C)``)."""

    name = "flatten"
    layout = ("map", "tokens", "vector")
    family = "layout"

    def infer(self, x: Shape, args: BlockArgs) -> Shape:
        size = 1
        for d in x.dims():
            size *= d
        return Shape.vector(size)

    def build(self, x: Shape, args: BlockArgs, *, device=None, dtype=None) -> nn.Module:
        return FlattenModule()


class FlattenModule(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)
