"""``patch_embed``: split an image into non-overlapping patches and embed each one (ViT).

Dosovitskiy et al. 2021: an ``(B, C, H, W)`` image is cut into ``P × P`` patches and
each is mapped linearly to ``dim`` channels; a ``P×P``/stride-``P`` convolution does
exactly that. The result is ``(B, (H/P)·(W/P), dim)`` tokens on an ``H/P × W/P`` grid.
"""

from __future__ import annotations

from pydantic import Field
import torch
from torch import nn

from archforge.plugin import Block, BlockArgs, Shape, ShapeError


class PatchEmbed(Block):
    """Patchify + linear embedding; the patch size must divide the image size."""

    name = "patch_embed"
    layout = "map"
    family = "conv"

    class Args(BlockArgs):
        patch: int = Field(16, gt=0)
        dim: int = Field(gt=0)

    def infer(self, x: Shape, args: Args) -> Shape:
        if x.height % args.patch or x.width % args.patch:
            raise ShapeError(f"patch size {args.patch} does not divide the {x.height}×{x.width} input")
        return Shape.tokens(args.dim, (x.height // args.patch, x.width // args.patch))

    def build(self, x: Shape, args: Args, *, device=None, dtype=None) -> nn.Module:
        return PatchEmbedding(x.channels, args.dim, args.patch, device=device, dtype=dtype)


class PatchEmbedding(nn.Module):
    def __init__(self, in_channels: int, dim: int, patch: int, *, device=None, dtype=None):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch, stride=patch, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, H/P * W/P, dim)
