"""``bottleneck`` and ``basic_block``: the residual units of ResNet (He et al. 2016).

Both compute ``y = act(F(x) + S(x))``. The shortcut ``S`` is the identity when the
shape is kept, and a projection ``BN(W_s * x)`` (a strided 1×1 convolution) when the
stride is not 1 or the channels change; ``downsample: avg`` is ResNet-D's variant
(He et al. 2019, "Bag of Tricks"), ``BN(W_s * avgpool_s(x))``, which sees every
input position instead of one in ``s²``.

* ``basic_block`` (ResNet-18/34): ``F(x) = BN(W₂ * act(BN(W₁ * x)))`` with two 3×3
  convolutions of ``channels`` outputs, the first one strided.
* ``bottleneck`` (ResNet-50/101/152, v1.5): ``F(x) = BN(W₃ * act(BN(W₂ * act(BN(W₁ * x)))))``
  with ``W₁`` 1×1 to width ``w``, ``W₂`` 3×3 (strided, ``groups`` groups) and ``W₃``
  1×1 to ``channels · expansion``. The stride sits in the 3×3 as in torchvision's
  "v1.5", not in the first 1×1 as in the paper; ``w = ⌊channels · base_width / 64⌋ ·
  groups`` gives ResNeXt (Xie et al. 2017) with ``groups: 32, base_width: 4``.

``se`` inserts a squeeze-excitation gate (Hu et al. 2018) on ``F(x)`` before the sum,
as in SENet and timm. The last BN's γ starts at zero so that each block starts as the
identity (Goyal et al. 2017): under the reference initialisation (timm's ResNet,
``zero_init_last=True``, with every convolution kaiming-normal in fan-out mode) unless
``zero_init: false``, and under ``init: pytorch`` only with ``zero_init: true``.
Submodules are named as in torchvision (``conv1``/``bn1``/…/``downsample``), so the
parameters of a ResNet built from these blocks line up one to one with
``torchvision.models.resnet*``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
import torch
from torch import nn

from archforge.blocks._activations import ActivationName, make_activation
from archforge.blocks._init import cnn_
from archforge.blocks.conv import conv_output_size
from archforge.blocks.se import SqueezeExcite, se_channels
from archforge.plugin import Block, BlockArgs, Shape, ShapeError


class _ResidualArgs(BlockArgs):
    stride: int = Field(1, gt=0, description="Stride of the block (in the 3×3 convolution and the shortcut).")
    se: float | None = Field(None, gt=0, le=1, description="Squeeze-excitation ratio on the residual branch (SENet: 1/16).")
    zero_init: bool | None = Field(
        None, description="Start the last BN's γ at 0, so the block starts as the identity. None (default): as the init "
                          "decides, 0 under init: reference (timm's zero_init_last), 1 under init: pytorch; true/false: always.")
    downsample: Literal["conv", "avg"] = Field("conv", description="Projection: strided 1×1 conv, or avgpool + 1×1 conv (ResNet-D).")
    act: ActivationName = "relu"


def _residual_output(x: Shape, out_channels: int, args: _ResidualArgs) -> Shape:
    height, width = (conv_output_size(s, 3, args.stride, 1) for s in (x.height, x.width))
    if args.downsample == "avg" and args.stride > 1 and min(x.height, x.width) < args.stride:
        raise ShapeError(f"the {args.stride}×{args.stride} average-pool shortcut does not fit a {x.height}×{x.width} input")
    return Shape.map(out_channels, height, width)


class Bottleneck(Block):
    """ResNet v1.5 bottleneck: 1×1 → 3×3 (strided) → 1×1 ×expansion, plus shortcut."""

    name = "bottleneck"
    layout = "map"
    family = "conv"

    class Args(_ResidualArgs):
        channels: int = Field(gt=0, description="Bottleneck width ('planes'); the output has channels × expansion.")
        expansion: int = Field(4, gt=0)
        groups: int = Field(1, gt=0, description="Groups of the 3×3 convolution (ResNeXt cardinality).")
        base_width: int = Field(64, gt=0, description="ResNeXt: the 3×3 has ⌊channels·base_width/64⌋·groups channels.")

    @staticmethod
    def width_of(args: Args) -> int:
        return int(args.channels * (args.base_width / 64.0)) * args.groups

    def infer(self, x: Shape, args: Args) -> Shape:
        if self.width_of(args) < 1:
            raise ShapeError(f"channels {args.channels} with base_width {args.base_width} leaves no 3×3 channels")
        return _residual_output(x, args.channels * args.expansion, args)

    def build(self, x: Shape, args: Args, *, device=None, dtype=None) -> nn.Module:
        return BottleneckResidual(
            x.channels, self.width_of(args), args.channels * args.expansion, args.stride, args.groups, args.se,
            bool(args.zero_init), args.downsample, args.act, device=device, dtype=dtype)

    def init_weights(self, module: "BottleneckResidual", x: Shape, args: Args) -> None:
        cnn_(module)  # timm's ResNet (zero_init_last=True): fan-out convolutions, last BN γ = 0
        if args.zero_init is not False:
            nn.init.zeros_(module.bn3.weight)


class BasicBlock(Block):
    """ResNet basic block: two 3×3 convolutions (the first strided), plus shortcut."""

    name = "basic_block"
    layout = "map"
    family = "conv"

    class Args(_ResidualArgs):
        channels: int = Field(gt=0, description="Output channels (and width of both 3×3 convolutions).")

    def infer(self, x: Shape, args: Args) -> Shape:
        return _residual_output(x, args.channels, args)

    def build(self, x: Shape, args: Args, *, device=None, dtype=None) -> nn.Module:
        return BasicResidual(x.channels, args.channels, args.stride, args.se, bool(args.zero_init), args.downsample, args.act,
                             device=device, dtype=dtype)

    def init_weights(self, module: "BasicResidual", x: Shape, args: Args) -> None:
        cnn_(module)  # timm's ResNet (zero_init_last=True): fan-out convolutions, last BN γ = 0
        if args.zero_init is not False:
            nn.init.zeros_(module.bn2.weight)


def make_shortcut(in_channels: int, out_channels: int, stride: int, mode: str, *, device=None, dtype=None) -> nn.Module | None:
    """``None`` (identity) when the shape is kept; otherwise torchvision's ``Sequential(conv1x1, bn)``,
    or timm's ``Sequential(avgpool, conv1x1, bn)`` for ``mode='avg'``."""
    if stride == 1 and in_channels == out_channels:
        return None
    factory = {"device": device, "dtype": dtype}
    if mode == "avg":
        layers: list[nn.Module] = []
        if stride > 1:
            # kernel = stride with ceil_mode gives ceil(H / s), the size of the strided 3×3 branch
            layers.append(nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False))
        layers += [nn.Conv2d(in_channels, out_channels, 1, bias=False, **factory), nn.BatchNorm2d(out_channels, **factory)]
        return nn.Sequential(*layers)
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False, **factory), nn.BatchNorm2d(out_channels, **factory))


