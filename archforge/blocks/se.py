"""``se``: squeeze-and-excitation, a learned per-channel gate (Hu et al. 2018, SENet).

For a feature map ``x`` of shape ``(B, C, H, W)`` with ``r`` reduced channels::

    s = mean_{h,w} x                       (squeeze: one value per channel)
    e = σ(W₂ · relu(W₁ s + b₁) + b₂)       W₁: (r, C), W₂: (C, r)
    y = e ⊙ x                              (excite: rescale each channel)

``r = max(divisor, ⌊C · ratio / divisor + ½⌋ · divisor)``: with the default
``divisor: 1`` that is ``C · ratio`` rounded (``C / 16`` in the paper); timm's
``SEModule`` uses ``divisor: 8``. ``reduced`` sets ``r`` directly. The two fully
connected layers are 1×1 convolutions with bias, named ``fc1``/``fc2`` as in timm, so
the block has ``2·C·r + r + C`` parameters.
"""

from __future__ import annotations

from pydantic import Field
import torch
from torch import nn

from archforge.blocks._init import cnn_
from archforge.plugin import Block, BlockArgs, Shape


def se_channels(channels: int, ratio: float, divisor: int = 1) -> int:
    """The reduced width ``r`` of an SE gate on ``channels`` (timm's ``make_divisible`` with no round-up)."""
    return max(divisor, int(channels * ratio + divisor / 2) // divisor * divisor)


class SqueezeExcitation(Block):
    """Channel gate ``x · σ(W₂ relu(W₁ avgpool(x)))``."""

    name = "se"
    layout = "map"
    family = "attention"

    class Args(BlockArgs):
        ratio: float = Field(1 / 16, gt=0, le=1, description="Reduced channels as a fraction of the input channels.")
        reduced: int | None = Field(None, gt=0, description="Reduced channels, overriding ratio.")
        divisor: int = Field(1, gt=0, description="Round the reduced channels to a multiple of this (timm: 8).")

    def infer(self, x: Shape, args: Args) -> Shape:
        return x

    def build(self, x: Shape, args: Args, *, device=None, dtype=None) -> nn.Module:
        reduced = args.reduced or se_channels(x.channels, args.ratio, args.divisor)
        return SqueezeExcite(x.channels, reduced, device=device, dtype=dtype)

    def init_weights(self, module: "SqueezeExcite", x: Shape, args: Args) -> None:
        cnn_(module)  # timm's SE-ResNets: the gate's 1×1 convolutions drawn as every other convolution


class SqueezeExcite(nn.Module):
    """``x * sigmoid(fc2(relu(fc1(mean(x)))))``; parameters ``fc1.*``, ``fc2.*`` as in timm."""

    def __init__(self, channels: int, reduced: int, *, device=None, dtype=None):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, reduced, 1, device=device, dtype=dtype)
        self.act = nn.ReLU()
        self.fc2 = nn.Conv2d(reduced, channels, 1, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        gate = self.fc2(self.act(self.fc1(s))).sigmoid()  # (B, C, 1, 1)
        return x * gate
