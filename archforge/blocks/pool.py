"""Pooling: ``pool`` (windowed max/average over a feature map) and ``global_pool`` (to one vector).

Window pooling gives ``floor((H + 2p − k) / s) + 1`` outputs per axis. Global pooling
averages (or takes the max) over all positions of a map, or over the grid tokens of a
sequence; ``mode: token`` instead takes the first extra token, the class token of ViT
(Dosovitskiy et al. 2021).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
import torch
from torch import nn

from archforge.plugin import Block, BlockArgs, Shape, ShapeError


class Pool(Block):
    """Max or average pooling over ``kernel × kernel`` windows."""

    name = "pool"
    layout = "map"
    family = "pool"

    class Args(BlockArgs):
        mode: Literal["max", "avg"] = "max"
        kernel: int = Field(2, gt=0)
        stride: int | None = Field(None, gt=0, description="Default: the kernel size.")
        padding: int = Field(0, ge=0)

    def infer(self, x: Shape, args: Args) -> Shape:
        stride = args.stride or args.kernel
        if args.padding * 2 > args.kernel:
            raise ShapeError(f"padding {args.padding} must be at most half of kernel {args.kernel}")
        height, width = ((s + 2 * args.padding - args.kernel) // stride + 1 for s in (x.height, x.width))
        if height < 1 or width < 1:
            raise ShapeError(f"pool kernel {args.kernel} does not fit a {x.height}×{x.width} input")
        return x.replace(grid=(height, width))

    def build(self, x: Shape, args: Args, *, device=None, dtype=None) -> nn.Module:
        stride = args.stride or args.kernel
        if args.mode == "max":
            return nn.MaxPool2d(args.kernel, stride, args.padding)
        return nn.AvgPool2d(args.kernel, stride, args.padding, count_include_pad=False)


class GlobalPool(Block):
    """``(B, C, H, W)`` or ``(B, N, C)`` → ``(B, C)``."""

    name = "global_pool"
    layout = ("map", "tokens", "vector")
    family = "pool"

    class Args(BlockArgs):
        mode: Literal["avg", "max", "token"] = "avg"

    def infer(self, x: Shape, args: Args) -> Shape:
        if args.mode == "token" and (x.layout != "tokens" or x.extra_tokens < 1):
            raise ShapeError("mode 'token' takes the class token, but the input has none (add a 'class_token' block before)")
        return Shape.vector(x.channels)

    def build(self, x: Shape, args: Args, *, device=None, dtype=None) -> nn.Module:
        return GlobalPoolModule(x.layout, args.mode, x.extra_tokens)


class GlobalPoolModule(nn.Module):
    def __init__(self, layout: str, mode: str, extra_tokens: int = 0):
        super().__init__()
        self.layout, self.mode, self.extra_tokens = layout, mode, extra_tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout == "vector":
            return x
        if self.layout == "map":  # (B, C, H, W)
            return x.mean(dim=(2, 3)) if self.mode == "avg" else x.amax(dim=(2, 3))
        if self.mode == "token":  # (B, N, C): the first extra token is the class token
            return x[:, 0]
        grid = x[:, self.extra_tokens:]
        return grid.mean(dim=1) if self.mode == "avg" else grid.amax(dim=1)

    def extra_repr(self) -> str:
        return f"layout={self.layout}, mode={self.mode}"
