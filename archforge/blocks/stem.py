"""``stem``: the first layers of a CNN, which cut the resolution before the stages.

Variants (``C`` is ``channels``, every convolution is bias-free and followed by BN and
the activation unless noted):

* ``resnet`` (He et al. 2016): ``maxpool₃ₓ₃/₂(act(BN(W₇ₓ₇/₂ * x)))``, stride 4;
* ``deep`` (ResNet-C/D, He et al. 2019 "Bag of Tricks"): three 3×3 convolutions of
  widths ``(C/2, C/2, C)``, the first with stride 2, then the max-pool;
* ``tiered`` (Wightman's ResNet-T in timm: resnet26t/50t, botnet26t): the same with
  widths ``(3C/8, C/2, C)``, i.e. 24, 32, 64 for ``C = 64``;
* ``patchify`` (ConvNeXt, Liu et al. 2022): ``LN(W_{P×P}/P * x + b)``, a
  non-overlapping ``P × P`` convolution with bias and a channels-first LayerNorm, no
  activation and no pool.

``widths`` overrides the two inner widths of ``deep``/``tiered``; ``kernel`` is the
first convolution of ``resnet`` (7) and the patch size of ``patchify`` (4). Each
convolution is a :class:`~archforge.blocks.conv.ConvNormAct` named ``conv1``,
``conv2``, ``conv3``, followed by ``pool``. The max-pool (3×3, stride 2, padding 1)
halves ``H`` rounding up, as does each stride-2 3×3 convolution.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

from pydantic import Field, model_validator
import torch
from torch import nn
from torch.nn import functional as F

from archforge.blocks._activations import ActivationName, make_activation
from archforge.blocks._init import cnn_, transformer_linear_
from archforge.blocks.conv import ConvNormAct, conv_output_size
from archforge.plugin import Block, BlockArgs, Shape, ShapeError


class Stem(Block):
    """ResNet 7×7 stem, deep/tiered 3×3 stems, or a ConvNeXt patchify stem."""

    name = "stem"
    layout = "map"
    family = "conv"

    class Args(BlockArgs):
        variant: Literal["resnet", "deep", "tiered", "patchify"] = "resnet"
        channels: int = Field(64, gt=0, description="Output channels.")
        widths: tuple[int, int] | None = Field(None, description="Inner widths of deep/tiered (default C/2, C/2 and 3C/8, C/2).")
        kernel: int | None = Field(None, gt=0, description="resnet: first kernel (7); patchify: patch size (4).")
        pool: bool | None = Field(None, description="3×3/2 max-pool at the end; default: yes except for patchify.")
        norm: Literal["batch", "layer"] | None = Field(None, description="Default: batch, layer for patchify.")
        act: ActivationName = Field("relu", description="After each convolution (patchify has none).")

        @model_validator(mode="after")
        def _consistent(self):
            if self.widths is not None and self.variant not in ("deep", "tiered"):
                raise ValueError("widths applies only to the deep and tiered variants")
            if self.widths is not None and min(self.widths) < 1:
                raise ValueError("widths must be positive")
            if self.kernel is not None and self.variant not in ("resnet", "patchify"):
                raise ValueError("kernel applies only to the resnet and patchify variants")
            return self

    @staticmethod
    def layers_of(args: Args) -> list[tuple[int, int, int]]:
        """``(out_channels, kernel, stride)`` of each convolution."""
        c = args.channels
        if args.variant == "resnet":
            return [(c, args.kernel or 7, 2)]
        if args.variant == "patchify":
            patch = args.kernel or 4
            return [(c, patch, patch)]
        default = (c // 2, c // 2) if args.variant == "deep" else (3 * c // 8, c // 2)
        w1, w2 = args.widths or default
        return [(w1, 3, 2), (w2, 3, 1), (c, 3, 1)]

    @staticmethod
    def pooled(args: Args) -> bool:
        return args.variant != "patchify" if args.pool is None else args.pool

    def infer(self, x: Shape, args: Args) -> Shape:
        layers = self.layers_of(args)
        if min(w for w, _, _ in layers) < 1:
            raise ShapeError(f"{args.variant} stem with {args.channels} channels has an empty inner convolution; set widths")
        height, width = x.height, x.width
        if args.variant == "patchify":
            patch = layers[0][1]
            if height % patch or width % patch:
                raise ShapeError(f"patch size {patch} does not divide the {height}×{width} input")
            height, width = height // patch, width // patch
        else:
            for _, kernel, stride in layers:
                height, width = (conv_output_size(s, kernel, stride, kernel // 2) for s in (height, width))
        if self.pooled(args):
            height, width = (conv_output_size(s, 3, 2, 1) for s in (height, width))
        if height < 1 or width < 1:
            raise ShapeError(f"the {args.variant} stem does not fit a {x.height}×{x.width} input")
        return Shape.map(args.channels, height, width)

    def build(self, x: Shape, args: Args, *, device=None, dtype=None) -> nn.Module:
        factory = {"device": device, "dtype": dtype}
        norm = args.norm or ("layer" if args.variant == "patchify" else "batch")
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        in_channels = x.channels
        for i, (out_channels, kernel, stride) in enumerate(self.layers_of(args), start=1):
            patchify = args.variant == "patchify"
            # ConvNeXt keeps the conv bias in front of its LayerNorm; BN's shift makes a bias redundant
            bias = patchify and norm == "layer"
            conv = nn.Conv2d(in_channels, out_channels, kernel, stride, 0 if patchify else kernel // 2, bias=bias, **factory)
            norm_layer = LayerNorm2d(out_channels, **factory) if norm == "layer" else nn.BatchNorm2d(out_channels, **factory)
            act = None if patchify or args.act == "none" else make_activation(args.act, inplace=True)
            layers[f"conv{i}"] = ConvNormAct(conv, norm_layer, act)
            in_channels = out_channels
        if self.pooled(args):
            layers["pool"] = nn.MaxPool2d(3, 2, 1)
        return nn.Sequential(layers)

    def init_weights(self, module: nn.Sequential, x: Shape, args: Args) -> None:
        if args.variant == "patchify":  # ConvNeXt: convolutions truncated normal 0.02, zero bias
            transformer_linear_(module.conv1.conv)
        else:  # ResNet and its C/D/T stems: kaiming-normal fan-out
            cnn_(module)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a ``(B, C, H, W)`` map, as ConvNeXt's channels-first LayerNorm."""

    def __init__(self, channels: int, eps: float = 1e-6, *, device=None, dtype=None):
        super().__init__(channels, eps=eps, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)  # (B, C, H, W)
