"""``conv``: a 2-D convolution followed by an optional normalisation and activation.

The workhorse of CNNs (LeCun et al. 1989; the conv-BN-ReLU unit of Ioffe & Szegedy
2015). For input ``x`` of shape ``(B, C_in, H, W)``::

    y = act(norm(W * x + b))        W: (C_out, C_in / groups, k, k)

with output size ``floor((H + 2p - d(k - 1) - 1) / s) + 1``. ``padding: same``
pads ``d(k - 1) / 2`` so that a stride-1 convolution keeps ``H × W`` (and a stride-s
one gives ``ceil(H / s)`` for odd kernels). The bias is dropped by default when a
normalisation follows, since the norm's shift makes it redundant. Without a norm and an
activation the module is the ``nn.Conv2d`` itself, so a node ``conv1`` holds ``conv1.weight``
as in torchvision.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
import torch
from torch import nn

from archforge.blocks._activations import ActivationName, make_activation
from archforge.blocks._init import cnn_
from archforge.plugin import Block, BlockArgs, Shape, ShapeError


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


class Conv(Block):
    """Convolution + norm + activation; ``groups: depthwise`` gives a depthwise convolution."""

    name = "conv"
    layout = "map"
    family = "conv"

    class Args(BlockArgs):
        channels: int = Field(gt=0, description="Output channels.")
        kernel: int = Field(3, gt=0)
        stride: int = Field(1, gt=0)
        padding: int | Literal["same"] = "same"
        dilation: int = Field(1, gt=0)
        groups: int | Literal["depthwise"] = 1
        bias: bool | None = Field(None, description="Default: true only without a norm.")
        norm: Literal["batch", "group", "none"] = "batch"
        act: ActivationName = "relu"
        zero_init: bool = Field(False, description="Under init: reference, the norm's γ starts at 0: the last conv + BN "
                                                   "of a residual branch, as timm's zero_init_last (init: pytorch ignores it).")

        @model_validator(mode="after")
        def _padding(self):
            if isinstance(self.padding, int) and self.padding < 0:
                raise ValueError("padding must be >= 0 or 'same'")
            if isinstance(self.groups, int) and self.groups < 1:
                raise ValueError("groups must be >= 1 or 'depthwise'")
            if self.zero_init and self.norm == "none":
                raise ValueError("zero_init starts the norm's γ at 0, but norm is 'none'")
            return self

    @staticmethod
    def padding_of(args: Args) -> int:
        if args.padding == "same":
            return args.dilation * (args.kernel - 1) // 2
        return args.padding

    @staticmethod
    def groups_of(x: Shape, args: Args) -> int:
        return x.channels if args.groups == "depthwise" else args.groups

    def infer(self, x: Shape, args: Args) -> Shape:
        groups = self.groups_of(x, args)
        if x.channels % groups or args.channels % groups:
            raise ShapeError(f"groups={groups} must divide both input channels ({x.channels}) and output channels ({args.channels})")
        padding = self.padding_of(args)
        height, width = (conv_output_size(s, args.kernel, args.stride, padding, args.dilation) for s in (x.height, x.width))
        if height < 1 or width < 1:
            raise ShapeError(f"kernel {args.kernel} (dilation {args.dilation}, padding {padding}) does not fit a {x.height}×{x.width} input")
        return Shape.map(args.channels, height, width)

    def build(self, x: Shape, args: Args, *, device=None, dtype=None) -> nn.Module:
        factory = {"device": device, "dtype": dtype}
        bias = args.norm == "none" if args.bias is None else args.bias
        conv = nn.Conv2d(x.channels, args.channels, args.kernel, args.stride, self.padding_of(args), args.dilation,
                         self.groups_of(x, args), bias=bias, **factory)
        norm = None
        if args.norm == "batch":
            norm = nn.BatchNorm2d(args.channels, **factory)
        elif args.norm == "group":
            norm = nn.GroupNorm(_group_count(args.channels), args.channels, **factory)
        act = None if args.act == "none" else make_activation(args.act, inplace=True)
        if norm is None and act is None:  # a bare convolution: its parameters are the node's own (torchvision's `conv1.weight`)
            return conv
        return ConvNormAct(conv, norm, act)

    def init_weights(self, module: nn.Module, x: Shape, args: Args) -> None:
        cnn_(module)  # timm's ResNet: kaiming-normal fan-out; the norm keeps γ = 1, β = 0
        if args.zero_init:  # the branch starts at 0, so its residual block starts as the identity
            nn.init.zeros_(module.norm.weight)


def _group_count(channels: int, preferred: int = 32) -> int:
    """The largest divisor of ``channels`` not above ``preferred`` (GroupNorm needs one)."""
    return max(g for g in range(1, min(preferred, channels) + 1) if channels % g == 0)


class ConvNormAct(nn.Module):
    """``act(norm(conv(x)))``; parameters are named ``conv.*`` and ``norm.*``."""

    def __init__(self, conv: nn.Conv2d, norm: nn.Module | None = None, act: nn.Module | None = None):
        super().__init__()
        self.conv = conv
        self.norm = norm
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.act is not None:
            x = self.act(x)
        return x
