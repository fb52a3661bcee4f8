"""``bottleneck_attn``: BoTNet's multi-head self-attention over a feature map (Srinivas et al. 2021).

Replaces the 3×3 convolution of a ResNet bottleneck. For a map ``x`` of shape
``(B, C, H, W)`` and ``h`` heads, a bias-free 1×1 convolution gives per position
``p = (r, c)`` a query ``q_p`` and key ``k_p`` of ``d_qk`` channels per head and a value
``v_p`` of ``d_v = C_out / h``; the logits add 2-D relative position terms (Bello et
al. 2019, factorised over height and width)::

    logit(p, p') = s · q_p·k_p'  +  q_p·R_h[r' − r + H − 1]  +  q_p·R_w[c' − c + W − 1]
    y_p          = Σ_p' softmax_p'(logit(p, ·)) v_p'

with ``s = 1/√d_qk``, learned ``R_h: (2H − 1, d_qk)`` and ``R_w: (2W − 1, d_qk)``
shared by all heads (``scale_pos_embed`` multiplies the position terms by ``s`` too).
With ``stride: 2`` a 2×2 average pool follows. Parameters and their layout are those
of timm's ``BottleneckAttn`` + ``PosEmbedRel`` (``qkv.weight``, ``pos_embed.height_rel``,
``pos_embed.width_rel``), so BoTNet parameter counts carry over.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
import torch
from torch import nn
import torch.nn.functional as F

from archforge.blocks._relative_position import relative_to_absolute
from archforge.plugin import Block, BlockArgs, Shape, ShapeError


def _make_divisible(value: float, divisor: int = 8) -> int:
    """timm's ``make_divisible``: round to a multiple of ``divisor`` without dropping below 90% of ``value``."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class BottleneckAttn(Block):
    """BoTNet MHSA with relative position logits; map in, map out (``dim_out`` channels, ``H/stride × W/stride``)."""

    name = "bottleneck_attn"
    layout = "map"
    family = "attention"

    class Args(BlockArgs):
        dim_out: int | None = Field(None, gt=0, description="Output channels (the value width); default: input channels.")
        heads: int = Field(4, gt=0, description="Number of heads; must divide dim_out.")
        dim_head: int | None = Field(None, gt=0, description="q/k channels per head; default: make_divisible(dim_out·qk_ratio, 8) / heads.")
        qk_ratio: float = Field(1.0, gt=0, description="q/k width relative to dim_out when dim_head is not set.")
        qkv_bias: bool = Field(False, description="Bias on the 1×1 qkv convolution (none in BoTNet).")
        scale_pos_embed: bool = Field(False, description="Scale the position logits by 1/√d_qk as well.")
        stride: Literal[1, 2] = Field(1, description="2: a 2×2 average pool after the attention.")

    @staticmethod
    def dims(x: Shape, args: Args) -> tuple[int, int, int]:
        """``(dim_out, d_qk, d_v)``: output channels and per-head q/k and v widths."""
        dim_out = args.dim_out or x.channels
        dim_head_qk = args.dim_head or _make_divisible(dim_out * args.qk_ratio) // args.heads
        return dim_out, dim_head_qk, dim_out // args.heads

    def infer(self, x: Shape, args: Args) -> Shape:
        dim_out, dim_head_qk, _ = self.dims(x, args)
        if dim_out % args.heads:
            raise ShapeError(f"heads={args.heads} must divide dim_out={dim_out}")
        if dim_head_qk < 1:
            raise ShapeError(f"q/k width per head is 0 for dim_out={dim_out}, qk_ratio={args.qk_ratio}, heads={args.heads}")
        if x.height < args.stride or x.width < args.stride:
            raise ShapeError(f"stride {args.stride} does not fit a {x.height}×{x.width} input")
        return Shape.map(dim_out, x.height // args.stride, x.width // args.stride)

    def build(self, x: Shape, args: Args, *, device=None, dtype=None) -> nn.Module:
        dim_out, dim_head_qk, dim_head_v = self.dims(x, args)
        return BottleneckAttention(
            x.channels, (x.height, x.width), args.heads, dim_head_qk, dim_head_v, qkv_bias=args.qkv_bias,
            scale_pos_embed=args.scale_pos_embed, stride=args.stride, device=device, dtype=dtype,
        )

    def init_weights(self, module: "BottleneckAttention", x: Shape, args: Args) -> None:
        # timm's byobnet: the Conv2d rule zeroes the qkv bias, then SelfAttnBlock.init_weights calls
        # reset_parameters(), which redraws the weight and the relative tables as build drew them
        if module.qkv.bias is not None:
            nn.init.zeros_(module.qkv.bias)


class RelativePositionLogits(nn.Module):
    """``q → (B·h, HW, HW)`` logits ``q_p·R_h[r' − r + H − 1] + q_p·R_w[c' − c + W − 1]`` (timm's ``PosEmbedRel``)."""

    def __init__(self, grid: tuple[int, int], dim_head: int, std: float, *, device=None, dtype=None):
        super().__init__()
        self.height, self.width = grid
        self.height_rel = nn.Parameter(torch.empty(2 * self.height - 1, dim_head, device=device, dtype=dtype))
        self.width_rel = nn.Parameter(torch.empty(2 * self.width - 1, dim_head, device=device, dtype=dtype))
        nn.init.trunc_normal_(self.height_rel, std=std)
        nn.init.trunc_normal_(self.width_rel, std=std)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        Bh, HW, d = q.shape
        H, W = self.height, self.width
        q = q.reshape(Bh, H, W, d)
        # Height and width terms are computed against every offset of their own axis and
        # broadcast over the other axis: H·(2W−1) + W·(2H−1) dot products per query, not HW.
        logits_w = relative_to_absolute(q @ self.width_rel.transpose(0, 1))  # (Bh, H, W, W): [r, c, c']
        logits_h = relative_to_absolute(q.transpose(1, 2) @ self.height_rel.transpose(0, 1))  # (Bh, W, H, H): [c, r, r']
        logits = logits_w[:, :, :, None, :] + logits_h.permute(0, 2, 1, 3)[:, :, :, :, None]  # (Bh, H, W, H, W)
        return logits.reshape(Bh, HW, HW)


class BottleneckAttention(nn.Module):
    def __init__(
        self,
        dim: int,
        grid: tuple[int, int],
        heads: int,
        dim_head_qk: int,
        dim_head_v: int,
        *,
        qkv_bias: bool = False,
        scale_pos_embed: bool = False,
        stride: int = 1,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.heads = heads
        self.dim_head_qk = dim_head_qk
        self.dim_head_v = dim_head_v
        self.scale = dim_head_qk ** -0.5
        self.scale_pos_embed = scale_pos_embed
        self.qkv = nn.Conv2d(dim, heads * (2 * dim_head_qk + dim_head_v), 1, bias=qkv_bias, device=device, dtype=dtype)
        nn.init.trunc_normal_(self.qkv.weight, std=dim ** -0.5)  # fan-in, as timm
        self.pos_embed = RelativePositionLogits(grid, dim_head_qk, self.scale, device=device, dtype=dtype)
        self.pool = nn.AvgPool2d(2, 2) if stride == 2 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        nh, dqk, dv = self.heads, self.dim_head_qk, self.dim_head_v
        q, k, v = self.qkv(x).split([nh * dqk, nh * dqk, nh * dv], dim=1)  # (B, nh*d, H, W) each
        # Channels are head-major within each of q, k, v (timm's order), hence view as (B, nh, d, HW).
        q = q.reshape(B, nh, dqk, H * W).transpose(-1, -2)  # (B, nh, HW, dqk)
        k = k.reshape(B, nh, dqk, H * W).transpose(-1, -2)  # (B, nh, HW, dqk)
        v = v.reshape(B, nh, dv, H * W).transpose(-1, -2)  # (B, nh, HW, dv)
        pos = self.pos_embed(q.reshape(B * nh, H * W, dqk)).reshape(B, nh, H * W, H * W)  # (B, nh, HW, HW)
        if self.scale_pos_embed:
            pos = pos * self.scale
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=pos.to(q.dtype), scale=self.scale)  # (B, nh, HW, dv)
        y = y.transpose(-1, -2).reshape(B, nh * dv, H, W)  # (B, dim_out, H, W)
        return self.pool(y)

    def extra_repr(self) -> str:
        return f"heads={self.heads}, dim_head_qk={self.dim_head_qk}, dim_head_v={self.dim_head_v}"
