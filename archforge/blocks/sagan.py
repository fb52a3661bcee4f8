"""``sagan_attention``: the self-attention layer of SAGAN (Zhang, Goodfellow, Metaxas & Odena 2019).

For a feature map ``x`` with ``N = H·W`` positions ``x_1 … x_N ∈ ℝ^C``::

    s_ij = f(x_i)ᵀ g(x_j)                          f, g: 1×1 convs C → C/8
    β_ji = exp(s_ij) / Σ_i exp(s_ij)               softmax over the positions i
    o_j  = v( Σ_i β_ji h(x_i) )                    h: C → C/2, v: C/2 → C
    y_j  = γ · o_j + x_j                           γ learnable, initialised to 0

so the block is the identity at initialisation and learns how much non-local
evidence to mix in. The logits are not scaled by ``1/√d`` (the paper's formula).

Widths. The paper sets ``C̄ = C/8`` for ``f, g`` and ``h``; the authors' released code
(and BigGAN's ``Attention``, Brock et al. 2019) uses ``C/8`` for ``f, g`` but ``C/2``
for ``h``, followed by ``v: C/2 → C``. We follow the code: ``reduction: 8`` and
``value_reduction: 2``; ``value_reduction: 8`` gives the paper's widths. As in both,
the 1×1 convolutions have no bias, so there are ``C²·(2/r + 2/r_v) + 1`` parameters
(spectral normalisation, used in SAGAN's training, is a training-time
reparametrisation and not part of the layer). ``pool: true`` max-pools the keys
``f(x)`` and values ``h(x)`` 2×2 as the released code does, so each query attends to
``N/4`` positions.

The softmax-weighted sum is one ``scaled_dot_product_attention`` call with queries
``g(x)``, keys ``f(x)``, values ``h(x)`` and scale 1.
"""

from __future__ import annotations

from pydantic import Field
import torch
from torch import nn
from torch.nn import functional as F

from archforge.blocks._init import cnn_
from archforge.plugin import Block, BlockArgs, Shape, ShapeError


class SaganAttention(Block):
    """``y = γ · v(softmax(g(x) f(x)ᵀ) h(x)) + x`` over all positions of a feature map."""

    name = "sagan_attention"
    layout = "map"
    family = "attention"

    class Args(BlockArgs):
        reduction: int = Field(8, gt=0, description="f and g map C to C / reduction channels.")
        value_reduction: int = Field(2, gt=0, description="h maps C to C / value_reduction channels (released code: 2; paper: 8).")
        pool: bool = Field(False, description="Max-pool keys and values 2×2 (released code); needs an even grid.")

    def infer(self, x: Shape, args: Args) -> Shape:
        for what, r in (("reduction", args.reduction), ("value_reduction", args.value_reduction)):
            if x.channels % r:
                raise ShapeError(f"{what} {r} does not divide the {x.channels} input channels")
        if args.pool and (x.height % 2 or x.width % 2):
            raise ShapeError(f"pool halves the keys' grid, which needs an even grid, not {x.height}×{x.width}")
        return x

    def build(self, x: Shape, args: Args, *, device=None, dtype=None) -> nn.Module:
        return SelfAttention2d(x.channels, x.channels // args.reduction, x.channels // args.value_reduction, args.pool,
                               device=device, dtype=dtype)

    def init_weights(self, module: "SelfAttention2d", x: Shape, args: Args) -> None:
        cnn_(module)  # the 1×1 convolutions as the surrounding CNN's (ResNet: kaiming-normal fan-out); γ stays 0


class SelfAttention2d(nn.Module):
    """SAGAN attention; ``f``, ``g``, ``h``, ``v`` are bias-free 1×1 convolutions and ``gamma`` a scalar."""

    def __init__(self, channels: int, key_channels: int, value_channels: int, pool: bool = False, *, device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.f = nn.Conv2d(channels, key_channels, 1, bias=False, **factory)  # keys
        self.g = nn.Conv2d(channels, key_channels, 1, bias=False, **factory)  # queries
        self.h = nn.Conv2d(channels, value_channels, 1, bias=False, **factory)  # values
        self.v = nn.Conv2d(value_channels, channels, 1, bias=False, **factory)  # output
        self.gamma = nn.Parameter(torch.zeros((), **factory))
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        q = self.g(x).flatten(2).transpose(1, 2)  # (B, N, C/8)
        k, v = self.f(x), self.h(x)  # (B, C/8, H, W), (B, C/2, H, W)
        if self.pool:
            k, v = F.max_pool2d(k, 2), F.max_pool2d(v, 2)  # (B, ·, H/2, W/2)
        k = k.flatten(2).transpose(1, 2)  # (B, M, C/8)
        v = v.flatten(2).transpose(1, 2)  # (B, M, C/2)
        o = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None], scale=1.0)[:, 0]  # (B, N, C/2)
        o = o.transpose(1, 2).unflatten(2, (height, width))  # (B, C/2, H, W)
        return x + self.gamma * self.v(o)

    def extra_repr(self) -> str:
        return f"pool={self.pool}"
