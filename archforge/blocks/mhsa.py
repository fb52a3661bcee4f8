"""``mhsa``: multi-head self-attention over tokens (Vaswani et al. 2017; ViT, Dosovitskiy et al. 2021).

For tokens ``x`` of shape ``(B, N, C)`` and ``h`` heads of size ``d = C / h``::

    [Q, K, V] = x W_qkv + b_qkv                   W_qkv: (C, 3C), split into h heads each
    head_i    = softmax(Q_i K_iᵀ / √d + R_i) V_i    R_i: (N, N) relative position bias, or 0
    y         = concat(head_1 … head_h) W_proj + b_proj

The parameters are laid out exactly as timm's ``vision_transformer.Attention``
(``qkv`` and ``proj`` linears), so ViT/DeiT parameter counts and weights carry over.

``rel_pos: bias`` adds a learned 2-D relative position bias (Swin, Liu et al. 2021):
a table of ``(2H − 1)(2W − 1) × h`` entries, one per relative offset on the ``H × W``
token grid and head. Extra (class) tokens have no grid position and get zero bias.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
import torch
from torch import nn
import torch.nn.functional as F

from archforge.blocks._init import transformer_linear_
from archforge.blocks._relative_position import relative_position_index
from archforge.plugin import Block, BlockArgs, Shape, ShapeError


class MHSA(Block):
    """Multi-head self-attention, output shape = input shape; attention via ``scaled_dot_product_attention``."""

    name = "mhsa"
    layout = "tokens"
    family = "attention"

    class Args(BlockArgs):
        heads: int = Field(8, gt=0, description="Number of heads; must divide the channels.")
        qkv_bias: bool = Field(True, description="Bias on the q, k, v projection (true in ViT/DeiT).")
        attn_drop: float = Field(0.0, ge=0, lt=1, description="Dropout on the attention weights.")
        proj_drop: float = Field(0.0, ge=0, lt=1, description="Dropout after the output projection.")
        rel_pos: Literal["none", "bias"] = Field("none", description="'bias': learned 2-D relative position bias (Swin).")

    def infer(self, x: Shape, args: Args) -> Shape:
        if x.channels % args.heads:
            raise ShapeError(f"heads={args.heads} must divide the {x.channels} channels")
        return x

    def build(self, x: Shape, args: Args, *, device=None, dtype=None) -> nn.Module:
        grid = x.grid if args.rel_pos == "bias" else None
        return MultiHeadSelfAttention(
            x.channels, args.heads, qkv_bias=args.qkv_bias, attn_drop=args.attn_drop, proj_drop=args.proj_drop,
            grid=grid, extra_tokens=x.extra_tokens, device=device, dtype=dtype,
        )

    def init_weights(self, module: "MultiHeadSelfAttention", x: Shape, args: Args) -> None:
        # timm's ViT: qkv and proj truncated normal 0.02, zero biases; the relative bias table is
        # built truncated normal 0.02 already (Swin's init)
        transformer_linear_(module.qkv)
        transformer_linear_(module.proj)


class MultiHeadSelfAttention(nn.Module):
    """timm-compatible ``qkv`` / ``proj`` attention; ``grid`` switches on the relative position bias."""

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        grid: tuple[int, int] | None = None,
        extra_tokens: int = 0,
        device=None,
        dtype=None,
    ):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.heads = heads
        self.head_dim = dim // heads
        self.attn_drop = attn_drop
        self.extra_tokens = extra_tokens
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias, **factory)
        self.proj = nn.Linear(dim, dim, **factory)
        self.proj_drop = nn.Dropout(proj_drop)
        self.relative_position_bias_table: nn.Parameter | None = None
        if grid is not None:
            height, width = grid
            self.relative_position_bias_table = nn.Parameter(torch.empty((2 * height - 1) * (2 * width - 1), heads, **factory))
            nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
            self.register_buffer("relative_position_index", relative_position_index(height, width, device=device), persistent=False)

    def relative_position_bias(self) -> torch.Tensor:
        """``(h, N, N)`` bias; rows and columns of the extra tokens are zero."""
        assert self.relative_position_bias_table is not None
        bias = self.relative_position_bias_table[self.relative_position_index]  # (HW, HW, h)
        bias = bias.permute(2, 0, 1)  # (h, HW, HW)
        return F.pad(bias, (self.extra_tokens, 0, self.extra_tokens, 0))  # (h, N, N)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, nh, N, hs)
        q, k, v = qkv.unbind(0)  # (B, nh, N, hs) each
        mask = None
        if self.relative_position_bias_table is not None:
            mask = self.relative_position_bias().to(q.dtype)  # (nh, N, N), broadcast over B
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.attn_drop if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, N, C)  # (B, N, C)
        return self.proj_drop(self.proj(y))

    def extra_repr(self) -> str:
        return f"heads={self.heads}, head_dim={self.head_dim}, attn_drop={self.attn_drop}"
