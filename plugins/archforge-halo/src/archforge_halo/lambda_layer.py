"""``lambda_layer``: content and position lambdas instead of attention maps (Bello 2021).

"LambdaNetworks: Modeling Long-Range Interactions Without Attention" (Bello, ICLR 2021)
summarises the context into small linear functions, *lambdas*, and applies them to
each query, never forming an ``n × n`` attention map. For an input of ``n = H·W``
positions, with ``M`` heads, key depth ``k`` and value depth ``v = channels / M``::

    Q = BN(W_Q x)   ∈ ℝ^{n × M·k}     queries, M heads q_p^m ∈ ℝ^k
    K = W_K x       ∈ ℝ^{n × k}       keys, shared by the heads ("multi-query")
    V = BN(W_V x)   ∈ ℝ^{n × v}       values, shared by the heads
    K̄ = softmax over the n positions of each key channel

    λ^c   = K̄ᵀ V                               ∈ ℝ^{k × v}   content lambda (one per image)
    λ^p_p = Σ_{δ ∈ [−⌊r/2⌋, ⌊r/2⌋]²} e_δ v_{p+δ}ᵀ   ∈ ℝ^{k × v}   position lambda (one per position p)
    y_p^m = (λ^c + λ^p_p)ᵀ q_p^m                 ∈ ℝ^v        output of head m at p

The position lambdas use the paper's *lambda convolution*: relative position
embeddings ``e_δ ∈ ℝ^k`` on a local ``r × r`` scope, i.e. a convolution of each value
channel by ``k`` learned ``r × r`` filters, with zeros beyond the border. The output
concatenates the heads: ``channels = M · v``. The intra-depth ``u`` is 1. ``stride: s``
follows with an ``s × s`` average pool (grid ``⌊H/s⌋ × ⌊W/s⌋``).

Parameters: ``qkv.weight`` ``(M·k + k + v, C_in, 1, 1)`` (``qkv.bias`` with
``qkv_bias``), ``norm_q`` and ``norm_v`` batch norms (``2·M·k`` and ``2·v`` affine
parameters, unless ``norm: none``), ``rel_pos`` ``(k, 1, r, r)``: the embeddings ``e_δ``.

Implementation: the lambda convolution runs as one ``conv2d`` over the ``B·v`` value
channels (each a one-channel image) producing ``k`` maps; applying the lambdas is two
``einsum``\\ s. No Python loop runs over positions or heads.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, field_validator
from torch import nn
from torch.nn import functional as F

from archforge.plugin import Block, BlockArgs, Shape, ShapeError


class LambdaLayer(Block):
    """Multi-query lambda layer: a global content lambda plus local ``r × r`` position lambdas (LambdaNetworks)."""

    name = "lambda_layer"
    layout = "map"
    family = "attention"

    class Args(BlockArgs):
        channels: int = Field(gt=0, description="Output channels (heads × value depth v).")
        heads: int = Field(4, gt=0, description="Query heads; must divide channels.")
        key_dim: int = Field(16, gt=0, description="Key/query depth k.")
        kernel: int = Field(9, gt=0, description="Scope r of the position lambdas (odd): an r×r lambda convolution.")
        stride: int = Field(1, gt=0, description="Average-pool stride applied after the layer.")
        norm: Literal["batch", "none"] = Field("batch", description="Batch norm on queries and values, as in the paper.")
        qkv_bias: bool = Field(False, description="Add a bias to the q, k, v projections.")

        @field_validator("kernel")
        @classmethod
        def _odd(cls, kernel: int) -> int:
            if kernel % 2 == 0:
                raise ValueError("kernel must be odd, so that each position is the centre of its scope")
            return kernel

    def infer(self, x: Shape, args: Args) -> Shape:
        if args.channels % args.heads:
            raise ShapeError(f"heads={args.heads} must divide channels={args.channels}")
        if args.stride > min(x.height, x.width):
            raise ShapeError(f"stride {args.stride} does not fit a {x.height}×{x.width} input")
        return Shape.map(args.channels, x.height // args.stride, x.width // args.stride)

    def build(self, x: Shape, args: Args, *, device=None, dtype=None) -> nn.Module:
        return Lambda2d(
            x.channels, args.channels, (x.height, x.width), heads=args.heads, key_dim=args.key_dim, kernel=args.kernel,
            stride=args.stride, norm=args.norm == "batch", qkv_bias=args.qkv_bias, device=device, dtype=dtype,
        )


class Lambda2d(nn.Module):
    """The lambda layer on a fixed ``H × W`` grid; parameters ``qkv.*``, ``norm_q.*``, ``norm_v.*``, ``rel_pos``."""

    def __init__(self, in_channels: int, channels: int, grid: tuple[int, int], *, heads: int = 4, key_dim: int = 16,
                 kernel: int = 9, stride: int = 1, norm: bool = True, qkv_bias: bool = False, device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.grid = (int(grid[0]), int(grid[1]))
        self.channels, self.heads, self.key_dim, self.kernel, self.stride = channels, heads, key_dim, kernel, stride
        self.v_dim = channels // heads
        self.qkv = nn.Conv2d(in_channels, heads * key_dim + key_dim + self.v_dim, 1, bias=qkv_bias, **factory)
        self.norm_q = nn.BatchNorm2d(heads * key_dim, **factory) if norm else nn.Identity()
        self.norm_v = nn.BatchNorm2d(self.v_dim, **factory) if norm else nn.Identity()
        self.rel_pos = nn.Parameter(torch.empty(key_dim, 1, kernel, kernel, **factory))  # e_δ, δ = (row, col) offset
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.qkv.weight, std=self.qkv.weight.shape[1] ** -0.5)  # fan-in
        if self.qkv.bias is not None:
            nn.init.zeros_(self.qkv.bias)
        nn.init.trunc_normal_(self.rel_pos, std=self.key_dim ** -0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        height, width = self.grid
        n, heads, k, v = height * width, self.heads, self.key_dim, self.v_dim

        q, keys, values = self.qkv(x).split([heads * k, k, v], dim=1)
        q = self.norm_q(q).reshape(batch, heads, k, n)  # (B, M, k, n)
        values = self.norm_v(values)  # (B, v, H, W)
        keys = keys.reshape(batch, k, n).softmax(dim=-1)  # (B, k, n): normalised over the positions

        content = torch.einsum("bkn,bvn->bkv", keys, values.reshape(batch, v, n))  # λ^c: (B, k, v)
        # λ^p: every value channel convolved with the k embeddings e_δ; (B·v, 1, H, W) → (B, v, k, n)
        position = F.conv2d(values.reshape(batch * v, 1, height, width), self.rel_pos.to(values.dtype),
                            padding=self.kernel // 2).reshape(batch, v, k, n)

        out = torch.einsum("bmkn,bkv->bmvn", q, content) + torch.einsum("bmkn,bvkn->bmvn", q, position)  # (B, M, v, n)
        out = out.reshape(batch, self.channels, height, width)
        if self.stride > 1:
            out = F.avg_pool2d(out, self.stride)
        return out

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, heads={self.heads}, key_dim={self.key_dim}, kernel={self.kernel}, "
                f"grid={self.grid[0]}x{self.grid[1]}, stride={self.stride}")


__all__ = ["Lambda2d", "LambdaLayer"]