class BottleneckResidual(nn.Module):
    """``act(bn3(conv3(act(bn2(conv2(act(bn1(conv1(x)))))))) + downsample(x))``, names as in torchvision."""

    def __init__(self, in_channels: int, width: int, out_channels: int, stride: int = 1, groups: int = 1,
                 se: float | None = None, zero_init: bool = False, downsample: str = "conv", act: ActivationName = "relu",
                 *, device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False, **factory)
        self.bn1 = nn.BatchNorm2d(width, **factory)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False, **factory)
        self.bn2 = nn.BatchNorm2d(width, **factory)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False, **factory)
        self.bn3 = nn.BatchNorm2d(out_channels, **factory)
        self.se = SqueezeExcite(out_channels, se_channels(out_channels, se), **factory) if se else None
        self.act = make_activation(act, inplace=True)  # applied only to fresh tensors
        self.downsample = make_shortcut(in_channels, out_channels, stride, downsample, **factory)
        if zero_init:
            nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)  # (B, C_out, H/s, W/s)
        out = self.act(self.bn1(self.conv1(x)))  # (B, w, H, W)
        out = self.act(self.bn2(self.conv2(out)))  # (B, w, H/s, W/s)
        out = self.bn3(self.conv3(out))  # (B, C_out, H/s, W/s)
        if self.se is not None:
            out = self.se(out)
        return self.act(out + shortcut)


class BasicResidual(nn.Module):
    """``act(bn2(conv2(act(bn1(conv1(x))))) + downsample(x))``, names as in torchvision."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, se: float | None = None,
                 zero_init: bool = False, downsample: str = "conv", act: ActivationName = "relu", *, device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False, **factory)
        self.bn1 = nn.BatchNorm2d(out_channels, **factory)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False, **factory)
        self.bn2 = nn.BatchNorm2d(out_channels, **factory)
        self.se = SqueezeExcite(out_channels, se_channels(out_channels, se), **factory) if se else None
        self.act = make_activation(act, inplace=True)  # applied only to fresh tensors
        self.downsample = make_shortcut(in_channels, out_channels, stride, downsample, **factory)
        if zero_init:
            nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)  # (B, C_out, H/s, W/s)
        out = self.act(self.bn1(self.conv1(x)))  # (B, C_out, H/s, W/s)
        out = self.bn2(self.conv2(out))
        if self.se is not None:
            out = self.se(out)
        return self.act(out + shortcut)
